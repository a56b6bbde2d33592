"""Handler tests: real PTB objects (`Update.de_json` on real-looking payloads) driven through
the real Application, with a recording `BaseRequest` standing in for Telegram."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import QUESTION, assert_valid_answer_html, buttons, copy_index, write_config

from index.build import build_index
from loopback.fake_telegram import (
    BOT_USER,
    TOKEN,
    Call,
    FakeTelegram,
    InProcessBot,
    Payloads,
    parse_html,
    run_bot,
    sent,
    utf16_len,
)
from settings import Config, load_config
from telegram_bot.i18n import t
from telegram_bot.state import STATE_KEY, BotState

EN_QUESTION = "What happened to the bank cards of OTC merchants?"
OFF_TOPIC_ZH = "推荐一部好看的电影"
OFF_TOPIC_EN = "quantum chromodynamics lattice"
GROUP = -100555
os.environ.setdefault("PTB_TIMEDELTA", "1")  # as bot.py does: no deprecation warning on each 429


@pytest.fixture
def bot_config(default_index: Config, tmp_path: Path) -> Callable[..., Config]:
    """A config over the shared default index, with this test's own state and `[telegram]` settings."""

    def make(**telegram: Any) -> Config:
        corpus, index = default_index.corpus.dir, default_index.index.dir
        return load_config(write_config(tmp_path / "config.toml", corpus=corpus, index=index, telegram=telegram))

    return make


# ---------------------------------------------------------------- answers
def test_private_chinese_question_gets_quoted_cited_answer_with_buttons(
    bot_config: Callable[..., Config],
) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION)))

    run_bot(bot_config(), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    html = answer.params["text"]
    assert html.count("<blockquote>") == 3
    assert "<b>" in html
    assert "170余个" in text
    assert "《区块链日报》2021-06-10" in text and "¶28" in text
    assert "reply_parameters" not in answer.params  # private chats: no quoting
    labels = [b["text"] for b in buttons(answer)]
    assert labels == ["更多", "上下文", "来源", "👍", "👎"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons(answer))


@pytest.mark.parametrize(
    ("question", "language_code", "expected", "unexpected"),
    [
        (EN_QUESTION, "en", "From the articles", "文章原文摘录"),
        (EN_QUESTION, "zh-hans", "From the articles", "文章原文摘录"),  # the question's script wins
        (QUESTION, "en", "文章原文摘录", "From the articles"),
        (OFF_TOPIC_EN, "en", "The articles do not cover this.", "这些文章没有涉及"),
    ],
)
def test_labels_follow_the_users_language_quotes_stay_chinese(
    bot_config: Callable[..., Config], question: str, language_code: str, expected: str, unexpected: str
) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(question, lang=language_code)))

    run_bot(bot_config(), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    assert expected in text and unexpected not in text
    quote = answer.params["text"].split("<blockquote>")[1]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in quote)


