"""Retention on a timer: what is past `question_retention_days` is deleted even while nobody
asks anything (the stores otherwise purge only on open and every few hundred writes)."""

from __future__ import annotations

import asyncio

from telegram.ext import Application

from settings import TelegramConfig
from telegram_bot.state import BotContext

PURGE_SECONDS = 600.0  # at most this long past the retention; shorter for a short retention
JOB_NAME = "purge-expired"


async def purge_expired(context: BotContext) -> None:
    await asyncio.to_thread(context.state.purge_expired)


def schedule_purge(application: Application, telegram: TelegramConfig) -> None:
    """Run `purge_expired` every few minutes once the application starts (nothing to do when
    the bot keeps its state in memory only)."""
    days = telegram.question_retention_days
    if days <= 0:
        return
    if application.job_queue is None:
        raise RuntimeError("the bot needs python-telegram-bot[job-queue] (APScheduler) for its retention timer")
    every = max(1.0, min(PURGE_SECONDS, days * 86_400 / 4))
    application.job_queue.run_repeating(purge_expired, interval=every, first=every, name=JOB_NAME)
