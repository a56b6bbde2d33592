"""Many articles: republished copies grouped at build time and quoted once (earliest version,
the others cited as "also in"), incrementally; over real temporary indexes (fake embedder)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    FACT,
    QUESTION,
    Exit,
    article,
    assert_valid_answer_html,
    buttons,
    copy_index,
    make_config,
    original_body,
    write_config,
    write_syndicated,
)

from bench.many import generate as generate_corpus
from bench.many import gold_pairs, indexed_pairs
from index import publish, store, vectors
from index.add import add_sources
from index.build import build_index
from index.dedup import BUCKET_ANCHORS
from loopback.fake_telegram import InProcessBot, Payloads, run_bot, sent
from retrieval import Retriever
from settings import Config, load_config
from telegram_bot.console import run_console


@pytest.fixture(scope="module")
def syndicated_index(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The syndicated story (`helpers.write_syndicated`) indexed once, for the tests that read it."""
    root = tmp_path_factory.mktemp("syndicated")
    write_syndicated(root / "corpus")
    config = make_config(root / "corpus", root / "index")
    build_index(config)
    return config


@pytest.fixture
def syndicated(syndicated_index: Config, tmp_path: Path) -> Config:
    """A writable copy of the syndicated index."""
    return copy_index(syndicated_index, tmp_path)


def groups(config: Config) -> dict[int, set[str]]:
    """group id → the article ids of its members."""
    db = store.open_db(publish.current_version(config.index.dir).db_path, readonly=True)
    try:
        rows = db.execute(
            "select g.group_id, p.article_id from passage_groups g join passages p on p.id = g.passage_id"
        ).fetchall()
    finally:
        db.close()
    out: dict[int, set[str]] = {}
    for group_id, article_id in rows:
        out.setdefault(group_id, set()).add(article_id)
    return out


def test_copies_are_grouped_and_quoted_once_in_their_earliest_version(syndicated_index: Config) -> None:
    found = groups(syndicated_index)
    assert found and all(ids <= {"z-daily.md", "sina.md", "a-jinse.md"} for ids in found.values())
    retriever = Retriever.open(syndicated_index.index.dir, syndicated_index)
    try:
        hits = retriever.search(QUESTION, k=3)
    finally:
        retriever.close()
    top = hits[0]
    assert FACT in top.text
    assert top.article_id == "z-daily.md" and top.source == "区块链日报"  # the earliest, not the first file
    also = {a.source: a for a in top.also}
    assert set(also) == {"新浪财经", "金色财经"}
    assert also["新浪财经"].date == "2021-06-11" and also["新浪财经"].url == "https://sina.example.cn/b"
    assert FACT in retriever_text(syndicated_index, also["新浪财经"].passage_id)
    # k counts distinct passages: no other hit repeats the top one's text from another outlet.
    assert len(hits) == 3
    assert all(FACT not in h.text for h in hits[1:])
    assert len({h.passage_id for h in hits} | {a.passage_id for h in hits for a in h.also}) == 3 + sum(
        len(h.also) for h in hits
    )


def retriever_text(config: Config, passage_id: int) -> str:
    retriever = Retriever.open(config.index.dir, config)
    try:
        return retriever.passages([passage_id])[passage_id].text
    finally:
        retriever.close()


def test_groups_are_updated_incrementally(syndicated: Config) -> None:
    before = groups(syndicated)
    corpus = Path(syndicated.corpus.dir)
    (corpus / "a-jinse.md").unlink()
    build_index(syndicated)
    after_removal = groups(syndicated)
    assert after_removal and all("a-jinse.md" not in ids for ids in after_removal.values())
    left = [sorted(ids - {"a-jinse.md"}) for ids in before.values() if len(ids - {"a-jinse.md"}) > 1]
    assert sorted(left) == sorted(sorted(ids) for ids in after_removal.values())
    (corpus / "sina.md").unlink()
    build_index(syndicated)
    assert groups(syndicated) == {}  # one article left of the story: nothing to group
    write_syndicated(corpus)
    build_index(syndicated)
    regrouped = groups(syndicated)
    assert {frozenset(ids) for ids in regrouped.values()} >= {frozenset({"z-daily.md", "sina.md", "a-jinse.md"})}
    # An unrelated change leaves the groups as they are.
    (corpus / "other.md").write_text(article({"title": "天气2"}, "明天晴转多云，气温二十到二十八度，适宜出行。"))
    build_index(syndicated)
    assert groups(syndicated) == regrouped


