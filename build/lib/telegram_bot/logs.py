"""Logging for the bot: one stderr handler whose formatter redacts the bot token.

httpx (INFO) and python-telegram-bot (DEBUG) log request URLs, and the Bot API puts the
token in every URL path. Rather than trusting each library's log level, the one handler
every record goes through replaces the token (and anything shaped like a token or a
`/bot<token>/` path) after formatting, tracebacks included. Library loggers are also
quietened unless debug logging is on. Our own records carry chat ids, never message texts,
except at DEBUG.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO

_TOKEN_SHAPE = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}")
_URL_PATH = re.compile(r"/bot[^/\s\"']+/")
REDACTED = "<redacted>"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret, token-shaped string and /bot<token>/ path replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _TOKEN_SHAPE.sub(REDACTED, text)
    return _URL_PATH.sub(f"/bot{REDACTED}/", text)


class RedactingFormatter(logging.Formatter):
    """A formatter that never lets a secret through, whatever the record contains."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


class LibraryTracebacks(logging.Filter):
    """Without --debug, errors logged by libraries (PTB, httpx) are one line: e.g. PTB logs
    a rejected token with a full traceback, which an operator does not need."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith(("telegram.", "httpx", "httpcore")):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(
    *,
    debug: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    level: int | None = None,
) -> None:
    """Route all logging to stderr through the redacting formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    if not debug:
        handler.addFilter(LibraryTracebacks())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else (logging.DEBUG if debug else logging.INFO))
    logging.captureWarnings(True)
    quiet = logging.DEBUG if debug else logging.WARNING
    for name in ("httpx", "telegram", "apscheduler"):
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("httpcore").setLevel(logging.INFO if debug else logging.WARNING)
    # 429 handling is worth seeing in production logs.
    logging.getLogger("telegram.ext.AIORateLimiter").setLevel(logging.DEBUG if debug else logging.INFO)
    for name in ("jieba", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)
