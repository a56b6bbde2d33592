"""Articles out: `python -m index remove` (in process) by URL, corpus file, local file as added or
article id, then the incremental build, after which no answer quotes them; and /remove from
Telegram for admins (the real Application over the fake Bot API), sharing /add's turn."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import chat_texts, write_config

from corpus.model import OtherSource
from corpus.reader import format_article, parse_front_matter
from index.__main__ import main as index_main
from index.add import add_sources, url_file_name
from index.build import build_index
from loopback.fake_telegram import Call, InProcessBot, Payloads, parse_html, run_bot
from loopback.news_site import SICHUAN, NewsSite
from retrieval import Retriever
from settings import PROJECT_ROOT, Config, load_config
from telegram_bot.i18n import t

ADMIN = 4242
os.environ.setdefault("PTB_TIMEDELTA", "1")

# Each article states one fact no other one does.
ARTICLES = {
    "quarry": (
        "https://news.example.org/2021/quarry.html",
        "示例市关停比特币矿场",
        "示例市在2021年7月1日关停了全部37座比特币矿场，涉及矿机一万二千台。",
        "示例市关停了多少座比特币矿场？",
    ),
    "harbour": (
        "https://harbour.example.org/report",
        "港湾县清理虚拟货币交易",
        "港湾县公安局冻结了218个涉及虚拟货币场外交易的银行账户。",
        "港湾县冻结了多少个银行账户？",
    ),
    "valley": ("", "河谷州电力限制", "河谷州电网公司对挖矿用电加收每千瓦时0.3元的惩罚性电价。", "河谷州电价是多少？"),
    "ridge": ("", "山岭市约谈交易所", "山岭市金融办约谈了5家为虚拟货币交易服务的互联网平台。", "山岭市约谈了几家？"),
}


def article_text(key: str, also: tuple[OtherSource, ...] = ()) -> str:
    url, title, body, _ = ARTICLES[key]
    meta = {"title": title, "source": "示例日报", "date": "2021-07-01", "url": url}
    return format_article(f"# {title}\n\n{body}\n", {k: v for k, v in meta.items() if v}, also)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The default article, `quarry` under the name `index add` gives its URL, `harbour` with its
    URL only in its front matter, `valley` and `ridge` by name."""
    root = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus" / "articles", root)
    files = {
        "quarry": url_file_name(ARTICLES["quarry"][0]),
        "harbour": "manual/harbour.md",
        "valley": "valley.md",
        "ridge": "ridge.md",
    }
    for key, rel in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(article_text(key), encoding="utf-8")
    return root