def test_generated_corpus_duplicates_found_with_precision_and_recall(tmp_path: Path) -> None:
    corpus = generate_corpus(tmp_path / "corpus", seed=3)
    config = make_config(tmp_path / "corpus", tmp_path / "index")
    report = build_index(config)
    assert not report.skipped
    passages, found = indexed_pairs(config)
    gold = gold_pairs(corpus, passages)
    assert len(gold) > 50
    assert len(gold & found) / len(found) >= 0.9
    assert len(gold & found) / len(gold) >= 0.9


def test_cli_json_lists_the_other_copies(syndicated_index: Config, tmp_path: Path, cli: Callable[..., Exit]) -> None:
    config_file = write_config(
        tmp_path / "config.toml", corpus=Path(syndicated_index.corpus.dir), index=Path(syndicated_index.index.dir)
    )
    result = cli("retrieval", "--config", str(config_file), "--json", QUESTION)
    assert result.code == 0, result.err
    top = json.loads(result.out)["results"][0]
    assert top["source"] == "区块链日报"
    assert [(a["source"], a["date"]) for a in top["also"]] == [("新浪财经", "2021-06-11"), ("金色财经", "2021-06-12")]
    assert set(top["also"][0]) == {"source", "date", "title", "url", "article_id", "passage_id"}
    readable = cli("retrieval", "--config", str(config_file), QUESTION)
    assert "也见于 / also in: 新浪财经 2021-06-11, 金色财经 2021-06-12" in readable.out


@pytest.fixture
def syndicated_config_file(syndicated_index: Config, tmp_path: Path) -> Path:
    """A config file over the syndicated index, with this test's own bot state."""
    index = syndicated_index.index
    return write_config(tmp_path / "bot.toml", corpus=Path(syndicated_index.corpus.dir), index=Path(index.dir))


def test_console_quotes_once_and_names_the_copies(syndicated_config_file: Path) -> None:
    config = load_config(syndicated_config_file)
    stdout = io.StringIO()
    stdin = io.BytesIO(f"{QUESTION}\n/more\n".encode())
    assert asyncio.run(run_console(config, stdin=stdin, stdout=stdout)) == 0  # type: ignore[arg-type]
    out = stdout.getvalue()
    assert out.count(FACT) == 1  # neither the copies nor "More" repeat it
    assert "— 《区块链日报》2021-06-10 · " in out
    also = "也见于：新浪财经 2021-06-11 <https://sina.example.cn/b>, 金色财经 2021-06-12 <https://jinse.example.cn/c>"
    assert also in out


def test_bot_answer_cites_the_copies_with_links(syndicated_config_file: Path) -> None:
    calls = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION)))
        calls.extend(await bot.feed(p.message("How many criminal gangs were taken down?")))

    run_bot(load_config(syndicated_config_file), scenario)
    zh, en = sent(calls)
    text = assert_valid_answer_html(zh)
    assert text.count(FACT) == 1 and "也见于：新浪财经 2021-06-11, 金色财经 2021-06-12" in text
    assert '<a href="https://sina.example.cn/b">新浪财经 2021-06-11</a>' in zh.params["text"]
    assert "also in: " in assert_valid_answer_html(en)


