"""The one error handler: log (no message texts, no token), tell the user briefly, never raise.
Polling errors (no update) are retried by PTB itself."""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.error import Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut

from index.backends import IndexUnavailableError
from telegram_bot import render
from telegram_bot.i18n import t
from telegram_bot.sending import client_lang, ids, reply_to, send_doc
from telegram_bot.serving import NotServingError
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def on_error(update: object, context: BotContext) -> None:
    error = context.error
    if not isinstance(update, Update):
        if isinstance(error, Conflict):
            log.error("another process is polling with this bot token: %s", error)
        elif isinstance(error, NetworkError | RetryAfter):
            log.warning("Telegram network problem while polling (%s: %s); retrying", type(error).__name__, error)
        else:
            log.error("error outside any update", exc_info=error)
        return
    user_id, chat_id = ids(update)
    key = "error"
    if isinstance(error, NotServingError):  # not a fault: the index is being (re)built
        log.info("not answered update=%s chat=%s user=%s: index %s", update.update_id, chat_id, user_id, error.state)
        key = f"index_{error.state}"
    elif isinstance(error, IndexUnavailableError):  # e.g. a Milvus server restarting: one line, no traceback
        log.warning("not answered update=%s chat=%s user=%s: %s", update.update_id, chat_id, user_id, error)
        key = "index_unavailable"
    elif isinstance(error, Forbidden):
        log.warning("cannot write to chat=%s (%s)", chat_id, error)
        return
    elif isinstance(error, NetworkError | RetryAfter | InvalidToken):
        log.error(
            "could not answer update=%s chat=%s user=%s: Telegram request failed after retries: %s: %s",
            update.update_id,
            chat_id,
            user_id,
            type(error).__name__,
            error,
        )
    else:
        log.error("error while answering update=%s chat=%s user=%s", update.update_id, chat_id, user_id, exc_info=error)
    if isinstance(error, TimedOut) and update.callback_query is None and update.inline_query is None:
        return  # the reply may well have arrived: an apology after it would only confuse
    lang = client_lang(update)
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await update.callback_query.answer(t(lang, key))
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=0)
        elif chat_id is not None and update.effective_message is not None:
            await send_doc(context.bot, chat_id, render.text_doc(lang, key), reply_to=reply_to(update))