@pytest.fixture
def config_file(corpus: Path, tmp_path: Path) -> Path:
    path = write_config(tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index")
    build_index(load_config(path))
    return path


def quoted_articles(config: Config, question: str) -> set[str]:
    """The articles of every passage a search for `question` returns (at max_k)."""
    retriever = Retriever.open(config.index.dir, config)
    try:
        return {hit.article_id for hit in retriever.search(question, config.retrieval.max_k)}
    finally:
        retriever.close()


def remove(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = index_main(["remove", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_remove_by_url_front_matter_url_id_and_path_then_no_answer_quotes_them(
    config_file: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(config_file)
    quarry = url_file_name(ARTICLES["quarry"][0])
    for key in ARTICLES:
        assert quoted_articles(config, ARTICLES[key][3]) & {quarry, "manual/harbour.md", "valley.md", "ridge.md"}
    code, lines, err = remove(
        capsys,
        "--config",
        str(config_file),
        ARTICLES["quarry"][0] + "#comments",  # as added (the fragment is not part of the article)
        ARTICLES["harbour"][0],  # the url in its front matter
        "valley.md",  # its id, as `index info` shows it
        str(corpus / "ridge.md"),  # its corpus file
    )
    assert code == 0, err
    assert lines[:4] == [
        f"removed {ARTICLES['quarry'][0]}#comments → {quarry} (示例市关停比特币矿场)",
        f"removed {ARTICLES['harbour'][0]} → manual/harbour.md (港湾县清理虚拟货币交易)",
        "removed valley.md → valley.md (河谷州电力限制)",
        f"removed {corpus / 'ridge.md'} → ridge.md (山岭市约谈交易所)",
    ]
    assert lines[4] == "sources: 4 removed, 0 unlisted, 0 not found"
    assert lines[5].startswith("articles: 0 added, 0 updated, 4 removed, 1 unchanged, 0 skipped;")
    assert "published v" in lines[5]
    assert sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*")) == [
        "blockchain-daily-2021-06-10-crackdown.md"  # and the emptied folders are gone
    ]
    default = "blockchain-daily-2021-06-10-crackdown.md"
    for key in ARTICLES:
        assert quoted_articles(config, ARTICLES[key][3]) == {default}


def test_sources_not_found_exit_1_and_nothing_outside_the_corpus_is_touched(
    config_file: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text(article_text("ridge"), encoding="utf-8")
    hidden = corpus / ".notes.md"
    hidden.write_text("private", encoding="utf-8")
    (corpus / "link.md").symlink_to(outside)
    build_index(load_config(config_file))
    sources = [
        "https://news.example.org/2021/unknown.html",
        str(outside),  # a file, but not in the corpus (nor ever added from there)
        "../outside.md",
        ".notes.md",
        str(corpus),
        "no such thing",
        "bad\x00path",
        "link.md",  # a symlink in the corpus: the link goes, never its target
    ]
    code, lines, err = remove(capsys, "--config", str(config_file), *sources)
    assert code == 1, err
    assert lines[:8] == [f"not found: {s}" for s in sources[:7]] + ["removed link.md → link.md (山岭市约谈交易所)"]
    assert lines[8] == "sources: 1 removed, 0 unlisted, 7 not found"
    assert "published v" in lines[9]
    assert outside.read_text(encoding="utf-8") == article_text("ridge") and hidden.exists()
    assert not (corpus / "link.md").is_symlink()

    code, lines, err = remove(capsys, "--config", str(config_file), "https://news.example.org/2021/unknown.html")
    assert code == 1 and lines[-1] == "index not rebuilt"  # nothing changed: no build


def test_nothing_could_run_exits_2_with_one_line(
    config_file: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = remove(capsys, "--corpus", str(tmp_path / "nope"), "--index", str(tmp_path / "i"), "x.md")
    assert (code, lines, err.strip()) == (2, [], f"error: corpus directory not found: {tmp_path / 'nope'}")

    everything = [p.relative_to(corpus).as_posix() for p in corpus.rglob("*.md")]
    code, lines, err = remove(capsys, "--config", str(config_file), *everything)
    assert code == 2, err  # an index cannot be empty: the build refuses, the last version serves
    assert lines[-1] == f"index not rebuilt: no readable .md, .txt or .html articles in {corpus}"
    assert quoted_articles(load_config(config_file), ARTICLES["valley"][3]) >= {"valley.md"}


def test_a_url_listed_as_another_source_is_unlisted_and_the_article_stays(
    config_file: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = OtherSource("https://mirror.example.net/valley", "镜像网", "2021-07-02")
    (corpus / "valley.md").write_text(article_text("valley", (mirror,)), encoding="utf-8")
    build_index(load_config(config_file))
    code, lines, err = remove(capsys, "--config", str(config_file), "https://Mirror.example.net/valley")
    assert code == 0, err
    assert lines[0] == (
        "unlisted https://Mirror.example.net/valley: no longer listed as a source of valley.md (河谷州电力限制)"
    )
    meta, also, _, _ = parse_front_matter((corpus / "valley.md").read_text(encoding="utf-8"))
    assert also == () and meta["title"] == "河谷州电力限制"
    assert "valley.md" in quoted_articles(load_config(config_file), ARTICLES["valley"][3])


def test_no_build_only_deletes_and_a_local_file_is_found_by_the_path_it_was_added_from(
    config_file: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(config_file)
    source = tmp_path / "downloads" / "report.md"
    source.parent.mkdir()
    source.write_text(article_text("ridge").replace("山岭市", "高原市"), encoding="utf-8")
    [added] = add_sources(config, [str(source)], build=False).results
    assert added.status == "added"
    version = (config.index.dir / "CURRENT").read_text(encoding="utf-8")
    code, lines, err = remove(capsys, "--config", str(config_file), "--no-build", str(source), "ridge.md")
    assert code == 0, err
    assert lines == [
        f"removed {source} → {added.path} (高原市约谈交易所)",
        "removed ridge.md → ridge.md (山岭市约谈交易所)",
        "sources: 2 removed, 0 unlisted, 0 not found",
        "index not rebuilt: run `python -m index build` to take them out of the index",
    ]
    assert not (corpus / added.path).exists() and source.exists()
    assert (config.index.dir / "CURRENT").read_text(encoding="utf-8") == version


# ---------------------------------------------------------------- /remove in Telegram
@pytest.fixture
def bot_config(config_file: Path) -> Config:
    base = load_config(config_file)
    return replace(
        base,
        telegram=replace(base.telegram, admins=(ADMIN,), reload_seconds=0.0),
        ingest=replace(base.ingest, timeout=2.0, download_seconds=5.0, allow_hosts=("127.0.0.1",)),
    )


def test_admin_removes_an_article_and_the_bot_stops_quoting_it(bot_config: Config) -> None:
    quarry = url_file_name(ARTICLES["quarry"][0])
    asked: list[list[Call]] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        asked.append(await bot.feed(p.message(ARTICLES["quarry"][3], chat_id=ADMIN)))
        await bot.feed(p.message(f"/remove {ARTICLES['quarry'][0]} nothing.md", chat_id=ADMIN, lang="en"))
        asked.append(await bot.feed(p.message(ARTICLES["quarry"][3], chat_id=ADMIN)))

    api = run_bot(bot_config, scenario)
    seen = chat_texts(api.calls, ADMIN)
    before, after = (parse_html(next(c for c in reply if c.method == "sendMessage").params["text"]) for reply in asked)
    assert "37座比特币矿场" in before.text and "37座" not in after.text
    status = seen[1:3]
    assert status[0] == t("en", "remove_started")
    assert status[1].split("\n")[:2] == [
        t("en", "remove_removed", title="示例市关停比特币矿场", path=quarry),
        t("en", "remove_not_found", source="nothing.md"),
    ]
    assert "Now answering from index version" in status[1]
    assert not (Path(bot_config.corpus.dir) / quarry).exists()


@pytest.mark.parametrize(
    ("user", "text", "key"),
    [(77, "/remove valley.md", "admins_only"), (ADMIN, "/remove", "remove_usage")],
)
def test_remove_is_for_admins_and_needs_a_source(bot_config: Config, user: int, text: str, key: str) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(p.message(text, chat_id=user, lang="en"))

    api = run_bot(bot_config, scenario)
    assert chat_texts(api.calls, user) == [t("en", key)]
    assert (Path(bot_config.corpus.dir) / "valley.md").exists()


def test_remove_and_add_take_turns(site: NewsSite, bot_config: Config) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await asyncio.gather(
            bot.feed(p.message(f"/add {site.url(SICHUAN)}", chat_id=ADMIN, lang="en")),
            bot.feed(p.message("/remove valley.md", chat_id=ADMIN + 1, user_id=ADMIN, lang="en")),
        )

    api = run_bot(bot_config, scenario)
    adding, removing = chat_texts(api.calls, ADMIN), chat_texts(api.calls, ADMIN + 1)
    assert {adding[0], removing[0]} in (
        {t("en", "add_started"), t("en", "remove_queued")},
        {t("en", "add_queued"), t("en", "remove_started")},
    )
    assert adding[-1].startswith("Added: ") and removing[-1].startswith("Removed: 河谷州电力限制 (valley.md)")
    assert "valley.md" not in quoted_articles(bot_config, ARTICLES["valley"][3])
    sichuan = quoted_articles(bot_config, "四川要求什么时候前完成甄别清理？")
    assert any(article.startswith("127.0.0.1_") for article in sichuan)
