"""Corpus layer: paragraph repair on the real shared article, passage cutting, front matter
and encodings. No index, no model: everything here runs in milliseconds."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from helpers import SOURCE_ARTICLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus import Article, read_article, split_article
from corpus.reader import ArticleError, decode, load_corpus, scan_corpus, split_front_matter
from corpus.splitter import SENTENCE_END
from settings import CorpusConfig

MAX_CHARS = CorpusConfig().max_chars
MIN_CHARS = CorpusConfig().min_chars
HEADING_LINE = re.compile(r"^\s{0,3}#{1,6}[ \t]+\S")


def squash(text: str) -> str:
    """Text without any whitespace: what must survive repair and cutting unchanged."""
    return re.sub(r"\s+", "", text)


def article_from(body: str, name: str = "a.md") -> Article:
    return Article(id=name, path=name, title="t", body=body, content_hash="h")


# ---------------------------------------------------------------- the shared article


@pytest.fixture(scope="module")
def shared() -> tuple[str, list]:
    """(decoded file text, passages) of the verbatim shared article."""
    article = read_article(SOURCE_ARTICLE, SOURCE_ARTICLE.parent)
    raw = SOURCE_ARTICLE.read_bytes().decode("utf-8")
    assert article.body_offset == 0 and article.body == raw  # no front matter in the .txt
    return raw, split_article(article, MAX_CHARS, MIN_CHARS)


def passage_with(passages: list, fragment: str):
    found = [p for p in passages if fragment in p.text]
    assert len(found) == 1, f"{fragment!r} is in {len(found)} passages"
    return found[0]


def test_byline_and_comma_paragraph_are_one_passage_numbered_1(shared):
    _, passages = shared
    first = passages[0]
    assert first.paragraph == 1 and first.ordinal == 0
    assert first.text.startswith("《区块链日报》（杭州，记者徐赐豪）讯，6月9日，继内蒙古、四川之后")
    # No passage starts with the continuation comma or is the bare byline.
    assert not any(p.text.startswith("，") for p in passages)
    assert not any(p.text.endswith("记者徐赐豪）讯") for p in passages)


def test_mid_sentence_breaks_are_joined(shared):
    _, passages = shared
    assert passage_with(passages, "都在筹划出海事宜。”").text.startswith("另外，也有矿工")
    joined = passage_with(passages, "《微博社区公约》的相关规定，现已无法查看。”")
    assert joined.text.startswith("此前的6月5日")
    assert not any(p.text.endswith(("都在", "的")) for p in passages)
    assert not any(p.text.startswith(("筹划出海事宜", "相关规定")) for p in passages)


def test_headings_become_sections_and_are_never_passages(shared):
    raw, passages = shared
    headings = [line.lstrip("#").strip() for line in raw.split("\n") if HEADING_LINE.match(line)]
    assert headings == ["整顿虚拟货币挖矿", "屏蔽交易所", "严查虚拟货币OTC交易"]
    for p in passages:
        assert "#" not in p.text
        assert p.text not in headings
    # Sections follow the file order: no section before the first heading, then each heading
    # for the passages below it.
    runs = [s for i, s in enumerate(p.section for p in passages) if i == 0 or s != passages[i - 1].section]
    assert runs == ["", *headings]
    assert passage_with(passages, "于6月9日14时前全部停产整顿").section == ""
    assert passage_with(passages, "2021年6月9日14时前全部清理整顿").section == "整顿虚拟货币挖矿"
    assert passage_with(passages, "都在筹划出海事宜").section == "整顿虚拟货币挖矿"
    assert passage_with(passages, "现已无法查看").section == "屏蔽交易所"
    assert passage_with(passages, "170余个").section == "严查虚拟货币OTC交易"


def test_paragraph_numbers_are_1_based_reader_counts(shared):
    raw, passages = shared
    # Blank-line blocks that are not headings, minus the three broken places joined above.
    blocks = [b for b in re.split(r"\n\s*\n", raw) if b.strip() and not HEADING_LINE.match(b.strip())]
    assert passages[0].paragraph == 1
    assert max(p.paragraph_end for p in passages) == len(blocks) - 3
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    previous_end = 0
    for p in passages:
        assert p.paragraph_end >= p.paragraph > previous_end  # increasing, no overlap
        previous_end = p.paragraph_end
    # "到海外寻找出路，也成为国内矿工的共识。" is shorter than min_chars: merged with a neighbour.
    tiny = passage_with(passages, "到海外寻找出路，也成为国内矿工的共识。")
    assert tiny.paragraph_end == tiny.paragraph + 1
    assert len(tiny.text) > len("到海外寻找出路，也成为国内矿工的共识。")


def test_offsets_point_into_the_file(shared):
    raw, passages = shared
    for p in passages:
        span = raw[p.start : p.end]
        assert span[0] == p.text[0] and span[-1] == p.text[-1], p
        assert squash(span) == squash(p.text), p
    byline = passages[0]
    assert raw[byline.start :].startswith("《区块链日报》（杭州")
    assert raw[: byline.end].endswith("项目全面关停。")


def test_passages_cover_the_whole_article_once(shared):
    raw, passages = shared
    body = "".join(line for line in raw.split("\n") if not HEADING_LINE.match(line))
    assert "".join(squash(p.text) for p in passages) == squash(body)
    assert all(len(p.text) <= MAX_CHARS for p in passages)


# ---------------------------------------------------------------- synthetic paragraphs


def _long_paragraph(n_chars: int = 3000) -> str:
    sentences, i = [], 0
    while sum(map(len, sentences)) < n_chars:
        sentences.append(f"第{i}句话讲的是" + "虚拟货币挖矿监管" * (1 + i % 7) + ("。" if i % 3 else "！"))
        i += 1
    return "".join(sentences)


def test_long_paragraph_is_windowed_at_sentence_boundaries():
    paragraph = _long_paragraph()
    assert len(paragraph) >= 3000
    intro, outro = (
        "前言一句，足够长的开头段落，交代了整个事件的背景情况。",
        "结尾一句，足够长的收尾段落，总结了全文的主要观点和结论。",
    )
    body = f"{intro}\n\n{paragraph}\n\n{outro}\n"
    passages = split_article(article_from(body), MAX_CHARS, MIN_CHARS)
    windows = [p for p in passages if p.paragraph == 2]
    assert len(windows) >= 3000 // MAX_CHARS
    assert all(len(w.text) <= MAX_CHARS for w in windows)
    assert all(w.text[-1] in SENTENCE_END for w in windows)  # every cut is at a sentence end
    assert "".join(w.text for w in windows) == paragraph
    for w in windows:
        assert body[w.start : w.end] == w.text
        assert w.paragraph_end == 2 and w.section == ""


def test_sentence_free_run_is_hard_split_within_max_chars():
    run = "虚拟货币挖矿监管" * 400  # 3,200 characters, no punctuation at all
    passages = split_article(article_from(run), MAX_CHARS, MIN_CHARS)
    assert len(passages) > 1
    assert all(0 < len(p.text) <= MAX_CHARS for p in passages)
    assert "".join(p.text for p in passages) == run


def test_tiny_fragments_merge_with_a_neighbour_in_their_section():
    long_a = "第一段：国家层面已经对虚拟货币开始了新一轮的监管，并且监管动作覆盖行业上下游。"
    long_b = "第三段：内蒙古、四川、新疆、青海是国内最大的几个比特币算力省份，目前都下发了文件。"
    body = f"{long_a}\n\n短句一。\n\n{long_b}\n\n## 小节\n\n短句二。\n\n{long_a}\n\n尾巴。\n"
    passages = split_article(article_from(body), MAX_CHARS, MIN_CHARS)
    texts = [p.text for p in passages]
    assert texts == [long_a, "短句一。" + long_b, "短句二。" + long_a + "尾巴。"]
    assert [(p.paragraph, p.paragraph_end) for p in passages] == [(1, 1), (2, 3), (4, 6)]
    assert [p.section for p in passages] == ["", "", "小节"]
    # A fragment alone in its section stays (there is nothing in its section to merge with).
    alone = split_article(article_from(f"{long_a}\n\n## 别处\n\n孤零零。\n"), MAX_CHARS, MIN_CHARS)
    assert [(p.text, p.section) for p in alone] == [(long_a, ""), ("孤零零。", "别处")]


def test_latin_lines_of_a_broken_paragraph_join_with_a_space():
    body = "Bitcoin miners in Xinjiang were told\nto stop mining by June 9.\n\nNext paragraph, long enough.\n"
    passages = split_article(article_from(body), MAX_CHARS, 5)
    assert passages[0].text == "Bitcoin miners in Xinjiang were told to stop mining by June 9."
    assert passages[1].paragraph == 2


def test_huge_paragraph_made_of_many_lines_is_cut_quickly():
    """3 MB of one paragraph with a line break every 30 characters (and of blocks that never
    end a sentence) must split in linear time: this used to take ~40 s (quadratic joins)."""
    line = "虚拟货币挖矿行为企业全部停产整顿青海省工信厅要求各市各州全面"
    for body in ("\n".join([line] * 33_000), "\n\n".join([line] * 33_000)):
        passages = split_article(article_from(body), MAX_CHARS, MIN_CHARS)
        assert squash("".join(p.text for p in passages)) == squash(body)
        assert all(len(p.text) <= MAX_CHARS for p in passages)
        for p in passages[:: len(passages) // 50]:
            assert squash(body[p.start : p.end]) == squash(p.text)


_ATOMS = st.sampled_from(
    [
        "虚拟货币",
        "挖矿",
        "监管",
        "。",
        "，",
        "！",
        "“",
        "”",
        "（",
        "）",
        "；",
        " ",
        "　",
        "\n",
        "\n\n",
        "\n\n\n",
        "\n### 小节\n",
        "\n## 另一节\n",
        "Bitcoin",
        "mining.",
        "OTC",
        "6月9日",
        "#tag",
        "\t",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ATOMS, max_size=80).map("".join), st.integers(0, 3), st.sampled_from([(40, 5), (360, 24)]))
def test_splitting_never_loses_or_invents_text(body, prefix, limits):
    """Property: passages hold every non-heading character of the body exactly once, in order,
    each within max_chars, with offsets pointing at their own text in the file."""
    max_chars, min_chars = limits
    file_text = "x" * prefix + body
    article = Article(id="p.md", path="p.md", title="t", body=body, content_hash="h", body_offset=prefix)
    passages = split_article(article, max_chars, min_chars)
    content = "".join(line for line in body.split("\n") if not HEADING_LINE.match(line))
    assert "".join(squash(p.text) for p in passages) == squash(content)
    for p in passages:
        assert p.text and p.text == p.text.strip()
        assert len(p.text) <= max_chars
        assert file_text[p.start] == p.text[0] and file_text[p.end - 1] == p.text[-1]
        assert p.paragraph >= 1 and p.paragraph_end >= p.paragraph


# ---------------------------------------------------------------- front matter and titles


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_front_matter_fields_are_parsed(tmp_path):
    text = (
        "---\n"
        "title: 新疆、青海叫停虚拟货币挖矿\n"
        "source: 区块链日报\n"
        "author: 徐赐豪\n"
        "date: 2021-06-10\n"
        "url: https://example.com/a?id=1\n"
        "lang: zh-CN\n"
        "tags: [ignored]\n"
        "---\n\n"
        "正文第一段，讲述了挖矿被叫停的过程和背景。\n"
    )
    article = read_article(write(tmp_path / "a.md", text), tmp_path)
    assert (article.title, article.source, article.author, article.date, article.url, article.lang) == (
        "新疆、青海叫停虚拟货币挖矿",
        "区块链日报",
        "徐赐豪",
        "2021-06-10",
        "https://example.com/a?id=1",
        "zh-CN",
    )
    assert article.id == "a.md"
    assert article.body.strip() == "正文第一段，讲述了挖矿被叫停的过程和背景。"
    assert text[article.body_offset :] == article.body
    passage = split_article(article)[0]
    assert text[passage.start : passage.end] == passage.text  # offsets count the front matter


@pytest.mark.parametrize("value", ["2021-06-10", "2021-06-10 08:30:00", "2021-06-10T08:30:00+08:00", "'2021-06-10'"])
def test_yaml_date_becomes_iso_day(value):
    meta, body, _ = split_front_matter(f"---\ndate: {value}\n---\n正文。\n")
    assert meta["date"] == "2021-06-10"
    assert body == "正文。\n"


def test_missing_lang_defaults_to_zh_and_numbers_become_text(tmp_path):
    article = read_article(write(tmp_path / "n.md", "---\ntitle: 2021\n---\n正文内容。\n"), tmp_path)
    assert article.title == "2021" and article.lang == "zh" and article.date == ""


def test_title_from_leading_heading_without_front_matter(tmp_path):
    article = read_article(write(tmp_path / "x.md", "\n# 监管三大思路清晰\n\n正文第一段的内容足够长。\n"), tmp_path)
    assert article.title == "监管三大思路清晰"
    passages = split_article(article)
    assert [p.text for p in passages] == ["正文第一段的内容足够长。"]
    assert passages[0].section == "监管三大思路清晰"


def test_title_from_file_name_when_nothing_else(tmp_path):
    (tmp_path / "sub").mkdir()
    article = read_article(write(tmp_path / "sub" / "otc-crackdown_notes.txt", "正文。\n\n# 后面的标题\n"), tmp_path)
    assert article.title == "otc crackdown notes"
    assert article.id == "sub/otc-crackdown_notes.txt"
    shared = read_article(SOURCE_ARTICLE, SOURCE_ARTICLE.parent)
    assert shared.title == "blockchain daily 2021 06 10 crackdown"


# ---------------------------------------------------------------- encodings


SOURCE_TEXT = SOURCE_ARTICLE.read_text(encoding="utf-8")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_article_encodings_decode_to_the_same_passages(tmp_path, encoding):
    path = write(tmp_path / "article.txt", SOURCE_TEXT, encoding)
    article = read_article(path, tmp_path)
    assert article.body == SOURCE_TEXT
    assert [p.text for p in split_article(article)] == [p.text for p in split_article(article_from(SOURCE_TEXT))]


def test_bom_does_not_hide_front_matter(tmp_path):
    path = write(tmp_path / "bom.md", "---\ntitle: 带BOM的文章\n---\n\n正文内容写在这里。\n", "utf-8-sig")
    article = read_article(path, tmp_path)
    assert article.title == "带BOM的文章"
    assert article.body.strip() == "正文内容写在这里。"


def test_gbk_front_matter_and_crlf(tmp_path):
    text = "---\r\ntitle: 国标编码\r\ndate: 2021-06-10\r\n---\r\n\r\n第一行没有说完\r\n\r\n第二行接上了。\r\n"
    article = read_article(write(tmp_path / "g.md", text, "gbk"), tmp_path)
    assert article.title == "国标编码" and article.date == "2021-06-10"
    assert [p.text for p in split_article(article)] == ["第一行没有说完第二行接上了。"]


def test_content_hash_follows_bytes(tmp_path):
    a = read_article(write(tmp_path / "a.md", "正文。\n"), tmp_path)
    b = read_article(write(tmp_path / "b.md", "正文。\n"), tmp_path)
    c = read_article(write(tmp_path / "c.md", "正文！\n"), tmp_path)
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b" \n\t\n", "empty file"),
        (b"abc\x00def", "binary"),
        (
            "Größere Änderungen für Übergröße: Straße, Müller, Bäcker und schön.".encode("latin-1"),
            "not UTF-8",
        ),
        ("Café crème, déjà vu, naïve façade.".encode("latin-1"), "not UTF-8"),
        (bytes(range(1, 32)) * 20, "binary"),
    ],
)
def test_undecodable_data_is_refused_with_a_reason(data, reason):
    with pytest.raises(ArticleError, match=reason):
        decode(data)


def test_scan_corpus_parses_only_files_whose_bytes_changed(tmp_path):
    """An incremental build passes the live hashes: matching files are listed, not parsed."""
    write(tmp_path / "same.md", SOURCE_TEXT)
    write(tmp_path / "edited.md", SOURCE_TEXT + "\n\n新增一段。")
    write(tmp_path / "new.md", SOURCE_TEXT)
    known = {
        "same.md": hashlib.sha256((tmp_path / "same.md").read_bytes()).hexdigest(),
        "edited.md": hashlib.sha256(SOURCE_TEXT.encode()).hexdigest(),
        "gone.md": "0" * 64,
    }
    scan = scan_corpus(tmp_path, known)
    assert scan.unchanged == ["same.md"]
    assert sorted(a.id for a in scan.articles) == ["edited.md", "new.md"]
    assert all(a.content_hash == hashlib.sha256((tmp_path / a.id).read_bytes()).hexdigest() for a in scan.articles)
    # without known hashes every file is parsed, exactly as load_corpus does
    assert [a.id for a in scan_corpus(tmp_path).articles] == [a.id for a in load_corpus(tmp_path)[0]]


def test_load_corpus_reports_bad_files_and_keeps_good_ones(tmp_path):
    write(tmp_path / "good.md", SOURCE_TEXT)
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "notes.docx", "x")
    write(tmp_path / ".hidden.md", SOURCE_TEXT)
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git" / "x.md", SOURCE_TEXT)
    articles, skipped = load_corpus(tmp_path)
    assert [a.id for a in articles] == ["good.md"]
    assert {s.path: s.reason for s in skipped} == {
        "empty.txt": "empty file",
        "notes.docx": "unsupported file type .docx; use .md, .txt or .html",
    }
