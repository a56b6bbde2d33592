"""/stats (admins): what was asked over the last week, how much of it the articles cover, the
votes, the time to answer, and which questions to write or find articles for."""

from __future__ import annotations

import asyncio
import time

from telegram import Update
from telegram.constants import ChatType

from telegram_bot import render
from telegram_bot.components.commands import admins_only
from telegram_bot.sending import client_lang, reply_to, send_doc
from telegram_bot.state import BotContext


async def cmd_stats(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat is None or not await admins_only(update, context, "/stats"):
        return
    lang = client_lang(update)
    if chat.type != ChatType.PRIVATE:  # the top questions are other users' words
        await send_doc(context.bot, chat.id, render.text_doc(lang, "stats_private"), reply_to=reply_to(update))
        return
    stats = await asyncio.to_thread(context.state.answers.stats, time.time())
    await send_doc(context.bot, chat.id, render.stats_doc(lang, stats))
