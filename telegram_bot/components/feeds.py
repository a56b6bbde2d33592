"""Watched feeds in the bot: a job-queue pass every `[ingest] poll_minutes` (`index.feeds`),
the admins told once when a feed starts failing and once when it recovers, and /feeds.

A pass takes the same turn as /add and /remove (`BotState.changing_corpus`) and runs on the ingest thread; the
pages are read in a limited child process, the build runs here, and the bot switches to the
new version at once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from telegram import Update
from telegram.error import TelegramError

from index.add import AddError
from index.feeds import FeedState, FeedStore, feed_status, watch_once
from settings import Config
from telegram_bot import render
from telegram_bot.components.commands import admins_only
from telegram_bot.i18n import DEFAULT_LANG, t
from telegram_bot.sending import client_lang, reply_to, send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def poll_feeds(context: BotContext) -> None:
    """The job: one pass over the due feeds, then the alerts it calls for."""
    st = context.state
    config = st.config
    try:
        async with st.changing_corpus:
            report = await st.run_ingest(lambda cancel: watch_once(config, cancel=cancel))
            if report.build is not None and report.build.published:
                await st.serving.refresh()
    except (AddError, sqlite3.Error, OSError) as exc:
        log.error("feed pass failed: %s", exc)
        return
    for line in report.lines():
        log.info("%s", line)
    await _alert_admins(context, config)


async def _alert_admins(context: BotContext, config: Config) -> None:
    """One message per feed that started failing or recovered since the admins were last told."""
    for state in await asyncio.to_thread(_pending_alerts, config):
        if state.failing:
            doc = render.text_doc(DEFAULT_LANG, "feed_failing", url=state.url, error=state.last_error)
        else:
            doc = render.text_doc(DEFAULT_LANG, "feed_recovered", url=state.url)
        told = False
        for admin in config.telegram.admins:
            try:
                await send_doc(context.bot, admin, doc)
                told = True
            except TelegramError as exc:
                log.warning("could not tell admin=%s about feed %s: %s", admin, state.url, exc)
        if told or not config.telegram.admins:
            await asyncio.to_thread(_mark_alerted, config, state)


def _pending_alerts(config: Config) -> list[FeedState]:
    with FeedStore.beside_index(config.index.dir) as store:
        return store.pending_alerts(config.ingest.feeds)


def _mark_alerted(config: Config, state: FeedState) -> None:
    with FeedStore.beside_index(config.index.dir) as store:
        store.mark_alerted(state.url, state.failing)


async def cmd_feeds(update: Update, context: BotContext) -> None:
    """/feeds (admins): each watched feed's last success, articles taken, and failure."""
    chat = update.effective_chat
    if chat is None or not await admins_only(update, context, "/feeds"):
        return
    lang = client_lang(update)
    statuses = await asyncio.to_thread(feed_status, context.state.config)
    lines = [] if statuses else [t(lang, "feeds_none")]
    for status in statuses:
        success = status["last_success"] or t(lang, "feeds_never")
        lines += t(lang, "feeds_line", url=status["url"], success=success, taken=status["articles_taken"]).split("\n")
        if status["failures"]:
            failing = {"failures": status["failures"], "since": status["last_error_at"], "next": status["next_try"]}
            lines.append(t(lang, "feeds_failing", error=status["last_error"], **failing))
    doc = tuple(render.Line.of(line) for line in lines)
    await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))
