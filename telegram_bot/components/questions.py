"""Questions: private messages, group messages addressed to the bot, and /ask."""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Update

from telegram_bot import render
from telegram_bot.buttons import keyboard, vote_buttons
from telegram_bot.feedback import LOGGED, Answered
from telegram_bot.i18n import detect_lang
from telegram_bot.mentions import addressed_text
from telegram_bot.pipeline import version_tag
from telegram_bot.sending import client_lang, reply_to, send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def answer_question(update: Update, context: BotContext, text: str) -> None:
    """The one path every admitted question takes: retrieve, render, log, send."""
    started = time.perf_counter()
    chat = update.effective_chat
    if chat is None:
        return
    st = context.state
    user = update.effective_user
    message = update.effective_message
    lang = detect_lang(text, user.language_code if user else None)
    # A reply to one of the bot's answers continues that answer's conversation (in a group,
    # whoever replies); otherwise the sender's own conversation in this chat.
    replied = message.reply_to_message if message is not None else None
    conversation = st.qa.conversation_for(
        chat.id, user.id if user else chat.id, replied_to=replied.message_id if replied is not None else None
    )
    reply = await st.qa.ask(text, lang, conversation=conversation)
    token = await asyncio.to_thread(st.questions.put, reply.question, lang) if reply.has_more else None
    doc = render.answer_doc(reply)
    logged = None
    if reply.kind in LOGGED:
        entry = Answered.of(reply, chat.type, round((time.perf_counter() - started) * 1000))
        logged = await asyncio.to_thread(st.answers.record, entry)
    votes = vote_buttons(*logged, reply.lang) if logged else []
    markup = keyboard(reply, version_tag(reply.version), token, votes)
    sent = await send_doc(context.bot, chat.id, doc, markup=markup, reply_to=reply_to(update))
    st.qa.answered_in(chat.id, sent.message_id, conversation)
    log.info(
        "answered chat=%s user=%s kind=%s passages=%d chars=%d lang=%s context=%s",
        chat.id,
        user.id if user else None,
        reply.kind.value,
        len(reply.hits),
        len(text),
        lang,
        reply.understood_as is not None,
    )
    log.debug("question chat=%s text=%r", chat.id, text)


async def on_private_text(update: Update, context: BotContext) -> None:
    """Private chats: every text message is a question."""
    message = update.effective_message
    if message is not None and message.text is not None:
        await answer_question(update, context, message.text)


async def on_group_text(update: Update, context: BotContext) -> None:
    """Groups: the gate admitted only messages addressed to the bot; ask without the @handle."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    text, _ = addressed_text(message, context.bot.username or "", context.bot.id)
    await answer_question(update, context, text)


async def cmd_ask(update: Update, context: BotContext) -> None:
    """/ask <question>, anywhere; as a reply to a message, /ask alone asks that message."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None:
        return
    parts = (message.text or "").split(maxsplit=1)
    text = parts[1] if len(parts) > 1 else ""
    if not text.strip() and message.reply_to_message is not None:
        text = message.reply_to_message.text or ""
    if not text.strip():
        doc = render.text_doc(client_lang(update), "ask_usage")
        await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))
        return
    await answer_question(update, context, text)
