"""/start, /help, /sources, /about and /reload (admins)."""

from __future__ import annotations

import logging

from telegram import Update

from telegram_bot import app_version, render
from telegram_bot.buttons import sources_keyboard
from telegram_bot.sending import client_lang, ids, reply_to, send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def cmd_help(update: Update, context: BotContext) -> None:
    """/start and /help (and unknown commands in private chats): what the bot knows, how to ask."""
    chat = update.effective_chat
    if chat is None:
        return
    library = await context.state.qa.library()
    doc = render.help_doc(client_lang(update), library, context.bot.username or "")
    await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))


async def cmd_sources(update: Update, context: BotContext) -> None:
    """/sources [page]: the indexed articles, newest first, a page at a time with Newer/Older buttons."""
    chat = update.effective_chat
    if chat is None:
        return
    library = await context.state.qa.library()
    lang = client_lang(update)
    pages = render.sources_pages(library)
    args = context.args or []
    page = max(0, min(int(args[0]) - 1, pages - 1)) if args and args[0].isdigit() else 0
    markup = sources_keyboard(lang, page, pages)
    doc = render.sources_doc(lang, library, page)
    await send_doc(context.bot, chat.id, doc, markup=markup, reply_to=reply_to(update))


async def cmd_about(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    library = await context.state.qa.library()
    doc = render.about_doc(client_lang(update), library, app_version())
    await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))


async def admins_only(update: Update, context: BotContext, command: str) -> bool:
    """True for `[telegram] admins`; anyone else gets one polite refusal."""
    user_id, chat_id = ids(update)
    if user_id in context.state.config.telegram.admins:
        return True
    log.info("refused %s chat=%s user=%s (not an admin)", command, chat_id, user_id)
    if chat_id is not None:
        doc = render.text_doc(client_lang(update), "admins_only")
        await send_doc(context.bot, chat_id, doc, reply_to=reply_to(update))
    return False


async def cmd_reload(update: Update, context: BotContext) -> None:
    """/reload (admins): switch to a newly published index now instead of at the next check."""
    chat = update.effective_chat
    user = update.effective_user
    if chat is None or not await admins_only(update, context, "/reload"):
        return
    st = context.state
    lang = client_lang(update)
    user_id = user.id if user else None
    try:
        changed = await st.serving.refresh()
    except Exception:
        log.exception("reload failed (requested by user=%s)", user_id)
        doc = render.text_doc(lang, "reload_failed", version=st.serving.version)
    else:
        doc = render.text_doc(lang, "reload_done" if changed else "reload_same", version=st.serving.version)
        log.info("reload by user=%s: %s", user_id, "switched" if changed else "unchanged")
    await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))


async def cmd_new(update: Update, context: BotContext) -> None:
    """/new: forget this user's conversation here, so the next question is read on its own."""
    chat = update.effective_chat
    user = update.effective_user
    if chat is None:
        return
    context.state.qa.conversations.clear((chat.id, user.id if user else chat.id))
    doc = render.text_doc(client_lang(update), "new_conversation")
    await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))
