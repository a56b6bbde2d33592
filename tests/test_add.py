"""`index add` against a news site on loopback: realistic Chinese pages (navigation, ads,
comments and scripts around the article; og:/article: tags or none; a GBK page; a table
layout), an RSS feed of three of them, and every kind of bad source. Pages become `.md`
files whose sections and paragraphs survive into citations."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_config, write_config

from corpus import read_article, scan_corpus, split_article
from corpus.html import decode_html, extract_article
from corpus.reader import format_article, split_front_matter
from index.add import AddReport, add_sources, url_file_name
from index.build import build_index
from loopback.news_site import (
    FEED,
    OTC,
    PAGE_NOISE,
    PBOC,
    SICHUAN,
    SICHUAN_TITLE,
    SICHUAN_URL,
    SITE,
    SITE_HOST,
    SITE_RESOLVER,
)
from retrieval import Retriever
from settings import Config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """An empty corpus, the fake embedder and short time limits for the slow endpoints."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    base = make_config(corpus, tmp_path / "index")
    return replace(base, ingest=replace(base.ingest, timeout=0.5, download_seconds=2.0, allow_hosts=("127.0.0.1",)))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/article.html"  # nobody listens: connection refused


def corpus_files(config: Config) -> dict[str, bytes]:
    """Every file under the corpus directory, hidden temporary files included."""
    root = Path(config.corpus.dir)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def only(report: AddReport) -> dict[str, str]:
    assert len(report.results) == 1, report.results
    result = report.results[0]
    return {"status": result.status, "detail": result.detail, "path": result.path, "title": result.title}


def front_matter(config: Config, rel: str) -> tuple[dict[str, str], str]:
    meta, body, _ = split_front_matter((Path(config.corpus.dir) / rel).read_text(encoding="utf-8"))
    return meta, body


# ---------------------------------------------------------------- one page


def test_article_page_becomes_markdown_with_sections_and_metadata(site, config):
    report = add_sources(config, [site.named(SICHUAN)], build=False, resolver=SITE_RESOLVER)
    result = only(report)
    assert result["status"] == "added" and report.ok and report.build is None
    assert result["path"] == url_file_name(site.named(SICHUAN))
    assert result["path"].startswith(f"{SITE_HOST}_{site.base.rsplit(':', 1)[1]}/sichuan-mining-")
    meta, body = front_matter(config, result["path"])
    assert meta == {
        "title": SICHUAN_TITLE,
        "source": "示例新闻网",
        "author": "李明远",
        "date": "2021-06-19",
        "url": SICHUAN_URL,
    }
    assert "## 26家疑似“挖矿”项目被点名" in body and "### 丰水期电价优势不再" in body
    assert not any(noise in body for noise in PAGE_NOISE), body
    assert "责任编辑" not in body  # the editor credit is not a paragraph of the article

    article = read_article(Path(config.corpus.dir) / result["path"], Path(config.corpus.dir))
    passages = split_article(article, config.corpus.max_chars, config.corpus.min_chars)
    cited = {(p.section, p.paragraph): p.text for p in passages}
    assert cited[("", 1)].startswith("据四川省发展和改革委员会消息")
    assert cited[("26家疑似“挖矿”项目被点名", 3)].startswith("通知附有一份名单")
    assert cited[("丰水期电价优势不再", 5)].startswith("一位长期在雅安经营矿场的人士")
    assert cited[("比特币全网算力明显下降", 8)].startswith("分析人士认为")


def test_a_canonical_link_to_another_host_is_not_believed(site, config):
    """Fetched from 127.0.0.1, the page's canonical link (news.example.cn) and its site name
    could be anyone's claim: the fetched URL and host are the citation."""
    result = only(add_sources(config, [site.url(SICHUAN)], build=False))
    meta, _ = front_matter(config, result["path"])
    assert (meta["url"], meta["source"], meta["title"]) == (site.url(SICHUAN), "127.0.0.1", SICHUAN_TITLE)


