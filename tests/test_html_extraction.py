"""Reading real news pages: the saved page set's figures, and one small page per known cause."""

from __future__ import annotations

import pytest

from bench.extraction import evaluate, load_pages
from corpus.html import extract_article
from corpus.reader import ArticleError

PARAGRAPH = "这是一段足够长的正文，说明了事情的经过和各方的看法。它有两句话，第二句也不短。"
ARTICLE = "".join(f"<p>第{n}段。{PARAGRAPH}</p>" for n in range(3))


def page(body: str, title: str = "标题", head: str = "") -> str:
    return f"<html><head><title>{title}</title>{head}</head><body>{body}</body></html>"


def paragraphs(body: str) -> list[str]:
    return [block.strip() for block in body.split("\n\n") if block.strip()]


def test_saved_pages_are_read_at_least_as_well_as_measured():
    """Floors from bench/README.md ("Reading real pages"): the best other extractor on each figure, or better."""
    pages = load_pages()
    figures = evaluate(pages, ["ours"])["extractors"]["ours"]["all"]
    assert len(pages) >= 150
    assert figures["body"]["share"] >= 0.975
    assert figures["apart"]["share"] >= 0.975
    assert figures["headings"]["share"] >= 0.97
    assert figures["clean"]["right"] >= 115
    assert figures["title"]["right"] >= 125
    assert figures["date"]["right"] >= 118
    assert figures["rejected"]["right"] == 0


def test_br_separated_paragraphs_and_a_trailer_that_is_not_a_sentence():
    lines = [f"第{n}段：{PARAGRAPH}" for n in range(3)]
    html = page(f"<article><h1>标题</h1><div>{'<br>'.join(lines)}<br>（原题为《另一个标题》）</div></article>")
    body = extract_article(html).body
    assert [p for p in paragraphs(body) if p.startswith("第")] == lines


def test_paragraph_holding_inline_code_keeps_its_text():
    html = page(
        "<article><h1>标题</h1>"
        f"<p>{PARAGRAPH}</p><p>调用 <code>stack.callback(add_ts)</code> 之后，函数结束时总会执行它。这一点很重要。</p>"
        f"<p>{PARAGRAPH}</p></article>"
    )
    body = extract_article(html).body
    assert "调用 stack.callback(add_ts) 之后，函数结束时总会执行它。这一点很重要。" in paragraphs(body)


def test_article_with_a_byline_div_keeps_paragraphs_and_sections():
    html = page(
        "<article><h1>标题</h1><div class='meta'>2021-06-17 09:30 来源：某报 记者 某某</div>"
        f"<p>第一段。{PARAGRAPH}</p><h2>小标题</h2><p>第二段。{PARAGRAPH}</p></article>"
    )
    article = extract_article(html)
    assert paragraphs(article.body) == [f"第一段。{PARAGRAPH}", "## 小标题", f"第二段。{PARAGRAPH}"]
    assert article.date == "2021-06-17"


@pytest.mark.parametrize(
    ("title_tag", "head", "shown", "expected"),
    [
        (
            "法国全国大罢工再次严重影响交通-新华网",
            "",
            "<h1>法国全国大罢工再次严重影响交通</h1>",
            "法国全国大罢工再次严重影响交通",
        ),
        (
            "5月20日起京沪高速封闭！_网易订阅",
            "",
            "<div class='t'>5月20日起京沪高速封闭！</div>",
            "5月20日起京沪高速封闭！",
        ),
        (
            '狂奔的龙湖集团"暗伤"曝露？_网易财经',
            '<meta property="og:title" content="狂奔的龙湖集团">',
            '<h1>狂奔的龙湖集团"暗伤"曝露？</h1>',
            '狂奔的龙湖集团"暗伤"曝露？',
        ),
        (
            "英国美女转行当美人鱼",
            "",
            "<div class='title'>英国美女转行当美人鱼</div>"
            "<div class='latest'><h3>作者最新文章</h3><h2>韩庚将在新西兰大婚</h2></div>",
            "英国美女转行当美人鱼",
        ),
    ],
)
def test_title_is_the_headline_without_site_suffix_or_lists(title_tag, head, shown, expected):
    html = page(f"{shown}<article>{ARTICLE}</article>", title_tag, head)
    assert extract_article(html).title == expected


def test_two_digit_year_in_the_byline():
    html = page(
        f"<div class='h'>休闲裤太帅了</div><div>发布时间：18-03-0823:16</div><article>{ARTICLE}</article>",
        "休闲裤太帅了",
    )
    assert extract_article(html).date == "2018-03-08"


def test_page_furniture_is_left_out():
    furniture = [
        "责任编辑：杨倩_NF4425",
        "更多猛料！欢迎扫描左方二维码关注新浪新闻官方微信",
        "6条评论|106人参与网友评论",
        "版权所有 新浪网 未经授权不得转载",
        "采写：南都见习记者 林子沛",
    ]
    related = "".join(f"<p>热门新闻标题第{n}条</p>" for n in range(4))
    html = page(
        "<article><h1>标题</h1>"
        + "".join(f"<p>第{n}段。{PARAGRAPH}</p>" for n in range(4))
        + "".join(f"<p>{line}</p>" for line in furniture)
        + f"<p>相关新闻</p>{related}</article>"
    )
    body = extract_article(html).body
    assert [p for p in paragraphs(body)] == [f"第{n}段。{PARAGRAPH}" for n in range(4)]


def test_paragraphs_written_as_sections_are_found():
    sections = "".join(f"<section><span>第{n}段。{PARAGRAPH}</span></section>" for n in range(3))
    html = page(f"<div class='nav'><p>微信号 someone</p></div><div id='content'>{sections}</div>")
    body = extract_article(html).body
    assert f"第2段。{PARAGRAPH}" in paragraphs(body)


def test_link_lists_are_still_not_articles():
    links = "".join(f"<li><a href='/a/{n}'>新闻标题{n}</a></li>" for n in range(30))
    with pytest.raises(ArticleError):
        extract_article(page(f"<ul>{links}</ul>"))
