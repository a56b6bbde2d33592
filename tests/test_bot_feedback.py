"""👍 / 👎 under answers, the answer log in bot-state.sqlite (in the state directory), /stats and `bot.py stats`:
the real Application over the fake Bot API, real SQLite files, `bot.py stats` through its main(argv)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import Exit, keys, shown, write_config

from index.publish import current_version
from loopback.fake_telegram import Call, InProcessBot, Payloads, parse_html, run_bot, sent
from settings import Config, load_config
from telegram_bot import render
from telegram_bot.feedback import Answered, AnswerLog
from telegram_bot.i18n import t
from telegram_bot.pipeline import Kind
from telegram_bot.statefile import FILE_NAME

QUESTION = "断卡行动打掉了多少个犯罪团伙？"
OFF_TOPIC_ZH = "推荐一部好看的电影"
OFF_TOPIC_EN = "quantum chromodynamics lattice"
ADMIN = 99
GROUP = -100777
os.environ.setdefault("PTB_TIMEDELTA", "1")


@pytest.fixture
def config_file(default_index: Config, tmp_path: Path) -> Callable[..., Path]:
    """A config over the shared default index, with its own state directory."""

    def make(**telegram: Any) -> Path:
        telegram.setdefault("admins", [ADMIN])
        telegram.setdefault("user_rate", 100)  # one admin asks a lot here: not a flood test
        corpus, index = default_index.corpus.dir, default_index.index.dir
        return write_config(tmp_path / "config.toml", corpus=corpus, index=index, telegram=telegram)

    return make


def live_version(config_path: Path) -> str:
    version = current_version(load_config(config_path).index.dir)
    assert version is not None
    return version.name


def state_rows(config_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(load_config(config_path).telegram.state_dir / FILE_NAME) as conn:
        return conn.execute(sql).fetchall()


# ---------------------------------------------------------------- votes
def test_votes_are_stored_with_the_answer_and_a_second_press_changes_them(config_file: Callable[..., Path]) -> None:
    config = config_file()
    popups: list[str] = []
    answers: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        answers.extend(sent(await bot.feed(p.message(QUESTION))))
        answers.extend(sent(await bot.feed(p.mention(QUESTION, chat_id=GROUP, user_id=21))))
        private, group = answers
        for data, message, user in (
            (keys(private)["👍"], shown(private, p), 1001),
            (keys(private)["👎"], shown(private, p), 1001),  # changes the vote
            (keys(group)["👍"], shown(group, p), 21),
            (keys(group)["👍"], shown(group, p), 22),  # one vote per user
        ):
            calls = await bot.feed(p.callback(data, message=message, user_id=user))
            popups.extend(c.params["text"] for c in sent(calls, "answerCallbackQuery"))

    run_bot(load_config(config), scenario)
    assert popups == [t("zh", "vote_thanks")] * 4
    for answer in answers:
        assert list(keys(answer)) == ["更多", "上下文", "来源", "👍", "👎"]
        assert all(len(data.encode()) <= 64 for data in keys(answer).values())
        assert answer.params["reply_markup"]["inline_keyboard"][1] == [
            {"text": "👍", "callback_data": keys(answer)["👍"]},
            {"text": "👎", "callback_data": keys(answer)["👎"]},
        ]
    logged = state_rows(config, "select id, question, kind, chat_type, version, passages, ms from answers order by id")
    assert [(q, k, c) for _, q, k, c, _, _, _ in logged] == [
        (QUESTION, "answer", "private"),
        (QUESTION, "answer", "supergroup"),
    ]
    version = live_version(config)
    top_passage = int(keys(answers[0])["上下文"].split(":")[2])
    for _, _, _, _, logged_version, passages, ms in logged:
        assert logged_version == version and ms >= 0
        ids = [p["id"] for p in json.loads(passages)]
        assert len(ids) == 3 and ids[0] == top_passage
        assert all("¶" in p["citation"] for p in json.loads(passages))
    first, second = (row[0] for row in logged)
    votes = state_rows(config, "select answer_id, user_id, up from votes order by answer_id, user_id")
    assert votes == [(first, 1001, 0), (second, 21, 1), (second, 22, 1)]


def test_more_keeps_the_vote_buttons_of_the_question(config_file: Callable[..., Path]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        [answer] = sent(await bot.feed(p.message(QUESTION)))
        calls.append(answer)
        calls.extend(await bot.feed(p.callback(keys(answer)["更多"], message=shown(answer, p), user_id=1001)))

    run_bot(load_config(config_file()), scenario)
    answer, *rest = calls
    [edit] = sent(rest, "editMessageText")
    assert keys(edit)["👍"] == keys(answer)["👍"] and keys(edit)["👎"] == keys(answer)["👎"]


def test_weak_matches_get_votes_help_and_inline_results_do_not(config_file: Callable[..., Path]) -> None:
    config = config_file()
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(OFF_TOPIC_ZH)))
        calls.extend(await bot.feed(p.message("你好")))
        calls.extend(await bot.feed(p.inline(QUESTION, user_id=31)))

    run_bot(load_config(config), scenario)
    weak, greeting = sent(calls)
    assert list(keys(weak)) == ["上下文", "来源", "👍", "👎"]
    assert not keys(greeting)
    [inline] = sent(calls, "answerInlineQuery")
    assert inline.params["results"] and all("reply_markup" not in r for r in inline.params["results"])
    assert state_rows(config, "select question, kind from answers") == [(OFF_TOPIC_ZH, "weak")]


@pytest.mark.parametrize(
    "forge",
    [
        lambda data: data.replace(data.split(":")[2], "AAAAAAAA"),  # another key: not this answer's
        lambda data: "v:" + str(int(data.split(":")[1]) + 1) + data[data.index(":", 2) :],  # no such answer
        lambda data: data[:-4] + ":x:z",  # neither up nor down
        lambda data: "v:" + "9" * 20 + ":AAAAAAAA:u:z",
        lambda data: "v:1:AAAAAAAA:u:z'; drop table votes;--",
    ],
)
def test_forged_vote_data_gets_the_polite_popup_and_counts_nothing(
    config_file: Callable[..., Path], forge: Callable[[str], str]
) -> None:
    config = config_file()
    popups: list[str] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        [answer] = sent(await bot.feed(p.message(QUESTION)))
        press = p.callback(forge(keys(answer)["👍"]), message=shown(answer, p), user_id=1001, lang="en")
        calls = await bot.feed(press)
        popups.extend(c.params["text"] for c in sent(calls, "answerCallbackQuery"))
        assert not sent(calls)

    run_bot(load_config(config), scenario)
    assert popups in ([t("zh", "invalid_button")], [t("en", "invalid_button")])
    assert state_rows(config, "select count(*) from votes") == [(0,)]


# ---------------------------------------------------------------- /stats
async def _ask_and_vote(bot: InProcessBot, p: Payloads) -> None:
    """Five logged questions by the admin (2 answered, 3 not covered), one 👎 and one 👍,
    plus a greeting and an inline query, which are not logged."""
    first = sent(await bot.feed(p.message(QUESTION, chat_id=ADMIN)))[0]
    second = sent(await bot.feed(p.message(QUESTION, chat_id=ADMIN)))[0]
    for question in (OFF_TOPIC_ZH, OFF_TOPIC_ZH, OFF_TOPIC_EN, "hi"):
        await bot.feed(p.message(question, chat_id=ADMIN, lang="en"))
    await bot.feed(p.inline(OFF_TOPIC_ZH, user_id=ADMIN))
    await bot.feed(p.callback(keys(first)["👎"], message=shown(first, p), user_id=ADMIN))
    await bot.feed(p.callback(keys(second)["👍"], message=shown(second, p), user_id=ADMIN))


def test_stats_for_admins_in_private_refused_to_others(config_file: Callable[..., Path]) -> None:
    texts: dict[str, list[str]] = {}

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await _ask_and_vote(bot, p)
        for who, update in (
            ("admin", p.message("/stats", chat_id=ADMIN, lang="en")),
            ("other", p.message("/stats", chat_id=5, lang="en")),
            ("group", p.message("/stats", chat_id=GROUP, user_id=ADMIN, lang="en")),
        ):
            replies = sent(await bot.feed(update))
            texts[who] = [parse_html(c.params["text"]).text for c in replies]

    run_bot(load_config(config_file()), scenario)
    assert texts["other"] == [t("en", "admins_only")]
    assert texts["group"] == [t("en", "stats_private")]
    [report] = texts["admin"]
    today = datetime.now(UTC).date().isoformat()  # the bot ran just now
    lines = report.split("\n")
    assert lines[0] == "Statistics, last 7 days (UTC)"
    assert len([line for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)]) == 7
    assert re.search(rf"^{today}\s+5\s+▇{{12}}$", report, re.MULTILINE)
    assert "Answered: 2 of 5 (40%) · unsure: 0 (0%) · not covered: 3 (60%)" in lines
    assert "Votes: 👍 1 · 👎 1" in lines
    assert re.search(r"^Time to answer: p50 \d+ ms · p95 \d+ ms$", report, re.MULTILINE)
    top = lines[lines.index(t("en", "stats_top")) + 1 :]
    assert top == [
        f"1. {OFF_TOPIC_ZH} — 2× (unsure 0, not covered 2, 👎 0)",
        f"2. {QUESTION} — 1× (unsure 0, not covered 0, 👎 1)",
        f"3. {OFF_TOPIC_EN} — 1× (unsure 0, not covered 1, 👎 0)",
    ]


def test_unsure_answers_are_quoted_under_a_caveat_and_listed_for_curation(config_file: Callable[..., Path]) -> None:
    """With a sure threshold no answer reaches, the answerable question is quoted under the
    caveat, and /stats counts it as unsure and lists it among the questions to add articles for."""
    config = load_config(config_file())
    config = replace(config, retrieval=replace(config.retrieval, sure_threshold=1000.0))
    texts: dict[str, str] = {}

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        [answer] = sent(await bot.feed(p.message(QUESTION, chat_id=ADMIN, lang="en")))
        texts["answer"] = parse_html(answer.params["text"]).text
        await bot.feed(p.message(OFF_TOPIC_ZH, chat_id=ADMIN, lang="en"))
        [report] = sent(await bot.feed(p.message("/stats", chat_id=ADMIN, lang="en")))
        texts["stats"] = parse_html(report.params["text"]).text

    run_bot(config, scenario)
    assert texts["answer"].startswith(t("zh", "unsure_header")) and "170余个" in texts["answer"]
    lines = texts["stats"].split("\n")
    assert "Answered: 0 of 2 (0%) · unsure: 1 (50%) · not covered: 1 (50%)" in lines
    top = lines[lines.index(t("en", "stats_top")) + 1 :]
    assert top == [
        f"1. {QUESTION} — 1× (unsure 1, not covered 0, 👎 0)",
        f"2. {OFF_TOPIC_ZH} — 1× (unsure 0, not covered 1, 👎 0)",
    ]


# ---------------------------------------------------------------- python bot.py stats
@pytest.fixture
def bot_stats(cli: Callable[..., Exit], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Exit]:
    """`python bot.py <args>` in this process, in an English locale."""
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    return lambda *args: cli("bot", *args)


def test_bot_py_stats_and_export_read_what_a_bot_run_left(
    config_file: Callable[..., Path], tmp_path: Path, bot_stats: Callable[..., Exit]
) -> None:
    config = config_file()
    run_bot(load_config(config), _ask_and_vote)

    result = bot_stats("stats", "--config", str(config))
    assert result.code == 0, result.err
    assert "Answered: 2 of 5 (40%) · unsure: 0 (0%) · not covered: 3 (60%)" in result.out
    assert "Votes: 👍 1 · 👎 1" in result.out
    assert f"1. {OFF_TOPIC_ZH} — 2× (unsure 0, not covered 2, 👎 0)" in result.out
    assert "<" not in result.out and "\x1b" not in result.out  # plain text, no HTML, no colour
    assert bot_stats("--config", str(config), "stats").out == result.out  # --config either side

    out = tmp_path / "curate.jsonl"
    result = bot_stats("stats", "--config", str(config), "--export", str(out))
    assert result.code == 0 and "wrote 4 " in result.out
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["question"], r["kind"], r["vote"]) for r in records] == [
        (QUESTION, "answer", {"up": 0, "down": 1}),
        (OFF_TOPIC_ZH, "weak", {"up": 0, "down": 0}),
        (OFF_TOPIC_ZH, "weak", {"up": 0, "down": 0}),
        (OFF_TOPIC_EN, records[3]["kind"], {"up": 0, "down": 0}),
    ]
    assert records[3]["kind"] in ("weak", "nothing")
    version = live_version(config)
    for record in records:
        assert record["version"] == version and record["lang"] in ("zh", "en")
        assert datetime.fromisoformat(record["date"]).tzinfo is not None
        assert all(isinstance(p["id"], int) and "¶" in p["citation"] for p in record["passages"])
    assert len(records[0]["passages"]) == 3 and len(records[1]["passages"]) == 1


def test_bot_py_stats_errors_are_one_line(
    config_file: Callable[..., Path], tmp_path: Path, bot_stats: Callable[..., Exit]
) -> None:
    config = config_file()
    assert "no bot state at" in bot_stats("stats", "--config", str(config)).one_clear_error()
    assert not (load_config(config).telegram.state_dir / FILE_NAME).exists()  # a reader creates no state file

    state = load_config(config).telegram.state_dir / FILE_NAME
    state.write_bytes(b"not a database at all" * 50)
    assert "cannot read" in bot_stats("stats", "--config", str(config)).one_clear_error()
    assert state.read_bytes() == b"not a database at all" * 50  # the bot's file is not moved aside by a reader

    state.unlink()
    run_bot(load_config(config), _ask_and_vote)
    unwritable = tmp_path / "no-such-dir" / "out.jsonl"
    assert "cannot write" in bot_stats("stats", "--config", str(config), "--export", str(unwritable)).one_clear_error()

    memory_only = config_file(question_retention_days=0)
    assert "keeps nothing on disk" in bot_stats("stats", "--config", str(memory_only)).one_clear_error()


# ---------------------------------------------------------------- the answer log itself
def entry(question: str, kind: Kind = Kind.WEAK, ms: int = 100) -> Answered:
    return Answered(question, "zh", kind, "private", "v1", ((7, "— 《日报》2021-06-10 · ¶7"),), ms)


def test_answers_and_votes_are_kept_only_for_the_retention_period(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / FILE_NAME
    log = AnswerLog(path, retention_days=7, clock=lambda: now[0])
    old = log.record(entry("一周前的问题"))
    assert old is not None and log.vote(*old, user_id=1, up=False)
    now[0] += 6 * 86_400
    recent = log.record(entry("昨天的问题"))
    assert recent is not None and log.vote(*recent, user_id=1, up=False)
    now[0] += 1.5 * 86_400
    assert not log.vote(*old, user_id=2, up=True)  # expired: a vote on it counts nothing
    assert [f.question for f in log.stats(now[0]).top] == ["昨天的问题"]
    log.close()
    AnswerLog(path, retention_days=7, clock=lambda: now[0]).close()  # purges on open
    with sqlite3.connect(path) as conn:
        assert conn.execute("select question from answers").fetchall() == [("昨天的问题",)]
        assert conn.execute("select answer_id from votes").fetchall() == [(recent[0],)]


def test_zero_retention_keeps_the_answer_log_in_memory_only(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    log = AnswerLog(path, retention_days=0)
    logged = log.record(entry("不落盘"))
    assert logged is not None and log.vote(*logged, user_id=1, up=True)
    assert log.stats(datetime.now(UTC).timestamp()).up == 1
    log.close()
    assert log.path is None and not path.exists()


def test_stats_count_days_shares_and_percentiles(tmp_path: Path) -> None:
    day = 86_400.0
    monday = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    now = [monday]
    log = AnswerLog(tmp_path / FILE_NAME, retention_days=30, clock=lambda: now[0])
    for ms in range(1, 101):  # 1..100 ms: 25 on each of the four days up to Monday noon
        now[0] = monday - 3 * day + (ms - 1) // 25 * day + 43_200
        kind = Kind.ANSWER if ms % 4 else Kind.NOTHING  # every 4th not covered; the last one too
        log.record(entry("What is OTC?" if ms % 8 else "what is otc?", kind, ms))
    now[0] = monday - 20 * day  # outside the 7 days, still kept
    log.record(entry("上个月的问题", Kind.WEAK, 10_000))
    stats = log.stats(monday + 43_200)
    assert stats.days == (
        ("2026-11-24", 0),
        ("2026-11-25", 0),
        ("2026-11-26", 0),
        ("2026-11-27", 25),
        ("2026-11-28", 25),
        ("2026-11-29", 25),
        ("2026-11-30", 25),
    )
    assert (stats.questions, stats.answered, stats.not_covered) == (100, 75, 25)
    # Linear interpolation between closest ranks: p50 of 1..100 is 50.5, p95 is 95 + 0.05.
    assert stats.p50_ms == pytest.approx(50.5) and stats.p95_ms == pytest.approx(95.05)
    [otc] = stats.top  # one question however it is capitalised; the newest spelling shown
    assert (otc.question, otc.times, otc.not_covered, otc.down) == ("What is OTC?", 25, 25, 0)
    log.close()

    single = AnswerLog(None, retention_days=0, clock=lambda: monday)
    single.record(entry("只有一个", ms=42))
    assert (single.stats(monday).p50_ms, single.stats(monday).p95_ms) == (42.0, 42.0)
    assert single.stats(monday + 30 * day).p50_ms is None
    empty = render.to_text(render.stats_doc("en", single.stats(monday + 30 * day)))
    assert empty == "Statistics, last 7 days (UTC)\nNo questions in this period."
    single.close()


def test_the_stats_message_is_valid_html_within_the_limit(tmp_path: Path) -> None:
    log = AnswerLog(None, retention_days=0, clock=lambda: 1_800_000_000.0)
    for i in range(30):
        for _ in range(i % 3 + 1):
            log.record(entry(f"<b>问题{i}</b> & " + "很长" * 400))
    stats = log.stats(1_800_000_000.0)
    log.close()
    html = render.to_html(render.stats_doc("zh", stats))
    parsed = parse_html(html)
    assert parsed.length <= 4096 and set(parsed.tags) == {"b"}
    assert len(stats.top) == 10 and "<b>问题2</b> &" in parsed.text