@pytest.fixture(scope="module")
def many_articles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file over the generated multi-article corpus (dozens of articles, six outlets)."""
    tmp = tmp_path_factory.mktemp("many")
    generate_corpus(tmp / "corpus", seed=1)
    config_file = write_config(tmp / "config.toml", corpus=tmp / "corpus", index=tmp / "index")
    build_index(load_config(config_file))
    return config_file


def test_bot_sources_pages_newest_first_with_outlet_counts(many_articles: Path) -> None:
    calls = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message("/sources")))
        first = sent(calls)[-1]
        [older] = buttons(first)
        message = p.bot_message("x", chat_id=1001, message_id=first.result["message_id"])
        calls.extend(await bot.feed(p.callback(older["callback_data"], message=message, user_id=1001)))
        calls.extend(await bot.feed(p.message("/sources 99")))

    run_bot(load_config(many_articles), scenario)
    first, last = sent(calls)
    [edit] = sent(calls, "editMessageText")
    page1, page2, final = (assert_valid_answer_html(c) for c in (first, edit, last))
    assert re.search(r"第 (\d+)/\1 页", final)  # the last page
    assert "各来源：" in page1 and "第 1/" in page1 and "第 2/" in page2
    dates = [line.split()[1] for line in page1.splitlines() if line.startswith("• ")]
    assert len(dates) == 10 and dates == sorted(dates, reverse=True)
    assert min(dates) >= max(line.split()[1] for line in page2.splitlines() if line.startswith("• "))
    assert [b["text"] for b in buttons(edit)] == ["‹ 较新", "较旧 ›"]
    assert [b["text"] for b in buttons(last)] == ["‹ 较新"]  # /sources 99: the last page


def test_console_sources_and_index_info_give_the_same_summary(many_articles: Path, cli: Callable[..., Exit]) -> None:
    config = load_config(many_articles)
    stdout = io.StringIO()
    assert asyncio.run(run_console(config, stdin=io.BytesIO(b"/sources\n/sources 2\n"), stdout=stdout)) == 0  # type: ignore[arg-type]
    out = stdout.getvalue()
    info = cli("index", "info", "--config", str(many_articles))
    assert info.code == 0, info.err
    data = json.loads(info.out)
    summary = data["summary"]
    assert summary["articles"] == len(data["articles"]) and summary["duplicate_groups"] > 0
    assert [a["date"] for a in data["articles"]] == sorted((a["date"] for a in data["articles"]), reverse=True)
    assert summary["newest"] == data["articles"][0]["date"]
    counts = " · ".join(f"{source} {n}" for source, n in summary["outlets"].items())
    assert f"By outlet: {counts}" in out or f"各来源：{counts}" in out
    assert ("Page 2 of" in out or "第 2/" in out) and out.count("• ") == 20


def test_the_same_article_added_under_two_urls_is_shown_once_with_both_sources(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    config = make_config(corpus, tmp_path / "index")
    body = original_body()
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    first.write_text(article({"title": "叫停挖矿", "source": "区块链日报", "date": "2021-06-10",
                              "url": "https://daily.example.cn/a"}, body), encoding="utf-8")  # fmt: skip
    second.write_text(article({"title": "叫停挖矿", "source": "新浪财经", "date": "2021-06-10",
                               "url": "https://sina.example.cn/a"}, body), encoding="utf-8")  # fmt: skip
    report = add_sources(config, [str(first), str(second)])
    added, recorded = report.results
    assert (added.status, recorded.status) == ("added", "updated") and report.ok
    assert recorded.detail == f"same text as {added.path}; recorded as another source of it"
    assert [p.name for p in corpus.iterdir()] == [Path(added.path).name]  # one article, not two
    again = add_sources(config, [str(second)], build=False)
    assert [r.status for r in again.results] == ["unchanged"]  # already recorded
    retriever = Retriever.open(config.index.dir, config)
    try:
        top = retriever.search(QUESTION, k=1)[0]
    finally:
        retriever.close()
    assert (top.source, top.url) == ("区块链日报", "https://daily.example.cn/a")
    [other] = top.also
    assert (other.source, other.url, other.passage_id) == ("新浪财经", "https://sina.example.cn/a", top.passage_id)


def test_a_group_never_holds_two_passages_of_one_article(tmp_path: Path) -> None:
    """An article that restates its lead later (the lead plus a sentence), republished whole:
    each paragraph is grouped with its own copy, not all four together."""
    lead = "海川市金融局发布数字资产交易平台管理办法征求意见稿，向社会公开征求意见，意见反馈截止日期为五月二十六日。"
    filler = "记者了解到，本市目前共有各类平台十余家，其中多数尚未完成登记，业内人士普遍关注过渡期的具体安排。"
    body = f"{lead}\n\n{filler}\n\n{lead}征求意见稿还提出了资本要求。"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, source in (("a.md", "澎湃新闻"), ("b.md", "第一财经")):
        (corpus / name).write_text(article({"title": "意见稿", "source": source, "date": "2021-05-12"}, body))
    config = make_config(corpus, tmp_path / "index")
    build_index(config)
    db = store.open_db(publish.current_version(config.index.dir).db_path, readonly=True)
    try:
        pairs = db.execute("select count(*) from passage_dups").fetchone()[0]
        rows = db.execute(
            "select g.group_id, p.article_id, p.ordinal from passage_groups g join passages p on p.id = g.passage_id"
        ).fetchall()
    finally:
        db.close()
    assert pairs > 3  # the lead also matched the restated lead of the other copy
    members: dict[int, list[tuple[str, int]]] = {}
    for group_id, article_id, ordinal in rows:
        members.setdefault(group_id, []).append((article_id, ordinal))
    assert sorted(sorted(m) for m in members.values()) == [
        [("a.md", 0), ("b.md", 0)],
        [("a.md", 1), ("b.md", 1)],
        [("a.md", 2), ("b.md", 2)],
    ]


def test_a_paragraph_repeated_through_an_article_and_carried_by_many_articles_stays_linear(tmp_path: Path) -> None:
    """One bucket holding hundreds of passages (a page repeating a paragraph, a line that more
    articles carry than a bucket has anchors): every article's copy still lands in one group,
    and each passage is paired with at most `BUCKET_ANCHORS` others, not with all of them."""
    line = "本文仅供参考，不构成任何投资建议。市场有风险，投资需谨慎，转载请注明出处并保留原文链接。"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    repeats, carriers = 400, 3 * BUCKET_ANCHORS
    (corpus / "repeated.md").write_text(article({"title": "重复"}, "\n\n".join([line] * repeats)))
    for n in range(carriers):
        (corpus / f"carrier-{n:03}.md").write_text(article({"title": f"快讯{n}"}, line))
    config = make_config(corpus, tmp_path / "index")
    build_index(config)
    db = store.open_db(publish.current_version(config.index.dir).db_path, readonly=True)
    try:
        passages = db.execute("select count(*) from passages").fetchone()[0]
        pairs = db.execute("select count(*) from passage_dups").fetchone()[0]
    finally:
        db.close()
    [members] = groups(config).values()
    assert members == {"repeated.md"} | {f"carrier-{n:03}.md" for n in range(carriers)}
    assert passages >= repeats + carriers
    assert pairs <= BUCKET_ANCHORS * (repeats + carriers)
    assert pairs < repeats * carriers  # fewer than the copies of the repeated paragraph alone would give


def test_index_check_verifies_the_copy_groups(syndicated: Config) -> None:
    version = publish.current_version(syndicated.index.dir)
    db = store.open_db(version.db_path)
    faiss_ids = vectors.faiss_ids(vectors.read_faiss(version.faiss_path))
    try:
        assert groups(syndicated) and store.integrity_problems(db, faiss_ids) == []
        first, second = db.execute(
            "select id from passages where article_id = (select min(article_id) from passages) order by id limit 2"
        ).fetchall()
        with db.conn:  # two passages of one article in one group, and a member that is no passage
            db.execute(
                "insert or replace into passage_groups (passage_id, group_id) values (?, ?), (?, ?), (?, ?)",
                [first[0] + 10**9, 1, first[0], 777, second[0], 777],
            )
        problems = store.integrity_problems(db, faiss_ids)
    finally:
        db.close()
    assert any("not passages" in p for p in problems)
    assert any("two passages of one article" in p for p in problems)
