"""Watched feeds and hostile pages in the running bot: the real Application (job queue
started) over the recording fake Bot API, a loopback feed that publishes while the bot runs,
a feed that fails and recovers, pages that break the child process's limits, and /add's turn
held while its status message cannot be edited."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import copy_index, write_config
from hostile_site import slow_page

from loopback.fake_telegram import InProcessBot, Payloads, parse_html, run_bot
from loopback.news_site import SICHUAN, STORIES, NewsSite, publish
from settings import Config, load_config
from telegram_bot.i18n import t
from telegram_bot.state import STATE_KEY, BotState

ADMIN = 4242
NEIMENGGU, YUNNAN = STORIES["neimenggu"], STORIES["yunnan"]
QUESTION = "青海省禁止向挖矿项目提供什么？"  # answered from the default corpus
QUESTION_ANSWER = "青海省工业和信息化厅"
os.environ.setdefault("PTB_TIMEDELTA", "1")


@pytest.fixture
def feed_path(request: pytest.FixtureRequest) -> str:
    return f"/watch/{request.node.name}.xml"


@pytest.fixture
def config(default_index: Config, tmp_path: Path, site: NewsSite, feed_path: str) -> Config:
    """A bot polling one feed every 0.6 s, with a copy of the default corpus's index."""
    copy = copy_index(default_index, tmp_path)
    base = load_config(write_config(tmp_path / "config.toml", corpus=copy.corpus.dir, index=copy.index.dir))
    ingest = replace(
        base.ingest,
        timeout=2.0,
        download_seconds=5.0,
        allow_hosts=("127.0.0.1",),
        feeds=(site.url(feed_path),),
        poll_minutes=0.01,
    )
    return replace(base, telegram=replace(base.telegram, admins=(ADMIN,), reload_seconds=0.0), ingest=ingest)


def state(bot: InProcessBot) -> BotState:
    return bot.app.bot_data[STATE_KEY]


async def has_title(bot: InProcessBot, title: str) -> bool:
    library = await state(bot).qa.library()
    return any(article.get("title") == title for article in library.articles)


def replies(api, chat_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        parse_html(c.params["text"]).text
        for c in api.calls
        if c.ok and c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == str(chat_id)
    ]


def test_the_bot_answers_from_a_story_published_while_it_runs(site, config, feed_path):
    publish(site, feed_path, [NEIMENGGU])
    answers: list[str] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        for story in (NEIMENGGU, YUNNAN):
            if story is YUNNAN:
                publish(site, feed_path, [YUNNAN, NEIMENGGU])
            deadline = time.monotonic() + 60
            while not await has_title(bot, story.title):
                assert time.monotonic() < deadline, f"{story.title} never became searchable"
                await asyncio.sleep(0.2)
            calls = await bot.feed(p.message(story.question, chat_id=77))
            answers.extend(parse_html(c.params["text"]).text for c in calls if c.method == "sendMessage")
        calls = await bot.feed(p.message("/feeds", chat_id=ADMIN, lang="en"))
        answers.extend(parse_html(c.params["text"]).text for c in calls if c.method == "sendMessage")

    api = run_bot(config, scenario, start=True)
    assert NEIMENGGU.answer in answers[0] and NEIMENGGU.title in answers[0]
    assert YUNNAN.answer in answers[1] and YUNNAN.title in answers[1]
    assert answers[2].startswith(f"{site.url(feed_path)}\nlast success: ")
    assert answers[2].endswith("articles taken: 2")
    assert replies(api, ADMIN)[-1] == answers[2]  # no alert: the feed never failed


def test_a_failing_feed_sends_the_admins_exactly_two_messages(site, config, feed_path):
    publish(site, feed_path, [NEIMENGGU])
    site.failures[feed_path] = 2

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        deadline = time.monotonic() + 60
        while not await has_title(bot, NEIMENGGU.title):
            assert time.monotonic() < deadline, "the feed never recovered"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # a few more passes: nothing more to say

    api = run_bot(config, scenario, start=True)
    url = config.ingest.feeds[0]
    assert replies(api, ADMIN) == [
        t("en", "feed_failing", url=url, error="HTTP 500 Internal Server Error"),
        t("en", "feed_recovered", url=url),
    ]


@pytest.mark.parametrize(
    ("cpu_seconds", "memory_mb", "reason"),
    [
        (1, 1024, "stopped: reading it used more than 1 CPU seconds ([ingest] child_cpu_seconds)"),
        (120, 128, "stopped: reading it needed more than 128 MB ([ingest] child_memory_mb)"),
    ],
)
def test_a_page_over_the_childs_limits_costs_the_child_not_the_bot(site, config, cpu_seconds, memory_mb, reason):
    site.routes["/hostile/slow.html"] = ("text/html; charset=utf-8", slow_page())
    ingest = replace(config.ingest, feeds=(), child_cpu_seconds=cpu_seconds, child_memory_mb=memory_mb)
    seen: dict[str, list[str]] = {}

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        calls = await bot.feed(p.message(f"/add {site.url('/hostile/slow.html')}", chat_id=ADMIN, lang="en"))
        seen["add"] = [parse_html(c.params["text"]).text for c in calls if c.ok and "text" in c.params]
        calls = await bot.feed(p.message(QUESTION, chat_id=77))
        seen["answer"] = [parse_html(c.params["text"]).text for c in calls if c.method == "sendMessage"]

    run_bot(replace(config, ingest=ingest), scenario)
    assert seen["add"][-1] == f"Skipped: {site.url('/hostile/slow.html')}: {reason}"
    assert list(Path(config.corpus.dir).rglob("127.0.0.1_*")) == []  # nothing written
    [reply] = seen["answer"]  # the bot lives on and answers from its index
    assert QUESTION_ANSWER in reply


def test_the_add_turn_outlives_a_status_message_that_cannot_be_edited(site, config):
    """Edits fail (the admin deleted the message): the first add keeps its turn until its
    work is done, the second starts only then, and questions are answered meanwhile."""
    no_feeds = replace(config, ingest=replace(config.ingest, feeds=()))
    slow = site.url("/trickle")  # a byte every 0.2 s until the 5 s deadline
    order: list[str] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.inject("editMessageText", status=400, description="Bad Request: message to edit not found", times=99)

        async def add(url: str, chat: int) -> None:
            await bot.feed(p.message(f"/add {url}", chat_id=chat, user_id=ADMIN, lang="en"))
            order.append(f"done {url}")

        async def ask() -> None:
            await asyncio.sleep(2.0)  # the first add is under way
            await bot.feed(p.message(QUESTION, chat_id=77))
            order.append("answered")

        first = asyncio.create_task(add(slow, ADMIN))
        await asyncio.sleep(0.5)
        await asyncio.gather(first, add(site.url(SICHUAN), ADMIN + 1), ask())

    api = run_bot(no_feeds, scenario)
    assert order == ["answered", f"done {slow}", f"done {site.url(SICHUAN)}"]
    trickle = next(r for r in site.requests if r.path == "/trickle")
    sichuan = [r for r in site.requests if r.path == SICHUAN and r.started > trickle.started]
    assert sichuan and sichuan[0].started >= trickle.finished  # the second add waited for the first's work
    first, second = replies(api, ADMIN), replies(api, ADMIN + 1)
    assert first[-1] == f"Skipped: {slow}: download took longer than 5s"  # sent anew: the edit failed
    assert second[0] == t("en", "add_queued") and second[-1].startswith("Added: ")
