"""/add (admins): an article URL, a feed URL, or an .html/.md/.txt document sent with the
caption /add, into the corpus and the live index.

The request is acknowledged at once; that message is then edited with progress (each article
as it is fetched, the build's progress) and finally with what was added (title, date, passages)
once the new index version is live in this bot. The work (`index.add.add_sources`) blocks:
it runs on the bot's ingest thread (`BotState.run_ingest`), never in the pool that answers
questions, and downloads and reads the pages in a child process with memory and CPU limits,
so a hostile page costs the child, never the bot; the build runs in the bot. One add, feed pass
or /remove runs at a time and the others wait their turn: an add's turn ends only when its work
has finished or was cancelled, whatever happens to the status message meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from functools import partial
from pathlib import Path

from telegram import Message, Update
from telegram.error import BadRequest, TelegramError

from index.add import AddReport, AddResult, add_sources
from telegram_bot import render
from telegram_bot.components.commands import admins_only
from telegram_bot.i18n import t
from telegram_bot.sending import client_lang, reply_to, send_doc
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")

DOCUMENT_TYPES = (".html", ".htm", ".md", ".txt")
# An upload keeps its own (sanitised) name, so sending a revised file again replaces its article.
_UNSAFE_NAME = re.compile(r"[^\w.-]+")
EDIT_EVERY = 1.5  # seconds between progress edits (Telegram limits edits too)


class _Progress:
    """What the status message shows; written from the worker thread, shown by the event loop."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._stage = t(lang, "add_fetching")

    def result(self, result: AddResult) -> None:
        with self._lock:
            self._lines.append(_result_line(self.lang, result, None))

    def building(self, done: int, total: int) -> None:
        with self._lock:
            self._stage = t(self.lang, "add_building", done=done, total=total)

    def text(self) -> str:
        with self._lock:
            return "\n".join([*self._lines[-20:], self._stage])


async def cmd_add(update: Update, context: BotContext) -> None:
    message = update.effective_message
    chat = update.effective_chat
    user = update.effective_user
    if message is None or chat is None or user is None or not await admins_only(update, context, "/add"):
        return
    st = context.state
    lang = client_lang(update)
    limit = st.config.ingest.max_bytes
    source = _source_of(message, limit)
    if source.startswith("!"):
        doc = render.text_doc(lang, source[1:], limit=f"{limit:,}")
        await send_doc(context.bot, chat.id, doc, reply_to=reply_to(update))
        return
    waiting = st.changing_corpus.locked()
    status = await send_doc(
        context.bot,
        chat.id,
        render.text_doc(lang, "add_queued" if waiting else "add_started"),
        reply_to=reply_to(update),
    )
    async with st.changing_corpus:
        progress = _Progress(lang)
        upload: Path | None = None
        try:
            if message.document is not None:
                upload = await _download(message, context)
                sources = [str(upload)]
            else:
                sources = [str(source)]
            report = await _run_with_progress(status, context, progress, sources)
            await st.serving.wait_ready()  # the bot's first build may still run: the reply names what is served
            if report.build is not None and report.build.published:
                await st.serving.refresh()
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)
        final = await _final_text(context, report, lang)
        if not await edit_status(status, final):  # the status message is gone: the outcome comes as a new one
            await send_doc(context.bot, chat.id, tuple(render.Line.of(line) for line in final.split("\n")))
        log.info(
            "add by user=%s: %s",
            user.id,
            ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "skipped")),
        )


def _source_of(message: Message, limit: int) -> str:
    """The URL after /add, "" for a document, or "!<text key>" for what cannot be added."""
    if message.document is not None:
        name = message.document.file_name or ""
        if not name.lower().endswith(DOCUMENT_TYPES):
            return "!add_bad_type"
        if (message.document.file_size or 0) > limit:
            return "!add_too_large"
        return ""
    parts = (message.text or "").split()
    if len(parts) != 2 or not parts[1].lower().startswith(("http://", "https://")):
        return "!add_usage"
    return parts[1]


async def _download(message: Message, context: BotContext) -> Path:
    """The sent document, saved under the index directory's uploads/ for the add to read."""
    document = message.document
    assert document is not None
    folder = Path(context.state.config.index.dir) / "uploads"
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    name = _UNSAFE_NAME.sub("-", Path(document.file_name or "upload.html").name).lstrip(".-") or "upload.html"
    target = folder / name
    file = await context.bot.get_file(document.file_id)
    await file.download_to_drive(target)
    return target


async def _run_with_progress(
    status: Message, context: BotContext, progress: _Progress, sources: list[str]
) -> AddReport:
    """Run the add on the ingest thread, editing the status message while it works (a
    failed edit is skipped: the work goes on, and so does holding the turn)."""
    st = context.state
    work = partial(
        add_sources, st.config, sources, progress=progress.building, on_result=progress.result, isolated=True
    )
    job = asyncio.ensure_future(st.run_ingest(lambda cancel: work(cancel=cancel)))
    shown = ""
    try:
        while not job.done():
            await asyncio.wait({job}, timeout=EDIT_EVERY)
            text = progress.text()
            if text != shown and not job.done():
                shown = text
                await edit_status(status, text)
    except asyncio.CancelledError:
        job.cancel()  # kills the child; the job is awaited before the turn ends
        await asyncio.gather(job, return_exceptions=True)
        raise
    return job.result()


async def _final_text(context: BotContext, report: AddReport, lang: str) -> str:
    articles = {}
    if report.build is not None:
        library = await context.state.qa.library()
        articles = {str(a.get("path") or ""): a for a in library.articles}
    lines = [_result_line(lang, r, articles.get(r.path)) for r in report.results]
    if report.build_error:
        lines.append(t(lang, "add_build_failed", error=report.build_error))
    elif report.build is not None and report.build.published:
        lines.append(t(lang, "add_live", version=report.build.version))
    elif not report.results:
        lines.append(t(lang, "add_nothing"))
    return "\n".join(lines)


def _result_line(lang: str, result: AddResult, article: dict | None) -> str:  # type: ignore[type-arg]
    if result.status in ("added", "updated") and article is not None:
        return t(
            lang,
            f"add_{result.status}",
            title=article.get("title") or result.title,
            date=article.get("date") or "?",
            passages=article.get("passages") or 0,
        )
    if result.status in ("added", "updated"):
        return t(lang, f"add_{result.status}_pending", title=result.title or result.path)
    return t(lang, f"add_{result.status}", source=result.source, detail=result.detail)


async def edit_status(status: Message, text: str) -> bool:
    """Show `text` (plain lines) in the status message; False when Telegram refused (message deleted,
    flood limit): progress is only progress, and the work is not stopped for it."""
    html = render.to_html(tuple(render.Line.of(line) for line in text.split("\n")))
    try:
        await status.edit_text(html)
    except BadRequest as exc:
        if "not modified" in exc.message.lower():
            return True
        log.warning("could not edit a status message chat=%s: %s", status.chat_id, exc.message)
        return False
    except TelegramError as exc:
        log.warning("could not edit a status message chat=%s: %s: %s", status.chat_id, type(exc).__name__, exc)
        return False
    return True
