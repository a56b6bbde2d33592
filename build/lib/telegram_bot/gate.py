"""The one admission gate every update passes before any handler runs.

Registered as a `TypeHandler` in handler group -1: it decides for messages, commands, button
presses and inline queries alike, and raises `ApplicationHandlerStop` for whatever it does not
admit, so refused updates never reach retrieval or hold a handler slot. In order:

1. group messages not addressed to the bot are ignored (not counted against anyone);
2. the allowlist (one polite refusal per stranger, then silence);
3. the per-user flood limit (one short notice per window, then silence);
4. the per-group budget, Telegram's own 20 messages a minute, so admitted updates never pile
   up inside the rate limiter waiting for a group's budget.

Button presses are always answered, so the client's spinner stops; inline queries over the
limit get an empty result list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop

from settings import TelegramConfig
from telegram_bot import render
from telegram_bot.guards import Allowlist, FloodGate, Verdict
from telegram_bot.i18n import DEFAULT_LANG, normalise_lang, t
from telegram_bot.mentions import addressed_text
from telegram_bot.sending import client_lang, reply_to, send_doc

if TYPE_CHECKING:
    from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")

INLINE_CACHE_SECONDS = 30


class Gate:
    """Allowlist and flood limits; pure bookkeeping, no Telegram calls."""

    def __init__(self, tg: TelegramConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.allowlist = Allowlist(tg.allowlist)
        self.users = FloodGate(tg.user_rate, tg.rate_window, clock=clock)
        # Inline queries arrive while the user types: a separate, roomier budget.
        self.inline = FloodGate(tg.user_rate * 3, tg.rate_window, clock=clock)
        self.groups = FloodGate(tg.group_rate, tg.group_window, clock=clock)

    def check(self, user_id: int | None, chat_id: int | None, *, group: bool) -> tuple[Verdict, str]:
        """(verdict, the notice's text key) for a message, command or button press."""
        verdict = self.allowlist.check(user_id, chat_id)
        if verdict is not Verdict.ALLOW:
            return verdict, "refused"
        verdict = self.users.check(user_id)
        if verdict is Verdict.ALLOW and group:
            # Over a group's budget the group itself is not told: that would spend the budget.
            verdict = Verdict.SILENT if self.groups.check(chat_id) is not Verdict.ALLOW else Verdict.ALLOW
        return verdict, "throttled"

    def check_inline(self, user_id: int) -> bool:
        return self.allowlist.allows(user_id, None) and self.inline.check(user_id) is Verdict.ALLOW


async def admit(update: Update, context: BotContext) -> None:
    """Let the update through to the handlers, or stop it here (after any notice)."""
    gate = context.state.gate
    if update.inline_query is not None:
        query = update.inline_query
        if not gate.check_inline(query.from_user.id):
            await query.answer([], cache_time=INLINE_CACHE_SECONDS, is_personal=True)
            raise ApplicationHandlerStop
        return
    if update.callback_query is not None:
        press = update.callback_query
        chat = press.message.chat if press.message is not None else None
        verdict, key = gate.check(press.from_user.id, chat.id if chat else None, group=_is_group(chat))
        if verdict is not Verdict.ALLOW:
            _log_refusal(key, chat.id if chat else None, press.from_user.id, "button")
            lang = normalise_lang(press.from_user.language_code) or DEFAULT_LANG
            await press.answer(t(lang, key) if verdict is Verdict.NOTICE else None)
            raise ApplicationHandlerStop
        return
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None or update.message is None:
        raise ApplicationHandlerStop  # edits, channel posts: nothing we answer
    if message.via_bot is not None and message.via_bot.id == context.bot.id:
        raise ApplicationHandlerStop  # our own inline result, posted by the user
    user = update.effective_user
    group = _is_group(chat)
    if group and not addressed_text(message, context.bot.username or "", context.bot.id)[1]:
        raise ApplicationHandlerStop
    verdict, key = gate.check(user.id if user else None, chat.id, group=group)
    if verdict is Verdict.ALLOW:
        return
    _log_refusal(key, chat.id, user.id if user else None, "message")
    if verdict is Verdict.NOTICE:
        await send_doc(context.bot, chat.id, render.text_doc(client_lang(update), key), reply_to=reply_to(update))
    raise ApplicationHandlerStop


def _is_group(chat: object) -> bool:
    return chat is not None and getattr(chat, "type", None) != ChatType.PRIVATE


def _log_refusal(key: str, chat_id: int | None, user_id: int | None, what: str) -> None:
    reason = "not in allowlist" if key == "refused" else "flood limit"
    log.info("dropped %s chat=%s user=%s (%s)", what, chat_id, user_id, reason)
