"""The bot's state apart from the index: `[telegram] state_dir` (0700, files 0600), retention on
a timer and for set-aside copies, the move from the old place beside the index, `bot.py stats
--export`, and stored questions bounded however long a conversation goes. The real Application
over the fake Bot API, real SQLite files, `bot.main` in process."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import keys, shown, write_config

from index.build import build_index
from loopback.fake_telegram import InProcessBot, Payloads, parse_html, run_bot, sent
from retrieval.conversation import Rewritten, within
from settings import Config, load_config
from telegram_bot.components.retention import JOB_NAME
from telegram_bot.feedback import Answered, AnswerLog
from telegram_bot.i18n import t
from telegram_bot.pipeline import Kind
from telegram_bot.questionstore import QuestionStore
from telegram_bot.state import release_freed_memory
from telegram_bot.statefile import FILE_NAME

QUESTION = "断卡行动打掉了多少个犯罪团伙？"
OFF_TOPIC = "推荐一部好看的电影"
DAY = 86_400
os.environ.setdefault("PTB_TIMEDELTA", "1")


@pytest.fixture
def corpus_and_index(default_index: Config) -> tuple[Path, Path]:
    """The shared default index of the default corpus; the bot only reads it."""
    return Path(default_index.corpus.dir), Path(default_index.index.dir)


@pytest.fixture
def config_file(corpus_and_index: tuple[Path, Path], tmp_path: Path) -> Callable[..., Path]:
    """A config with the state in tmp_path/state (`index`: another index directory)."""
    corpus, index = corpus_and_index

    def make(index_dir: Path = index, **telegram: Any) -> Path:
        telegram.setdefault("user_rate", 100)  # one user asks a lot here: not a flood test
        return write_config(tmp_path / "config.toml", corpus=corpus, index=index_dir, telegram=telegram)

    return make


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Umask 0: whatever is private is so because the code made it so."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def ask_and_vote(bot_: InProcessBot, p: Payloads) -> None:
    [answer] = sent(await bot_.feed(p.message(QUESTION)))
    await bot_.feed(p.callback(keys(answer)["👍"], message=shown(answer, p), user_id=1001))


# ---------------------------------------------------------------- the directory and its files
def test_state_is_private_and_survives_deleting_the_index(
    config_file: Callable[..., Path], corpus_and_index: tuple[Path, Path], tmp_path: Path, permissive_umask: None
) -> None:
    index = tmp_path / "index"
    shutil.copytree(corpus_and_index[1], index)
    config = load_config(config_file(index))
    state_dir = config.telegram.state_dir
    assert state_dir == tmp_path / "state" and not state_dir.exists()
    modes: dict[str, int] = {}

    async def scenario(bot_: InProcessBot, p: Payloads) -> None:
        await ask_and_vote(bot_, p)
        modes.update({f.name: mode(f) for f in state_dir.iterdir()})  # while the bot runs: with -wal, -shm

    run_bot(config, scenario)
    assert mode(state_dir) == 0o700
    assert modes == {FILE_NAME: 0o600, f"{FILE_NAME}-wal": 0o600, f"{FILE_NAME}-shm": 0o600}
    assert not list(index.glob(f"{FILE_NAME}*"))

    shutil.rmtree(index)  # "always safe": the votes are elsewhere
    build_index(config)
    run_bot(config, ask_and_vote)
    assert rows(state_dir / FILE_NAME, "select count(*), sum(up) from votes") == [(2, 2)]
    assert all(mode(f) == 0o600 for f in state_dir.iterdir())


def test_a_corrupt_state_file_is_set_aside_privately(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "state" / FILE_NAME
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)
    os.chmod(path, 0o644)
    store = QuestionStore(path)
    token = store.put("还能用吗？", "zh")
    aside = path.with_name(FILE_NAME + ".broken")
    assert aside.read_bytes() == b"not a database" * 100 and mode(aside) == 0o600
    assert store.get(token) == ("还能用吗？", "zh")
    assert {f.name: mode(f) for f in path.parent.iterdir()} == {
        FILE_NAME: 0o600,
        f"{FILE_NAME}-wal": 0o600,
        f"{FILE_NAME}-shm": 0o600,
        f"{FILE_NAME}.broken": 0o600,
    }
    store.close()


# ---------------------------------------------------------------- retention
def test_a_quiet_bot_deletes_expired_rows_and_copies_on_its_timer(config_file: Callable[..., Path]) -> None:
    config = load_config(config_file())
    path = config.telegram.state_dir / FILE_NAME
    copy = path.with_name(FILE_NAME + ".broken")
    counts = "select (select count(*) from answers), (select count(*) from votes), (select count(*) from questions)"
    seen: list[list[tuple[Any, ...]]] = []

    async def scenario(bot_: InProcessBot, p: Payloads) -> None:
        await ask_and_vote(bot_, p)
        [job] = bot_.app.job_queue.get_jobs_by_name(JOB_NAME)
        assert job.job.trigger.interval.total_seconds() <= 600
        copy.write_bytes(b"set aside yesterday")
        os.utime(copy, (time.time() - DAY, time.time() - DAY))
        await job.run(bot_.app)
        seen.append(rows(path, counts))
        assert copy.exists()  # its rows may still be within the retention

        # Eight days without a question: nothing writes, only the timer runs.
        conn = sqlite3.connect(path)
        with conn:
            for table in ("answers", "votes", "questions"):
                conn.execute(f"update {table} set created = created - ?", [8 * DAY])
        conn.close()
        os.utime(copy, (time.time() - 8 * DAY, time.time() - 8 * DAY))
        await job.run(bot_.app)
        seen.append(rows(path, counts))

    run_bot(config, scenario)
    assert seen == [[(1, 1, 1)], [(0, 0, 0)]]
    assert not copy.exists()


def test_memory_only_state_schedules_no_timer_and_writes_nothing(config_file: Callable[..., Path]) -> None:
    config = load_config(config_file(question_retention_days=0))
    jobs: list[int] = []

    async def scenario(bot_: InProcessBot, p: Payloads) -> None:
        await ask_and_vote(bot_, p)
        jobs.append(len(bot_.app.job_queue.jobs()))

    run_bot(config, scenario)
    assert jobs == [0]
    assert not list(config.telegram.state_dir.glob(f"{FILE_NAME}*"))


# ---------------------------------------------------------------- the old place beside the index
def test_a_state_file_beside_the_index_moves_over_once_with_its_wal(
    config_file: Callable[..., Path], corpus_and_index: tuple[Path, Path], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(corpus_and_index[1], index)
    # What an older bot left: votes still in the WAL (another connection kept it from being
    # checkpointed), copied as a set while nothing wrote.
    scratch = tmp_path / "scratch" / FILE_NAME
    scratch.parent.mkdir()
    old = AnswerLog(scratch)
    holder = sqlite3.connect(scratch)
    holder.execute("select count(*) from sqlite_master").fetchall()  # a reader of the WAL
    logged = old.record(Answered("旧问题", "zh", Kind.ANSWER, "private", "v0", ((1, "¶1"),), 5))
    assert logged is not None and old.vote(*logged, user_id=7, up=False)
    old.close()
    for name in (FILE_NAME, f"{FILE_NAME}-wal", f"{FILE_NAME}-shm"):
        shutil.copy(scratch.with_name(name), index / name)
        os.chmod(index / name, 0o644)
    holder.close()
    assert (index / f"{FILE_NAME}-wal").stat().st_size > 0
    config = load_config(config_file(index))
    state = config.telegram.state_dir / FILE_NAME

    run_bot(config, ask_and_vote)
    assert not list(index.glob(f"{FILE_NAME}*"))
    assert rows(state, "select a.question, v.up from votes v join answers a on a.id = v.answer_id order by a.id") == [
        ("旧问题", 0),
        (QUESTION, 1),
    ]
    assert all(mode(f) == 0o600 for f in state.parent.iterdir())

    (index / FILE_NAME).write_bytes(b"an older copy restored by hand")
    run_bot(config, ask_and_vote)  # the state dir has one: the old place is not used again
    assert (index / FILE_NAME).read_bytes() == b"an older copy restored by hand"
    assert rows(state, "select count(*) from votes") == [(3,)]


# ---------------------------------------------------------------- bot.py stats --export
def test_export_is_private_honours_retention_and_never_overwrites_without_force(
    config_file: Callable[..., Path],
    tmp_path: Path,
    bot_main: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
    permissive_umask: None,
) -> None:
    config = config_file(question_retention_days=7)

    async def scenario(bot_: InProcessBot, p: Payloads) -> None:
        await bot_.feed(p.message(OFF_TOPIC))
        conn = sqlite3.connect(load_config(config).telegram.state_dir / FILE_NAME)
        with conn:  # asked nine days ago: past the retention, never exported
            conn.execute("update answers set created = created - ?", [9 * DAY])
        conn.close()
        await bot_.feed(p.message(QUESTION))  # answered, no 👎: not for curation
        await bot_.feed(p.message("quantum chromodynamics lattice", lang="en"))

    run_bot(load_config(config), scenario)
    out = tmp_path / "curate.jsonl"
    assert bot_main("stats", "--config", str(config), "--export", str(out)) == 0
    assert "wrote 1 " in capsys.readouterr().out
    [record] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert record["question"] == "quantum chromodynamics lattice"
    assert mode(out) == 0o600

    out.write_text("the curator's notes\n", encoding="utf-8")
    os.chmod(out, 0o644)
    assert bot_main("stats", "--config", str(config), "--export", str(out)) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {out} exists (--force replaces it)" and not captured.out
    assert out.read_text(encoding="utf-8") == "the curator's notes\n"

    assert bot_main("stats", "--config", str(config), "--export", str(out), "--force") == 0
    assert json.loads(out.read_text(encoding="utf-8"))["question"] == "quantum chromodynamics lattice"
    assert mode(out) == 0o600


def test_stats_reads_the_state_dir_and_creates_no_state_file(
    config_file: Callable[..., Path], bot_main: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file()
    state = load_config(config).telegram.state_dir / FILE_NAME
    assert bot_main("stats", "--config", str(config)) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: no bot state at {state}")
    assert not state.exists()
    run_bot(load_config(config), ask_and_vote)
    assert bot_main("--config", str(config), "stats") == 0
    assert "Votes: 👍 1 · 👎 0" in capsys.readouterr().out


# ---------------------------------------------------------------- a long conversation
def test_stored_questions_never_grow_past_the_limit_and_more_still_pages(config_file: Callable[..., Path]) -> None:
    config = load_config(config_file(max_question_chars=500))
    long_question = ("请问在二〇二一年的这次专项整治当中，" * 40)[:465] + QUESTION  # 480 characters
    pages: list[str] = []

    async def scenario(bot_: InProcessBot, p: Payloads) -> None:
        last = None
        for text in [long_question] + ["什么时候？"] * 20:  # bare follow-ups: each adds the previous question
            [last] = sent(await bot_.feed(p.message(text)))
        assert last is not None
        calls = await bot_.feed(p.callback(keys(last)["更多"], message=shown(last, p), user_id=1001))
        pages.extend(parse_html(c.params["text"]).text for c in sent(calls, "editMessageText"))

    run_bot(config, scenario)
    path = config.telegram.state_dir / FILE_NAME
    logged = [q for (q,) in rows(path, "select question from answers order by id")]
    stored = [q for (q,) in rows(path, "select question from questions order by seq")]
    assert len(logged) == 21 and logged == stored
    assert len(logged[0]) == 480 and max(len(q) for q in logged) == 500
    assert all(q.startswith(long_question[:400]) and q.endswith("什么时候？") for q in logged[1:])
    [page] = pages  # the follow-up's second page, from the stored (bounded) question
    assert page.startswith(t("zh", "more_header", start=4, end=6))


@pytest.mark.parametrize(
    ("searched", "question", "limit", "expected"),
    [
        # bare: the previous question + the new one; the previous one gives way from its end
        ("What did the People's Bank of China say about Huobi? When?", "When?", 27, "What did the People's When?"),
        ("What did the Peoples Bank say? When?", "When?", 20, "What did the When?"),  # no half a word
        ("青海省工信厅要求什么？ 什么时候？", "什么时候？", 14, "青海省工信厅要求 什么时候？"),
        # attached topic: the question first, the topic cut
        ("第二条是什么？ (青海省工信厅 挖矿)", "第二条是什么？", 14, "第二条是什么？ (青海省工信"),
        # a pronoun replaced: the question itself rewritten, cut at the limit
        ("青海省工业和信息化厅怎么看碳中和？", "他怎么看碳中和？", 14, "青海省工业和信息化厅怎么看碳"),
        ("short enough", "short enough", 14, "short enough"),
    ],
)
def test_a_follow_up_is_cut_to_the_limit_keeping_the_users_words(
    searched: str, question: str, limit: int, expected: str
) -> None:
    cut = within(Rewritten(searched, True, "bare"), question, limit)
    assert cut.text == expected and cut.used_context


def _rss_mb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_an_ingest_job_freed_goes_back_to_the_system() -> None:
    """What the bot runs after every add, removal and feed pass: heap freed between blocks
    still in use (what a build leaves) is returned, not kept as resident memory."""
    before = _rss_mb()
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB through malloc, not Python's arenas
    kept = blocks[::100]
    del blocks
    freed = _rss_mb()
    assert freed - before > 100
    assert release_freed_memory() is True
    assert _rss_mb() - before < (freed - before) / 2
    assert len(kept) == 500