def test_unanswered_question_says_so_and_shows_one_weak_match(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(OFF_TOPIC_ZH)))

    run_bot(bot_config(), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    assert text.startswith("这些文章没有涉及这个问题。")
    assert "弱匹配" in text
    assert answer.params["text"].count("<blockquote>") == 1
    assert [b["text"] for b in buttons(answer)] == ["上下文", "来源", "👍", "👎"]  # no "More" under a weak match


@pytest.mark.parametrize("greeting", ["你好", "hi", "Thanks!", "👍", "hello bot", "谢谢啊"])
def test_greetings_get_the_short_help_not_a_quote(bot_config: Callable[..., Config], greeting: str) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(greeting)))

    run_bot(bot_config(), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    assert "<blockquote>" not in answer.params["text"]
    assert "/help" in text
    assert not buttons(answer)


def test_overlong_question_is_truncated_before_retrieval(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION + "啊" * 6000)))

    run_bot(bot_config(max_question_chars=500), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    assert "<blockquote>" in answer.params["text"]
    assert "只使用了前 500 个字符" in text


def test_hostile_html_in_articles_and_questions_is_escaped(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "hostile.md").write_text(
        "---\n"
        'title: "<script>alert(1)</script> & <b>Bold</b> &amp; co"\n'
        "source: <i>Evil</i> Daily\n"
        "date: 2021-06-11\n"
        'url: "https://example.com/a?x=1&y=<2>\\"q"\n'
        "---\n\n"
        "矿场<b>关停</b>的消息 & 传闻：<script>steal()</script> 矿工称 a<b 且 c>d，&lt;不是实体&gt;。\n\n"
        "第二段：挖矿企业全部停产整顿 </blockquote> 之后 <a href='x'>链接</a>。\n",
        encoding="utf-8",
    )
    config = load_config(write_config(tmp_path / "c.toml", corpus=corpus, index=tmp_path / "index"))
    build_index(config)
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message("矿场<b>关停</b> & <script>的消息")))
        answer = sent(calls)[-1]
        data = {b["text"]: b["callback_data"] for b in buttons(answer)}
        message = p.bot_message("x", chat_id=1001, message_id=answer.result["message_id"])
        calls.extend(await bot.feed(p.callback(data["来源"], message=message, user_id=1001)))
        calls.extend(await bot.feed(p.callback(data["上下文"], message=message, user_id=1001)))
        calls.extend(await bot.feed(p.message("/sources")))

    run_bot(config, scenario)
    replies = sent(calls)
    assert len(replies) == 4
    for reply in replies:
        assert_valid_answer_html(reply)
        assert "<script>" not in reply.params["text"]
    answer_text = parse_html(replies[0].params["text"]).text
    assert "<script>steal()</script>" in answer_text  # shown literally, as text
    assert "<script>alert(1)</script> & <b>Bold</b>" in answer_text
    assert "&lt;不是实体&gt;" in answer_text
    assert "<a " not in replies[1].params["text"]  # a URL with markup in it is not linked


# ---------------------------------------------------------------- groups
def test_group_is_silent_unless_addressed(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=GROUP, user_id=21)))
        calls.extend(await bot.feed(p.message("@someone_else " + QUESTION, chat_id=GROUP, user_id=21)))

    api = run_bot(bot_config(), scenario)
    assert not sent(calls)
    assert not api.recorded("sendMessage")


def test_group_mention_is_answered_as_a_reply_with_the_mention_stripped(
    bot_config: Callable[..., Config],
) -> None:
    calls: list[Call] = []
    asked: list[int] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=1001)))
        mention = p.mention(QUESTION, chat_id=GROUP, user_id=21)
        asked.append(mention["message"]["message_id"])
        calls.extend(await bot.feed(mention))
        # A mention in the middle of the text, without an entity (typed by hand).
        calls.extend(await bot.feed(p.message(f"请问 @{BOT_USER['username'].upper()} {QUESTION}", chat_id=GROUP)))

    run_bot(bot_config(), scenario)
    private, group, inline_mention = sent(calls)
    assert group.params["reply_parameters"]["message_id"] == asked[0]
    assert int(group.params["chat_id"]) == GROUP
    # The same answer as without the mention: the mention never reached retrieval.
    assert group.params["text"] == private.params["text"]
    assert "<blockquote>" in inline_mention.params["text"]


def test_group_reply_to_the_bot_and_ask_command_are_answered(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        ours = p.bot_message("earlier answer", chat_id=GROUP, message_id=42)
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=GROUP, user_id=21, reply_to=ours)))
        calls.extend(await bot.feed(p.message(f"/ask {QUESTION}", chat_id=GROUP, user_id=21)))
        calls.extend(await bot.feed(p.message(f"/ask@{BOT_USER['username']} {QUESTION}", chat_id=GROUP)))
        calls.extend(await bot.feed(p.message("/ask", chat_id=GROUP, user_id=21)))

    run_bot(bot_config(), scenario)
    replies = sent(calls)
    assert len(replies) == 4
    for reply in replies[:3]:
        assert "170余个" in assert_valid_answer_html(reply)
        assert reply.params["reply_parameters"]["message_id"]
    assert "/ask" in parse_html(replies[3].params["text"]).text  # usage, not a crash


