"""Sending rendered docs: HTML first (the parse mode comes from PTB `Defaults`), plain text
when Telegram rejects the markup; and the small facts about an update that replies need."""

from __future__ import annotations

import logging
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ChatType
from telegram.error import BadRequest

from telegram_bot import render
from telegram_bot.i18n import DEFAULT_LANG, normalise_lang

log = logging.getLogger("telegram_bot")


def markup_error(exc: BadRequest) -> bool:
    """Telegram refused the HTML (entities, length, a URL), not the request as such."""
    text = exc.message.lower()
    return any(k in text for k in ("parse entities", "entity", "too long", "url", "tag"))


async def send_doc(
    bot: Bot,
    chat_id: int,
    doc: render.Doc,
    *,
    markup: InlineKeyboardMarkup | None = None,
    reply_to: int | None = None,
    preview: bool = False,
) -> Message:
    """Send a rendered doc as HTML; if Telegram still rejects the markup, as plain text."""
    kwargs: dict[str, Any] = {
        "reply_markup": markup,
        "reply_parameters": ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None,
    }
    if preview:
        kwargs["link_preview_options"] = None  # Telegram's default: show the link's preview
    try:
        return await bot.send_message(chat_id, render.to_html(doc), **kwargs)
    except BadRequest as exc:
        if not markup_error(exc):
            raise
        log.error("Telegram rejected a reply's HTML (%s) chat=%s; sending it as plain text", exc.message, chat_id)
        return await bot.send_message(chat_id, render.html_to_plain(doc), parse_mode=None, **kwargs)


def reply_to(update: Update) -> int | None:
    """Quote the asking message in groups; in private chats the answer simply follows."""
    chat = update.effective_chat
    message = update.effective_message
    if chat is None or message is None or chat.type == ChatType.PRIVATE:
        return None
    return message.message_id


def ids(update: Update) -> tuple[int | None, int | None]:
    """(user id, chat id) of an update, either possibly missing."""
    user = update.effective_user
    chat = update.effective_chat
    return (user.id if user else None), (chat.id if chat else None)


def client_lang(update: Update) -> str:
    """The language of the user's Telegram client, for texts that answer no question."""
    user = update.effective_user
    return normalise_lang(user.language_code if user else None) or DEFAULT_LANG
