"""/remove (admins): articles out of the corpus and the live index, named by URL, corpus file
or article id (as `python -m index info` shows it).

Like /add it is acknowledged at once and the message is then edited with what was removed,
once the new index version is live in this bot; it shares /add's turn, so the corpus changes
one request at a time. The work (`index.remove.remove_sources`) blocks: a worker thread.
"""

from __future__ import annotations

import logging

from telegram import Update

from index.remove import RemoveReport, RemoveResult, remove_sources
from telegram_bot import render
from telegram_bot.components.commands import admins_only
from telegram_bot.components.ingest import edit_status
from telegram_bot.i18n import t
from telegram_bot.sending import client_lang, reply_to, send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


async def cmd_remove(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    user = update.effective_user
    if chat is None or user is None or not await admins_only(update, context, "/remove"):
        return
    st = context.state
    lang = client_lang(update)
    sources = context.args or []
    if not sources:
        await send_doc(context.bot, chat.id, render.text_doc(lang, "remove_usage"), reply_to=reply_to(update))
        return
    waiting = st.changing_corpus.locked()
    status = await send_doc(
        context.bot,
        chat.id,
        render.text_doc(lang, "remove_queued" if waiting else "remove_started"),
        reply_to=reply_to(update),
    )
    async with st.changing_corpus:
        # On the ingest thread with the adds: never in the pool that answers questions.
        report = await st.run_ingest(lambda _cancel: remove_sources(st.config, sources))
        if report.build is not None and report.build.published:
            await st.serving.refresh()
    await edit_status(status, _final_text(report, lang))
    log.info("remove by user=%s: %s", user.id, ", ".join(f"{report.count(s)} {s}" for s in ("removed", "not found")))


def _final_text(report: RemoveReport, lang: str) -> str:
    lines = [_result_line(lang, result) for result in report.results]
    if report.build_error:
        lines.append(t(lang, "add_build_failed", error=report.build_error))
    elif report.build is not None and report.build.published:
        lines.append(t(lang, "add_live", version=report.build.version))
    elif not report.changed:
        lines.append(t(lang, "remove_nothing"))
    return "\n".join(lines)


def _result_line(lang: str, result: RemoveResult) -> str:
    if result.status == "removed":
        return t(lang, "remove_removed", title=result.title or result.path, path=result.path)
    if result.status == "unlisted":
        return t(lang, "remove_unlisted", title=result.title or result.path, source=result.source)
    return t(lang, "remove_not_found", source=result.source)