def test_gbk_table_layout_page_with_bold_subheadings(site, config):
    result = only(add_sources(config, [site.url(PBOC)], build=False))
    assert result["status"] == "added"
    meta, body = front_matter(config, result["path"])
    assert meta["title"] == "央行约谈部分银行和支付机构 要求不得为虚拟货币交易提供服务"
    assert (meta["source"], meta["date"], meta["url"]) == ("示例新闻网", "2021-06-21", site.url(PBOC))
    paragraphs = body.strip().split("\n\n")
    assert paragraphs[0].startswith("6月21日，中国人民银行有关部门")  # the byline line is gone
    assert "### 要求全面排查识别交易炒作资金账户" in paragraphs and "### 多家机构表态落实" in paragraphs
    assert not any(noise in body for noise in ("我要评论", "24小时排行", "相关新闻", "银行早该管了", "理财产品"))


def test_date_from_the_byline_when_markup_and_url_have_none(site, config):
    result = only(add_sources(config, [site.url(OTC)], build=False))
    meta, body = front_matter(config, result["path"])
    # The recommendations link to pages of 06-21 and 06-22; the byline says 2021年06月23日.
    assert meta["date"] == "2021-06-23"
    assert meta["title"] == "多地警方通报：出租出借银行卡参与虚拟货币“跑分”被查"
    assert body.startswith("记者从多地公安机关获悉") and "## 商户银行卡频遭冻结" in body
    assert "用户8812" not in body and "暑期防溺水" not in body


# ---------------------------------------------------------------- feeds and repeats


def test_feed_adds_each_entry_and_repeats_change_nothing(site, config):
    seen: list[str] = []
    report = add_sources(config, [site.url(FEED)], build=False, on_result=lambda r: seen.append(r.line()))
    assert [r.status for r in report.results] == ["added"] * 3 and report.ok
    assert report.summary().endswith("index not rebuilt: run `python -m index build` to index the new files")
    assert seen == [r.line() for r in report.results]  # reported as they happen
    by_source = {r.source: r for r in report.results}
    assert set(by_source) == {site.url(OTC), site.url(PBOC), site.url(SICHUAN) + "?from=rss"}
    otc_meta, _ = front_matter(config, by_source[site.url(OTC)].path)
    # No og:site_name on that page: the feed's title names the source, not the host.
    assert (otc_meta["source"], otc_meta["date"]) == ("示例新闻网 - 财经", "2021-06-23")
    written = corpus_files(config)
    assert len(written) == 3

    again = add_sources(config, [site.url(FEED)], build=False)
    assert [r.status for r in again.results] == ["unchanged"] * 3 and again.ok
    assert corpus_files(config) == written

    # Another URL, the same article text: recorded once as another source of it, then unchanged.
    twin = by_source[site.url(SICHUAN) + "?from=rss"].path
    direct = [only(add_sources(config, [site.url(SICHUAN)], build=False)) for _ in range(2)]
    assert [(d["status"], d["detail"]) for d in direct] == [
        ("updated", f"same text as {twin}; recorded as another source of it"),
        ("unchanged", f"same text as {twin}"),
    ]
    assert set(corpus_files(config)) == set(written)


def test_atom_feed_labelled_as_html_and_a_utf8_page_labelled_latin1(site, config):
    report = add_sources(config, [site.url("/atom.xml"), site.url("/mislabelled.html")], build=False)
    assert [(r.source, r.status) for r in report.results] == [
        (site.url(OTC), "added"),  # the entry without a link is left out
        (site.url("/mislabelled.html"), "added"),
    ]
    assert front_matter(config, report.results[1].path)[0]["title"] == SICHUAN_TITLE


@pytest.mark.parametrize(
    ("encoding", "declared", "meta"),
    [("utf-8", "iso-8859-1", ""), ("gb18030", None, "gb2312"), ("gb18030", "gbk", ""), ("big5", None, "big5")],
)
def test_page_decoding(encoding, declared, meta):
    text = (
        "<html><head>"
        + (f'<meta charset="{meta}">' if meta else "")
        + "</head><body><p>央行約談銀行。</p></body></html>"
    )
    assert decode_html(text.encode(encoding), declared) == text


