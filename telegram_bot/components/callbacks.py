"""More / Context / Source and 👍 / 👎 buttons. Old, stale or forged buttons get a polite
popup; every press is answered so the client's spinner stops."""

from __future__ import annotations

import asyncio
import logging

from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest

from telegram_bot import render
from telegram_bot.buttons import (
    CONTEXT,
    MORE,
    SOURCES_PAGE,
    VOTE,
    ButtonData,
    decode,
    keyboard,
    sources_keyboard,
    votes_of,
)
from telegram_bot.i18n import DEFAULT_LANG, normalise_lang, t
from telegram_bot.pipeline import Kind, version_tag
from telegram_bot.sending import send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def on_button(update: Update, context: BotContext) -> None:
    press = update.callback_query
    if press is None:
        return
    client = normalise_lang(press.from_user.language_code) or DEFAULT_LANG
    data = decode(press.data)
    if data is None:
        log.info("invalid button user=%s", press.from_user.id)
        await press.answer(t(client, "invalid_button"))
        return
    if data.action == MORE:
        await _more(press, context, data, client)
        return
    if data.action == VOTE:
        await _vote(press, context, data)
        return
    if data.action == SOURCES_PAGE:
        await _sources_page(press, context, data)
        return
    qa = context.state.qa
    if data.vtag != qa.version_tag:
        log.info("stale button user=%s", press.from_user.id)
        await press.answer(t(data.lang, "stale_button"))
        return
    message = press.message
    if message is None:
        await press.answer(t(data.lang, "invalid_button"))
        return
    if data.action == CONTEXT:
        rows = await qa.context(data.passage_id)
        doc = render.context_doc(data.lang, rows, data.passage_id) if rows else None
    else:
        row = await qa.passage(data.passage_id)
        doc = render.source_doc(data.lang, row) if row is not None else None
    if doc is None:
        await press.answer(t(data.lang, "invalid_button"))
        return
    await press.answer()
    await send_doc(context.bot, message.chat.id, doc, reply_to=message.message_id, preview=data.action != CONTEXT)


async def _more(press: CallbackQuery, context: BotContext, data: ButtonData, client: str) -> None:
    """The next page of results, edited into the same message (or sent anew if that fails).

    After a rebuild the stored question is simply asked again on the new index.
    """
    st = context.state
    stored = await asyncio.to_thread(st.questions.get, data.token)
    if stored is None:
        await press.answer(t(client, "stale_button"))
        return
    question, lang = stored
    reply = await st.qa.ask(question, lang, offset=data.offset)
    if reply.kind is Kind.NO_MORE:  # keep the answer on screen, just say so
        await press.answer(t(lang, "no_more"))
        return
    await press.answer()
    message = press.message
    votes = votes_of(message.reply_markup) if isinstance(message, Message) else []  # votes stay on the question
    markup = keyboard(reply, version_tag(reply.version), data.token, votes)
    doc = render.answer_doc(reply)
    try:
        if press.inline_message_id:
            await context.bot.edit_message_text(
                render.to_html(doc), inline_message_id=press.inline_message_id, reply_markup=markup
            )
            return
        if message is None:
            return
        await context.bot.edit_message_text(
            render.to_html(doc), chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup
        )
    except BadRequest as exc:
        if "not modified" in exc.message.lower() or message is None:
            return
        log.info("could not edit for More (%s) chat=%s; sending a new message", exc.message, message.chat.id)
        await send_doc(context.bot, message.chat.id, doc, markup=markup, reply_to=message.message_id)


async def _vote(press: CallbackQuery, context: BotContext, data: ButtonData) -> None:
    """👍 / 👎: one vote per user per answer; pressing again changes it."""
    user_id = press.from_user.id
    counted = await asyncio.to_thread(context.state.answers.vote, data.answer_id, data.token, user_id, data.up)
    if not counted:
        log.info("vote for an unknown answer user=%s", user_id)
        await press.answer(t(data.lang, "invalid_button"))
        return
    log.info("vote user=%s answer=%s %s", user_id, data.answer_id, "up" if data.up else "down")
    await press.answer(t(data.lang, "vote_thanks"))


async def _sources_page(press: CallbackQuery, context: BotContext, data: ButtonData) -> None:
    """Another page of /sources, edited into the same message (from the live index version)."""
    library = await context.state.qa.library()
    pages = render.sources_pages(library)
    page = min(data.offset, pages - 1)
    await press.answer()
    message = press.message
    if message is None:
        return
    doc = render.sources_doc(data.lang, library, page)
    markup = sources_keyboard(data.lang, page, pages)
    try:
        await context.bot.edit_message_text(
            render.to_html(doc), chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup
        )
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.info("could not edit /sources page (%s) chat=%s", exc.message, message.chat.id)
            await send_doc(context.bot, message.chat.id, doc, markup=markup, reply_to=message.message_id)