# ---------------------------------------------------------------- commands
def test_start_help_sources_about(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        for command in ("/start", "/help", "/sources", "/about"):
            calls.extend(await bot.feed(p.message(command, lang="en")))

    run_bot(bot_config(), scenario)
    start, help_, sources, about = (assert_valid_answer_html(c) for c in sent(calls))
    assert start == help_
    assert "1 news article(s)" in help_ and "2021-06-10" in help_
    assert "Examples:" in help_ and "@crackdown_test_bot" in help_
    assert "新疆、青海叫停虚拟货币挖矿" in sources and "31 passages" in sources
    assert "Model: test-hash" in about and "Passages: 31" in about and "Index version: v" in about
    for call in sent(calls):
        assert TOKEN not in json.dumps(call.params) and "TEST_ONLY" not in json.dumps(call.params)


# ---------------------------------------------------------------- buttons
def test_more_context_and_source_buttons(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        first = await bot.feed(p.message(QUESTION))
        calls.extend(first)
        answer = sent(first)[0]
        data = {b["text"]: b["callback_data"] for b in buttons(answer)}
        message = p.bot_message(answer.result["text"], chat_id=1001, message_id=answer.result["message_id"])
        for label in ("更多", "上下文", "来源"):
            calls.extend(await bot.feed(p.callback(data[label], message=message, user_id=1001)))
        # "More" past the last result: a popup, the answer stays on screen.
        past_the_end = data["更多"].rsplit(":", 1)[0] + ":48"
        calls.extend(await bot.feed(p.callback(past_the_end, message=message, user_id=1001)))

    run_bot(bot_config(), scenario)
    answer = sent(calls)[0]
    [edit] = sent(calls, "editMessageText")
    assert edit.params["message_id"] == str(answer.result["message_id"])
    more = assert_valid_answer_html(edit)
    assert more.startswith("更多段落（4–6）")
    assert edit.params["text"].count("<blockquote>") == 3
    assert edit.params["text"] != answer.params["text"]
    context, source = sent(calls)[1:]
    context_text = assert_valid_answer_html(context)
    assert context.params["text"].count("<blockquote>") == 3  # before, the passage, after
    assert context_text.startswith("上下文")
    assert context.params["reply_parameters"]["message_id"] == answer.result["message_id"]
    source_text = assert_valid_answer_html(source)
    assert "新疆、青海叫停虚拟货币挖矿" in source_text and "2021-06-10" in source_text and "无链接" in source_text
    popups = [c.params.get("text") for c in sent(calls, "answerCallbackQuery")]
    assert popups == [None, None, None, "这个问题没有更多段落了。"]


def test_more_button_still_works_after_a_restart(bot_config: Callable[..., Config]) -> None:
    """The question behind "More" is stored beside the index, not only in the process."""
    config = bot_config()
    first: list[Call] = []

    async def ask(bot: InProcessBot, p: Payloads) -> None:
        first.extend(await bot.feed(p.message(QUESTION)))

    run_bot(config, ask)
    answer = sent(first)[0]
    more = next(b["callback_data"] for b in buttons(answer) if b["text"] == "更多")
    after: list[Call] = []

    async def press(bot: InProcessBot, p: Payloads) -> None:
        message = p.bot_message(answer.result["text"], chat_id=1001, message_id=answer.result["message_id"])
        after.extend(await bot.feed(p.callback(more, message=message, user_id=1001)))

    run_bot(config, press)  # a new Application: a restarted bot
    [edit] = sent(after, "editMessageText")
    assert assert_valid_answer_html(edit).startswith("更多段落（4–6）")
    assert [c.params.get("text") for c in sent(after, "answerCallbackQuery")] == [None]


@pytest.mark.parametrize(
    "data",
    [
        "garbage",
        "",
        "c:00000000:5:e",  # another index version's button
        "s:zzzzzzzz:5:e",
        "c:00000000:99999999999999999999:e",
        "m:00000000:nosuchtoken:3",  # "More" whose question is gone (restart)
        "x" * 64,
        "c:%s:1:e'; drop table passages;--",
    ],
)
def test_stale_or_forged_callback_data_gets_a_polite_answer(bot_config: Callable[..., Config], data: str) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        message = p.bot_message("old answer", chat_id=1001, message_id=7)
        calls.extend(await bot.feed(p.callback(data, message=message, user_id=1001, lang="en")))

    run_bot(bot_config(), scenario)
    [answer] = sent(calls, "answerCallbackQuery")
    assert answer.params["text"] in (
        "This button is no longer valid. Please ask again.",
        "This button is from an older version of the index. Please ask again.",
    )
    assert not sent(calls)  # no error message, no stray reply


# ---------------------------------------------------------------- inline mode
def test_inline_query_offers_quotes_as_articles(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.inline(QUESTION, user_id=31)))
        calls.extend(await bot.feed(p.inline("", user_id=31)))

    run_bot(bot_config(), scenario)
    full, empty = sent(calls, "answerInlineQuery")
    results = full.params["results"]
    assert 1 <= len(results) <= 3
    assert int(full.params["cache_time"]) <= 60
    for result in results:
        assert result["type"] == "article" and len(result["id"].encode()) <= 64
        content = result["input_message_content"]
        assert content["parse_mode"] == "HTML"
        text = parse_html(content["message_text"]).text
        assert "¶" in text and "<blockquote>" in content["message_text"]
    assert empty.params["results"] == [] and empty.params["button"]["start_parameter"] == "help"


def test_unsure_answers_carry_the_caveat_in_private_groups_and_inline(bot_config: Callable[..., Config]) -> None:
    """An answer below the sure threshold is still quoted, under one plain line in the asker's
    language: in a private chat, in a group, and as inline results."""
    config = bot_config()
    config = replace(config, retrieval=replace(config.retrieval, sure_threshold=1000.0))
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=1001)))
        calls.extend(
            await bot.feed(p.mention("How many gangs did the card-cutting action bust?", chat_id=GROUP, user_id=21))
        )
        calls.extend(await bot.feed(p.inline(QUESTION, user_id=31)))

    run_bot(config, scenario)
    private, group = sent(calls)
    assert assert_valid_answer_html(private).startswith(t("zh", "unsure_header"))
    assert assert_valid_answer_html(group).startswith(t("en", "unsure_header"))
    assert "<blockquote>" in private.params["text"] and "<blockquote>" in group.params["text"]
    [inline] = sent(calls, "answerInlineQuery")
    for result in inline.params["results"]:
        assert result["title"].startswith(t("zh", "inline_unsure") + ": ")
        assert parse_html(result["input_message_content"]["message_text"]).text.startswith(t("zh", "unsure_header"))