def test_extraction_never_touches_the_network(monkeypatch):
    """We fetch with httpx; trafilatura and htmldate only ever see the downloaded page."""

    def refuse(*args: object) -> None:
        raise AssertionError("a connection was opened during extraction")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    undated = "<html><body><div id='main'>" + "<p>浙江提醒居民不要参与虚拟货币交易炒作活动。</p>" * 4
    undated += "<div class='footer'>发布时间：2021-06-25</div></div></body></html>"
    pages = [(SITE / "sichuan-mining.html").read_bytes(), (SITE / "otc-cards.html").read_bytes(), undated.encode()]
    found = [extract_article(decode_html(page), "http://news.example.cn/a/1.html") for page in pages]
    assert [page.date for page in found] == ["2021-06-19", "2021-06-23", "2021-06-25"]


def test_changed_page_replaces_its_file(site, config):
    path = "/live/story.html"
    original = (SITE / "otc-cards.html").read_bytes()
    site.routes[path] = ("text/html; charset=utf-8", original)
    try:
        first = only(add_sources(config, [site.url(path)], build=False))
        correction = "（更正：刘某收购的银行卡为二十二张。）"
        changed = original.replace(b'</div>\n    <div class="share-bar">', f"<p>{correction}</p></div>".encode())
        assert changed != original
        site.routes[path] = ("text/html; charset=utf-8", changed)
        second = only(add_sources(config, [site.url(path)], build=False))
    finally:
        del site.routes[path]
    assert first["status"] == "added" and second["status"] == "updated"
    assert second["path"] == first["path"]
    assert list(corpus_files(config)) == [first["path"]]  # replaced in place, no temporary left
    assert front_matter(config, first["path"])[1].rstrip().endswith(correction)


# ---------------------------------------------------------------- bad sources

