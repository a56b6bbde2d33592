"""`bot.py --console`: the Telegram answer pipeline and rendering, in a terminal.

Questions come from stdin one per line, interactively or piped; every reply goes through
the same `QAService.ask` → `render.answer_doc` path as a Telegram message and is printed
with `render.to_text`. The buttons become commands: /more, /context, /source; plus /help,
/sources and /about. The console is one conversation: follow-up questions are read in its
context (shown as "Understood as: …"), and /new starts a fresh one. EOF (Ctrl-D), /quit,
SIGINT or SIGTERM end it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from settings import Config
from telegram_bot import app_version, render
from telegram_bot.i18n import DEFAULT_LANG, detect_lang, normalise_lang
from telegram_bot.pipeline import QUOTED, Kind, QAService, Reply

CONVERSATION = "console"  # the console's one conversation key


@dataclass
class _Session:
    last: Reply | None = None


def locale_lang() -> str:
    """The terminal user's language from the usual locale variables (zh_CN.UTF-8 → zh)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value and value not in ("C", "POSIX") and not value.startswith("C."):
            return normalise_lang(value) or DEFAULT_LANG
    return DEFAULT_LANG


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of `stream`. A real file descriptor is read with os.read, not through the
    buffered reader: a daemon thread blocked inside BufferedReader would hold its lock at
    interpreter exit and abort the process."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield from iter(stream.readline, b"")
        return
    pending = b""
    while chunk := os.read(fd, 65536):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line + b"\n"
    if pending:
        yield pending


def _read_lines(stream: BinaryIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines to the event loop from a daemon thread (a blocked read never
    holds up shutdown), then None at EOF."""
    try:
        for raw in _lines(stream):
            loop.call_soon_threadsafe(queue.put_nowait, raw.decode("utf-8", errors="replace"))
    finally:
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(queue.put_nowait, None)


async def respond(qa: QAService, line: str, session: _Session, lang_hint: str) -> render.Doc | None:
    """The reply to one console line: a command or a question."""
    text = line.strip()
    if not text:
        return None
    command = text.split()[0].lower() if text.startswith("/") else ""
    if command in ("/start", "/help"):
        return render.help_doc(lang_hint, await qa.library(), "<bot>")
    if command == "/sources":  # "/sources 2": the second page
        page = text.split()[1:2]
        number = int(page[0]) - 1 if page and page[0].isdigit() else 0
        return render.sources_doc(lang_hint, await qa.library(), number, limit=10**9)
    if command == "/about":
        return render.about_doc(lang_hint, await qa.library(), app_version())
    if command == "/new":
        qa.conversations.clear(CONVERSATION)
        return render.text_doc(lang_hint, "new_conversation")
    last = session.last
    if command in ("/more", "/context", "/source"):
        if last is None or not last.hits:
            return render.text_doc(lang_hint, "no_more")
        if command == "/more":
            if last.kind not in QUOTED or not last.has_more:
                return render.text_doc(last.lang, "no_more")
            session.last = await qa.ask(last.question, last.lang, offset=last.offset + len(last.hits))
            return render.answer_doc(session.last)
        top = last.hits[0].passage_id
        if command == "/context":
            return render.context_doc(last.lang, await qa.context(top), top)
        row = await qa.passage(top)
        return render.source_doc(last.lang, row) if row is not None else render.text_doc(last.lang, "no_more")
    if command == "/ask":
        text = text[4:].strip()
    reply = await qa.ask(text, detect_lang(text, lang_hint), conversation=CONVERSATION)
    session.last = reply
    return render.answer_doc(reply)


async def run_console(config: Config, *, stdin: BinaryIO | None = None, stdout: TextIO | None = None) -> int:
    """Answer stdin until EOF. Returns the exit status."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout
    interactive = stdin.isatty() and stdout.isatty()
    ansi = stdout.isatty() and not os.environ.get("NO_COLOR")
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, main_task.cancel)
    qa = await QAService.open(config)
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(stdin, loop, queue), daemon=True, name="stdin").start()
    session = _Session()
    lang = locale_lang()
    try:
        if interactive:
            print(render.to_text(render.answer_doc(Reply(Kind.HELP, lang)), ansi=ansi), file=stdout)
        while True:
            if interactive:
                print("\n? ", end="", file=stdout, flush=True)
            line = await queue.get()
            if line is None or line.strip().lower() in ("/quit", "/exit"):
                break
            doc = await respond(qa, line, session, lang)
            if doc is not None:
                print(render.to_text(doc, ansi=ansi), file=stdout, flush=True)
                if not interactive:
                    print(file=stdout, flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        await qa.close()
    return 0