# ---------------------------------------------------------------- access and load
def test_allowlist_refuses_others_once(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=42)))
        calls.extend(await bot.feed(p.inline(QUESTION, user_id=7)))  # inline: no results, no refusal used up
        for _ in range(3):
            calls.extend(await bot.feed(p.message(QUESTION, chat_id=7, lang="en")))
        calls.extend(await bot.feed(p.message("/help", chat_id=7, lang="en")))

    run_bot(bot_config(allowlist=[42]), scenario)
    replies = sent(calls)
    assert [int(c.params["chat_id"]) for c in replies] == [42, 7]
    assert "<blockquote>" in replies[0].params["text"]
    assert replies[1].params["text"] == "Sorry, this bot is private."
    [inline] = sent(calls, "answerInlineQuery")
    assert inline.params["results"] == []


def test_flood_from_one_user_is_throttled_without_slowing_others(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        flood = [bot.feed(p.message(f"{QUESTION} {i}", chat_id=501, lang="en")) for i in range(50)]
        await asyncio.gather(*flood, bot.feed(p.message(QUESTION, chat_id=502)))

    api = run_bot(bot_config(user_rate=8, rate_window=600.0), scenario)
    to_flooder = [c.params["text"] for c in api.recorded("sendMessage") if c.params["chat_id"] == "501"]
    notices = [t for t in to_flooder if t.startswith("You are asking very fast")]
    assert len(notices) == 1
    assert sum("<blockquote>" in t for t in to_flooder) == 8
    assert len(to_flooder) == 9
    [other] = [c for c in api.recorded("sendMessage") if c.params["chat_id"] == "502"]
    assert "<blockquote>" in other.params["text"]


def test_thirty_chats_at_once_are_all_answered(bot_config: Callable[..., Config]) -> None:
    questions = [
        QUESTION,
        EN_QUESTION,
        "青海省禁止向挖矿项目提供什么？",
        "哪些交易所的关键词被屏蔽了？",
        "OTC是什么？",
    ]

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        updates = [p.message(questions[i % len(questions)], chat_id=2000 + i) for i in range(30)]
        await asyncio.gather(*(bot.feed(u) for u in updates))

    api = run_bot(bot_config(), scenario)
    answered = {int(c.params["chat_id"]) for c in api.recorded("sendMessage") if "<blockquote>" in c.params["text"]}
    assert answered == set(range(2000, 2030))
    assert len(api.recorded("sendMessage")) == 30


# ---------------------------------------------------------------- Telegram faults
def test_429_on_send_is_retried_after_retry_after(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("sendMessage", status=429, retry_after=1)
        await bot.feed(p.message(QUESTION))

    api = run_bot(bot_config(), scenario)
    attempts = api.recorded("sendMessage", ok=None)
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[0].params["text"] == attempts[1].params["text"]


def test_5xx_resets_and_connect_timeouts_on_send_are_retried(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("sendMessage", status=502)
        bot.api.inject("sendMessage", reset=True)
        bot.api.inject("sendMessage", connect_timeout=True)
        bot.api.inject("sendMessage", status=500)
        await bot.feed(p.message(QUESTION))

    api = run_bot(bot_config(), scenario)
    attempts = api.recorded("sendMessage", ok=None)
    assert [c.fault for c in attempts] == ["502", "reset", "connect_timeout", "500", ""]
    assert attempts[-1].ok and "<blockquote>" in attempts[-1].params["text"]


def test_a_send_that_timed_out_after_it_was_sent_is_not_retried_into_a_duplicate(
    bot_config: Callable[..., Config],
) -> None:
    """PTB's TimedOut on a read means Telegram may have the message already: no retry, and no
    apology that would follow an answer the user may well have received."""

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("sendMessage", timeout=True)
        await bot.feed(p.message(QUESTION))
        await bot.feed(p.message(QUESTION, chat_id=1002))

    api = run_bot(bot_config(), scenario)
    to_first = [c for c in api.recorded("sendMessage", ok=None) if c.params["chat_id"] == "1001"]
    assert [c.fault for c in to_first] == ["timeout"]
    [second] = [c for c in api.recorded("sendMessage") if c.params["chat_id"] == "1002"]
    assert "<blockquote>" in second.params["text"]  # the bot carries on


def test_html_rejected_by_telegram_is_resent_as_plain_text(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("sendMessage", status=400, description="Bad Request: can't parse entities: at byte 42")
        await bot.feed(p.message(QUESTION))

    api = run_bot(bot_config(), scenario)
    rejected, plain = api.recorded("sendMessage", ok=None)
    assert rejected.status == 400 and rejected.params["parse_mode"] == "HTML"
    assert plain.ok and "parse_mode" not in plain.params
    assert "<" not in plain.params["text"] and "170余个" in plain.params["text"]
    assert plain.params["text"] == parse_html(rejected.params["text"]).text


def test_send_failing_after_all_retries_is_logged_and_apologised_for(
    bot_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("sendMessage", status=500, times=5)  # the first reply and all 4 retries
        await bot.feed(p.message(QUESTION, chat_id=1234, lang="en"))
        await bot.feed(p.message(QUESTION, chat_id=1234, lang="en"))  # the bot still works

    api = run_bot(bot_config(), scenario)
    delivered = [c.params["text"] for c in api.recorded("sendMessage")]
    assert delivered[0] == "Sorry, something went wrong while answering. Please try again in a moment."
    assert "<blockquote>" in delivered[1]
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("chat=1234" in r.getMessage() and "after retries" in r.getMessage() for r in failures)


def test_unexpected_errors_reach_the_error_handler_not_the_user(
    bot_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        state = bot.app.bot_data[STATE_KEY]
        assert isinstance(state, BotState)
        state.qa.retriever.close()  # a real fault: the index database goes away under the bot
        await bot.feed(p.message(QUESTION, chat_id=4321, lang="en"))

    api = run_bot(bot_config(), scenario)
    [reply] = api.recorded("sendMessage")
    assert reply.params["text"] == "Sorry, something went wrong while answering. Please try again in a moment."
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "chat=4321" in error.getMessage() and error.exc_info is not None


# ---------------------------------------------------------------- logging
def test_logs_carry_chat_ids_not_message_texts(
    bot_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(p.message(QUESTION, chat_id=8642))
        await bot.feed(p.mention(OFF_TOPIC_ZH, chat_id=GROUP, user_id=8643))

    run_bot(bot_config(), scenario)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "chat=8642" in text and f"chat={GROUP}" in text
    assert QUESTION not in text and OFF_TOPIC_ZH not in text
    assert TOKEN not in text

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="telegram_bot")
    run_bot(bot_config(), scenario)
    assert QUESTION in "\n".join(r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- index updates
def _rebuilt_index(default_index: Config, tmp_path: Path, **telegram: Any) -> tuple[Config, Path]:
    """A copy of the default index the test may publish new versions of."""
    copy = copy_index(default_index, tmp_path)
    corpus = Path(copy.corpus.dir)
    config = load_config(write_config(tmp_path / "c.toml", corpus=corpus, index=copy.index.dir, telegram=telegram))
    return config, corpus


def _publish_new_version(config: Config, corpus: Path) -> None:
    (corpus / "later.md").write_text(
        "---\ntitle: 后续报道\nsource: 测试日报\ndate: 2021-06-20\n---\n\n"
        "四川省全面清退虚拟货币挖矿项目，涉及二十六个矿场。\n",
        encoding="utf-8",
    )
    assert build_index(config).published


def test_admin_reload_switches_index_and_old_buttons_are_stale(default_index: Config, tmp_path: Path) -> None:
    config, corpus = _rebuilt_index(default_index, tmp_path, admins=[99])

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        answer = sent(await bot.feed(p.message(QUESTION, chat_id=99, lang="en")))[0]
        data = {b["text"]: b["callback_data"] for b in buttons(answer)}
        message = p.bot_message("old", chat_id=99, message_id=answer.result["message_id"])
        await asyncio.to_thread(_publish_new_version, config, corpus)
        await bot.feed(p.message("/reload", chat_id=5, lang="en"))  # not an admin
        # Questions keep being answered while the admin reloads.
        await asyncio.gather(
            bot.feed(p.message("/reload", chat_id=99, lang="en")),
            *(bot.feed(p.message(QUESTION, chat_id=300 + i)) for i in range(5)),
        )
        await bot.feed(p.callback(data["上下文"], message=message, user_id=99, lang="en"))
        await bot.feed(p.callback(data["更多"], message=message, user_id=99))
        await bot.feed(p.message("/sources", chat_id=99, lang="en"))

    api = run_bot(config, scenario)

    def texts(chat: int) -> list[str]:
        return [
            parse_html(c.params["text"]).text for c in api.recorded("sendMessage") if c.params["chat_id"] == str(chat)
        ]

    assert texts(5) == ["Only the bot's admins can do that."]
    answer, switched, sources = texts(99)
    assert switched.startswith("Switched to index version v")
    assert "后续报道" in sources and "后续报道" not in answer
    for i in range(5):
        [reply] = [c for c in api.recorded("sendMessage") if c.params["chat_id"] == str(300 + i)]
        assert "<blockquote>" in reply.params["text"]
    [stale] = api.recorded("answerCallbackQuery")[:1]
    assert stale.params["text"] == "索引已更新，这个按钮已过期。请重新提问。"  # in the answer's language
    assert api.recorded("editMessageText")  # "More" re-asks its question on the new index


def test_running_bot_picks_up_a_published_index_by_itself(default_index: Config, tmp_path: Path) -> None:
    config, corpus = _rebuilt_index(default_index, tmp_path, reload_seconds=0.1)
    versions: list[str] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        state = bot.app.bot_data[STATE_KEY]
        assert isinstance(state, BotState)
        versions.append(state.qa.version)
        await asyncio.to_thread(_publish_new_version, config, corpus)
        for _ in range(300):  # a generous bound against hanging, not a timing assertion
            if state.qa.version != versions[0]:
                break
            await asyncio.sleep(0.05)
        versions.append(state.qa.version)
        await bot.feed(p.message("/sources", chat_id=77, lang="en"))

    api = run_bot(config, scenario)
    assert versions[0] != versions[1]
    assert "后续报道" in parse_html(api.recorded("sendMessage")[-1].params["text"]).text


def test_answers_fit_the_limit_even_with_many_passages(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION)))

    run_bot(bot_config(max_passages=50), scenario)
    [answer] = sent(calls)
    text = assert_valid_answer_html(answer)
    assert utf16_len(text) <= 4096
    assert answer.params["text"].count("<blockquote>") >= 5


# ---------------------------------------------------------------- the admission gate
HANDLE = f"@{BOT_USER['username']}"


@pytest.mark.parametrize(
    "text",
    [
        f"{HANDLE}fans {QUESTION}",  # a longer handle is someone else
        f"x{HANDLE}.org {QUESTION}",  # an address, not a mention
        f"mail admin{HANDLE} {QUESTION}",
        f"{HANDLE}.org {QUESTION}",
        f"/help@other_bot {QUESTION}",  # a command for another bot
    ],
)
def test_only_the_exact_handle_or_our_commands_address_the_bot_in_groups(
    bot_config: Callable[..., Config], text: str
) -> None:
    api = run_bot(bot_config(), lambda bot, p: bot.feed(p.message(text, chat_id=GROUP, user_id=21)))  # type: ignore[arg-type,return-value]
    assert not api.recorded("sendMessage")


@pytest.mark.parametrize("text", [f"{HANDLE}，{QUESTION}", f"请问{HANDLE} {QUESTION}", f"{QUESTION} {HANDLE}."])
def test_the_exact_handle_next_to_punctuation_or_chinese_addresses_the_bot(
    bot_config: Callable[..., Config], text: str
) -> None:
    api = run_bot(bot_config(), lambda bot, p: bot.feed(p.message(text, chat_id=GROUP, user_id=21)))  # type: ignore[arg-type,return-value]
    [answer] = api.recorded("sendMessage")
    assert "170余个" in parse_html(answer.params["text"]).text


def replies(api: FakeTelegram, chat_id: int) -> list[Call]:
    """Messages sent or edited into a chat: what a user sees arrive."""
    return [
        c
        for c in api.recorded()
        if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == str(chat_id)
    ]


def test_commands_and_button_presses_share_the_flood_limit_and_presses_are_always_answered(
    bot_config: Callable[..., Config],
) -> None:
    """One user's /help flood and valid More presses in a group: at most user_rate + 1 replies
    (one notice), every press answered, the throttled presses run no retrieval (no edit)."""
    presses = 12

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        first = await bot.feed(p.message(QUESTION, chat_id=1001))
        answer = sent(first)[0]
        more = {b["text"]: b["callback_data"] for b in buttons(answer)}["更多"]
        message = p.bot_message(answer.result["text"], chat_id=GROUP, message_id=answer.result["message_id"])
        flood = [bot.feed(p.message("/help", chat_id=GROUP, user_id=66)) for _ in range(30)]
        flood += [bot.feed(p.callback(more, message=message, user_id=66)) for _ in range(presses)]
        await asyncio.gather(*flood)
        # Another user in the same group is still served.
        await bot.feed(p.mention(QUESTION, chat_id=GROUP, user_id=67))

    api = run_bot(bot_config(user_rate=5, rate_window=600.0), scenario)
    to_group = replies(api, GROUP)
    to_flooder = [c for c in to_group if "170余个" not in parse_html(c.params["text"]).text]
    assert len(to_flooder) <= 5 + 1
    assert sum(c.params["text"] == t("zh", "throttled") for c in to_flooder) == 1
    assert len(api.recorded("answerCallbackQuery")) == presses
    assert len(api.recorded("editMessageText")) <= 5
    assert any("170余个" in parse_html(c.params["text"]).text for c in to_group)


def test_a_group_gets_at_most_telegrams_group_budget(bot_config: Callable[..., Config]) -> None:
    """Many users asking in one group at once: what is admitted fits the group's budget, so no
    reply waits inside the rate limiter; private chats stay unaffected."""

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        asks = [bot.feed(p.mention(QUESTION, chat_id=GROUP, user_id=300 + i)) for i in range(8)]
        await asyncio.gather(*asks, bot.feed(p.message(QUESTION, chat_id=1003)))

    api = run_bot(bot_config(group_rate=5, group_window=600.0), scenario)
    assert len(replies(api, GROUP)) == 5
    assert len(replies(api, 1003)) == 1


def test_inline_flood_gets_empty_results_without_retrieval(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await asyncio.gather(*(bot.feed(p.inline(f"{QUESTION}{i}", user_id=41)) for i in range(9)))

    api = run_bot(bot_config(user_rate=2, rate_window=600.0), scenario)
    answers = api.recorded("answerInlineQuery")
    assert len(answers) == 9  # every query answered
    assert sum(bool(a.params["results"]) for a in answers) == 6  # 3 x user_rate for inline


def test_inline_html_rejected_by_telegram_is_resent_as_plain_text(bot_config: Callable[..., Config]) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("answerInlineQuery", status=400, description="Bad Request: can't parse entities: at byte 9")
        await bot.feed(p.inline(QUESTION, user_id=31))

    api = run_bot(bot_config(), scenario)
    rejected, plain = api.recorded("answerInlineQuery", ok=None)
    assert rejected.status == 400 and plain.ok
    for html_result, plain_result in zip(rejected.params["results"], plain.params["results"], strict=True):
        content = plain_result["input_message_content"]
        assert "parse_mode" not in content and "<" not in content["message_text"]
        assert content["message_text"] == parse_html(html_result["input_message_content"]["message_text"]).text


# ---------------------------------------------------------------- conversations
FIRST = "青海省工信厅要求什么？"
FOLLOW_UP = "内蒙古呢？"


def test_a_follow_up_in_a_private_chat_is_read_in_context_and_says_how(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(p.message(FIRST, chat_id=1201))
        calls.extend(await bot.feed(p.message(FOLLOW_UP, chat_id=1201)))
        calls.extend(await bot.feed(p.message("/new", chat_id=1201)))
        calls.extend(await bot.feed(p.message(FOLLOW_UP, chat_id=1201)))

    run_bot(bot_config(), scenario)
    follow_up, cleared, alone = (parse_html(c.params["text"]).text for c in sent(calls))
    assert t("zh", "understood_as", question="") in follow_up and "内蒙古" in follow_up
    assert "要求" in follow_up.split("\n")[0] or any(
        "内蒙古" in line and "要求" in line for line in follow_up.split("\n")
    )
    assert cleared == t("zh", "new_conversation")
    assert t("zh", "understood_as", question="") not in alone


def test_a_question_that_stands_alone_is_answered_exactly_as_alone(bot_config: Callable[..., Config]) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=1202)))
        await bot.feed(p.message(FIRST, chat_id=1203))
        calls.extend(await bot.feed(p.message(QUESTION, chat_id=1203)))

    run_bot(bot_config(), scenario)
    alone, after_context = sent(calls)
    assert after_context.params["text"] == alone.params["text"]


def test_in_a_group_a_reply_to_an_answer_continues_that_answers_conversation(
    bot_config: Callable[..., Config],
) -> None:
    calls: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        [answer] = sent(await bot.feed(p.mention(FIRST, chat_id=GROUP, user_id=81)))
        ours = p.bot_message(answer.result["text"], chat_id=GROUP, message_id=answer.result["message_id"])
        # Another member replies to the bot's answer: the conversation it belongs to goes on.
        calls.extend(await bot.feed(p.message(FOLLOW_UP, chat_id=GROUP, user_id=82, reply_to=ours)))
        # A third member asks the same words fresh (a mention, no reply): no context of theirs.
        calls.extend(await bot.feed(p.mention(FOLLOW_UP, chat_id=GROUP, user_id=83)))

    run_bot(bot_config(), scenario)
    continued, fresh = (parse_html(c.params["text"]).text for c in sent(calls))
    assert t("zh", "understood_as", question="") in continued
    assert t("zh", "understood_as", question="") not in fresh