BAD = {
    "missing": ("/no/such/page.html", "HTTP 404 Not Found"),
    "timeout": ("/slow", "timed out (no response within 0.5s)"),
    "trickle": ("/trickle", "download took longer than 2s"),
    "pdf": ("/report.pdf", "not a web page or feed (application/pdf)"),
    "image": ("/photo.png", "not a web page or feed (image/png)"),
    "binary": ("/download.bin", "not a web page or feed (application/octet-stream)"),
    "huge": ("/huge", "too large (more than the 5.0 MB limit)"),
    "huge-declared": ("/huge-declared", "too large (52.4 MB > 5.0 MB limit)"),
    "redirect-loop": ("/loop/a", "too many redirects (more than 5)"),
    "redirect-to-ftp": ("/to-ftp", "redirected to a URL that is not http or https"),
    "malformed-feed": ("/rss/broken.xml", "malformed feed: "),
    "no-article": ("/finance/", "no article text found on the page"),
    "empty": ("/empty.html", "empty page"),
    "xml-not-feed": ("/data.xml", "XML, but not an RSS or Atom feed"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_source_is_one_skipped_line_and_writes_nothing(site, config, case):
    path, reason = BAD[case]
    report = add_sources(config, [site.url(path)])
    result = only(report)
    assert result["status"] == "skipped" and result["detail"].startswith(reason), result
    assert report.results[0].line() == f"skipped {site.url(path)}: {result['detail']}"
    assert not report.ok and report.build is None  # nothing to build
    assert corpus_files(config) == {}


def test_unreachable_and_non_http_sources(config, tmp_path):
    refused = closed_port_url()
    sources = [refused, "ftp://127.0.0.1/a.html", "https://", "http://[::1/", str(tmp_path / "nope.html"), "not a url"]
    report = add_sources(config, sources, build=False)
    details = [(r.status, r.detail) for r in report.results]
    assert details[0][0] == "skipped" and details[0][1].startswith("cannot connect: ")
    assert details[1:] == [
        ("skipped", "only http and https URLs are fetched"),
        ("skipped", "not a valid URL"),
        ("skipped", "not a valid URL"),
        ("skipped", "no such file or directory, and not an http(s) URL"),
        ("skipped", "no such file or directory, and not an http(s) URL"),
    ]
    assert corpus_files(config) == {}


def test_good_sources_are_added_and_built_despite_bad_ones(site, config):
    sources = [site.url("/no/such/page.html"), site.url("/moved"), site.url("/report.pdf"), site.named(SICHUAN)]
    report = add_sources(config, sources, resolver=SITE_RESOLVER)
    assert [r.status for r in report.results] == ["skipped", "added", "skipped", "added"]
    assert not report.ok and report.build is not None and report.build.published
    assert report.build.added == 2 and not report.build.skipped
    assert report.summary().startswith("sources: 2 added, 0 updated, 0 unchanged, 2 skipped\narticles: 2 added")
    retriever = Retriever.open(config.index.dir, config)
    try:
        hit = retriever.search("四川要求哪天前完成对挖矿项目的甄别清理？", k=1)[0]
    finally:
        retriever.close()
    assert (hit.title, hit.date, hit.url, hit.source) == (SICHUAN_TITLE, "2021-06-19", SICHUAN_URL, "示例新闻网")
    assert "6月20日前完成" in hit.text and hit.citation.startswith("《示例新闻网》2021-06-19 · " + SICHUAN_TITLE)


def test_two_adds_in_worker_threads_at_once(site, config):
    """The bot runs `add_sources` in worker threads: each call has its own client and files."""
    reports: dict[str, AddReport] = {}

    def run(name: str, url: str) -> None:
        reports[name] = add_sources(config, [url], build=False)

    threads = [threading.Thread(target=run, args=(n, site.url(p))) for n, p in (("a", SICHUAN), ("b", PBOC))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {n: r.results[0].status for n, r in reports.items()} == {"a": "added", "b": "added"}
    assert len(scan_corpus(Path(config.corpus.dir)).articles) == 2


# ---------------------------------------------------------------- local files


def test_local_files_and_directories(config, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sichuan.html").write_bytes((SITE / "sichuan-mining.html").read_bytes())
    note = "---\ntitle: 'Note: 笔记'\ndate: 2021-06-30\n---\n## 小结\n\n六月各地陆续清理虚拟货币挖矿项目。\n"
    (inbox / "sub" / "note.md").write_text(note, encoding="utf-8")
    (inbox / "plain.txt").write_text("# 纯文本\n\n浙江提醒居民不要参与虚拟货币交易炒作。\n", encoding="utf-8")
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4")
    report = add_sources(config, [str(inbox)], build=False)
    statuses = {Path(r.source).name: (r.status, r.detail) for r in report.results}
    assert statuses == {
        "plain.txt": ("added", ""),
        "scan.pdf": ("skipped", "unsupported file type .pdf; use .md, .txt or .html"),
        "sichuan.html": ("added", ""),
        "note.md": ("added", ""),
    }
    by_name = {Path(r.source).name: r for r in report.results}
    meta, body = front_matter(config, by_name["note.md"].path)
    assert meta == {"title": "Note: 笔记", "date": "2021-06-30"} and body.startswith("## 小结")
    assert front_matter(config, by_name["plain.txt"].path)[0] == {"title": "纯文本"}
    html_meta, _ = front_matter(config, by_name["sichuan.html"].path)
    assert html_meta["url"] == SICHUAN_URL and html_meta["date"] == "2021-06-19"

    again = add_sources(config, [str(inbox / "sichuan.html"), str(Path(config.corpus.dir) / by_name["note.md"].path)])
    assert [(r.status, r.detail) for r in again.results] == [
        ("unchanged", "same text and metadata"),
        ("unchanged", "already in the corpus directory"),
    ]
    assert again.ok and again.build is not None and again.build.added == 3


def test_html_dropped_into_the_corpus_reads_like_an_added_page(site, config, tmp_path):
    added = only(add_sources(config, [site.named(SICHUAN)], build=False, resolver=SITE_RESOLVER))
    other = make_config(tmp_path / "dropped", tmp_path / "index2")
    (tmp_path / "dropped").mkdir()
    (tmp_path / "dropped" / "page.htm").write_bytes((SITE / "sichuan-mining.html").read_bytes())
    (tmp_path / "dropped" / "channel.html").write_bytes((SITE / "channel-index.html").read_bytes())
    scan = scan_corpus(tmp_path / "dropped")
    assert [(s.path, s.reason) for s in scan.skipped] == [
        ("channel.html", "no article text found on the page (only links or fragments)")
    ]
    (dropped,) = scan.articles
    written = read_article(Path(config.corpus.dir) / added["path"], Path(config.corpus.dir))
    assert dropped.body == written.body
    assert (dropped.title, dropped.date, dropped.source, dropped.url) == (
        written.title,
        written.date,
        written.source,
        written.url,
    )
    assert [p.section for p in split_article(dropped)] == [p.section for p in split_article(written)]
    report = build_index(other)
    assert report.added == 1 and [s.path for s in report.skipped] == ["channel.html"]


def test_front_matter_round_trips_awkward_values():
    meta = {"title": 'A: "quoted" — 标题 #1', "source": "- dash", "date": "2021-06-10", "url": "http://x/?a=1&b=2"}
    parsed, body, _ = split_front_matter(format_article("正文。\n", meta))
    assert parsed == meta and body == "正文。\n"


# ---------------------------------------------------------------- the command line


def test_cli_add_then_retrieval_cites_the_new_article(site, tmp_path, cli):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "existing.md").write_text("# 旧文章\n\n青海省禁止向挖矿项目提供电力。\n", encoding="utf-8")
    config_file = str(
        write_config(
            tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index", ingest={"allow_hosts": ["127.0.0.1"]}
        )
    )
    bad = site.url("/report.pdf")
    result = cli("index", "add", "--config", config_file, site.url(FEED), bad)
    assert result.code == 1 and "Traceback" not in result.err, result.err
    lines = result.out.splitlines()
    assert sorted(line.split()[0] for line in lines[:4]) == ["added", "added", "added", "skipped"]
    assert f"skipped {bad}: not a web page or feed (application/pdf)" in lines
    assert lines[4] == "sources: 3 added, 0 updated, 0 unchanged, 1 skipped"
    assert lines[5].startswith("articles: 4 added, 0 updated, 0 removed, 0 unchanged, 0 skipped;")

    again = cli("index", "add", "--config", config_file, site.url(FEED))
    assert again.code == 0, again.err
    assert [line.split()[0] for line in again.out.splitlines()[:3]] == ["unchanged"] * 3

    # Fetched from 127.0.0.1, the page's canonical link to news.example.cn is not believed:
    # the fetched URL is cited, under the feed's title.
    fetched = site.url(SICHUAN) + "?from=rss"
    answer = cli("retrieval", "--config", config_file, "--json", "四川要求哪天前完成对挖矿项目的甄别清理？")
    assert answer.code == 0, answer.err
    top = json.loads(answer.out)["results"][0]
    assert (top["title"], top["date"], top["url"]) == (SICHUAN_TITLE, "2021-06-19", fetched)
    assert top["citation"].startswith(f"《示例新闻网 - 财经》2021-06-19 · {SICHUAN_TITLE} · ")
    assert "6月20日前完成" in top["text"]
    readable = cli("retrieval", "--config", config_file, "四川要求哪天前完成对挖矿项目的甄别清理？")
    lines = [line.strip() for line in readable.out.splitlines()]
    cited = next(
        i for i, line in enumerate(lines) if line.startswith(f"— 《示例新闻网 - 财经》2021-06-19 · {SICHUAN_TITLE}")
    )
    assert fetched in lines[cited] + lines[cited + 1]  # the link follows the citation


def test_cli_add_reports_a_missing_corpus_in_one_line(tmp_path, cli):
    result = cli("index", "add", "--corpus", str(tmp_path / "nope"), "--index", str(tmp_path / "i"), "x.html")
    assert result.code == 2 and result.out == ""
    assert result.err.strip() == f"error: corpus directory not found: {tmp_path / 'nope'}"
