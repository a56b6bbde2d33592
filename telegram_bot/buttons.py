"""Inline keyboard under answers and the callback data behind it.

Callback data is compact text well under Telegram's 64-byte limit::

    m:<vtag>:<token>:<offset>   More: the next page of the question stored under <token>
    c:<vtag>:<passage id>:<l>   Context: the passages around it (l = z|e, the reply's language)
    s:<vtag>:<passage id>:<l>   Source: the article it comes from
    p:<page>:<l>                /sources: that page of the article list (of the live version)

`vtag` names the index version the ids belong to: passage ids are only meaningful within
one version, so a button from before a rebuild is answered politely instead of showing
the wrong paragraph. Anything that does not parse (an old bot's buttons, forged data) is
treated the same way. The question text is too long for callback data, so "More" refers
to a `QuestionStore` token: a bounded SQLite table beside the index, so the buttons still
work after the bot restarts.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from telegram_bot.i18n import t
from telegram_bot.pipeline import Kind, Reply

log = logging.getLogger(__name__)

MORE, CONTEXT, SOURCE, SOURCES_PAGE = "m", "c", "s", "p"
MAX_CALLBACK_BYTES = 64

_MORE_RE = re.compile(r"m:([0-9a-f]{8}):([A-Za-z0-9_-]{1,16}):(\d{1,4})")
_ROW_RE = re.compile(r"([cs]):([0-9a-f]{8}):(\d{1,19}):([ze])")
_PAGE_RE = re.compile(r"p:(\d{1,6}):([ze])")
_LANG_CODES = {"zh": "z", "en": "e"}
_CODE_LANGS = {v: k for k, v in _LANG_CODES.items()}


@dataclass(frozen=True)
class ButtonData:
    action: str
    vtag: str
    passage_id: int = 0
    token: str = ""
    offset: int = 0
    lang: str = "en"

    def encode(self) -> str:
        if self.action == MORE:
            data = f"{MORE}:{self.vtag}:{self.token}:{self.offset}"
        elif self.action == SOURCES_PAGE:
            data = f"{SOURCES_PAGE}:{self.offset}:{_LANG_CODES.get(self.lang, 'e')}"
        else:
            data = f"{self.action}:{self.vtag}:{self.passage_id}:{_LANG_CODES.get(self.lang, 'e')}"
        if len(data.encode("utf-8")) > MAX_CALLBACK_BYTES:
            raise ValueError("callback data over Telegram's 64-byte limit")
        return data


def decode(data: object) -> ButtonData | None:
    """The button's meaning, or None for anything we did not produce."""
    if not isinstance(data, str) or len(data) > MAX_CALLBACK_BYTES:
        return None
    if match := _MORE_RE.fullmatch(data):
        return ButtonData(MORE, match[1], token=match[2], offset=int(match[3]))
    if match := _PAGE_RE.fullmatch(data):
        return ButtonData(SOURCES_PAGE, "", offset=int(match[1]), lang=_CODE_LANGS[match[2]])
    if match := _ROW_RE.fullmatch(data):
        return ButtonData(match[1], match[2], passage_id=int(match[3]), lang=_CODE_LANGS[match[4]])
    return None


class QuestionStore:
    """Questions behind "More" buttons by short random token, in SQLite (sqlite-utils).

    Kept in a file beside the index so the buttons outlive a restart, but only as long as the
    buttons need them: questions older than `retention_days` are deleted (0 = memory only, never
    on disk), and at most `size` are kept. Its methods block (SQLite): the bot calls them
    through `asyncio.to_thread`. A file that is genuinely corrupt is moved aside (`.broken`)
    and recreated; a file that is only unusable now (locked, read-only, disk full) is left
    alone and the questions are kept in memory until a restart.
    """

    FILE_NAME = "bot-state.sqlite"

    def __init__(
        self,
        path: Path | None,
        size: int = 50_000,
        *,
        retention_days: float = 7.0,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        self.size = size
        self.busy_timeout = busy_timeout
        # In memory (retention 0) questions live until a restart, bounded by `size` alone.
        self.retention = retention_days * 86_400 if retention_days > 0 else float("inf")
        self.path: Path | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._puts = 0
        connection = None
        if path is not None and retention_days > 0:
            connection = self._open_file(path)
        self._db = sqlite_utils.Database(connection or self._connect(":memory:"))
        self._purge()

    def _open_file(self, path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = self._connect(str(path))
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                # Damaged or foreign: set it aside and start afresh; losing old buttons is
                # better than losing them all until someone notices.
                aside = path.with_name(path.name + ".broken")
                path.replace(aside)
                log.warning("%s was not a usable database (%s); moved to %s", path, exc, aside)
                connection = self._connect(str(path))
        except (OSError, sqlite3.Error) as exc:
            log.warning("keeping More-button questions in memory: cannot use %s (%s)", path, exc)
            return None
        self.path = path
        return connection

    def _connect(self, target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout)
        try:
            if target != ":memory:":
                check = conn.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # losing the last button on power loss is fine
            columns = {row[1] for row in conn.execute("PRAGMA table_info(questions)")}
            if columns and "created" not in columns:  # from a version that kept questions forever
                conn.execute("drop table questions")
            conn.execute(
                "create table if not exists questions "
                "(seq integer primary key autoincrement, token text unique not null, question text not null, "
                "lang text not null, created real not null)"
            )
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    @classmethod
    def beside_index(cls, index_dir: Path, size: int = 50_000, *, retention_days: float = 7.0) -> QuestionStore:
        return cls(Path(index_dir) / cls.FILE_NAME, size, retention_days=retention_days)

    def put(self, question: str, lang: str) -> str:
        token = secrets.token_urlsafe(6)
        with self._lock:
            try:
                row = {"token": token, "question": question, "lang": lang, "created": self._clock()}
                self._db["questions"].insert(row)
                self._puts += 1
                if self._puts % 256 == 0 or self.size < 256:
                    self._db.execute(
                        "delete from questions where seq <= (select max(seq) from questions) - ?", [self.size]
                    )
                    self._purge_locked()
            except sqlite3.Error as exc:  # a full disk must not cost the answer, only its button
                log.warning("could not store a More-button question: %s", exc)
        return token

    def get(self, token: str) -> tuple[str, str] | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "select question, lang from questions where token = ? and created >= ?",
                    [token, self._clock() - self.retention],
                ).fetchone()
            except sqlite3.Error as exc:
                log.warning("could not read a More-button question: %s", exc)
                return None
        return (row[0], row[1]) if row else None

    def _purge(self) -> None:
        with self._lock:
            try:
                self._purge_locked()
            except sqlite3.Error as exc:
                log.warning("could not delete expired More-button questions: %s", exc)

    def _purge_locked(self) -> None:
        self._db.execute("delete from questions where created < ?", [self._clock() - self.retention])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Genuine corruption, as opposed to a file that is locked, read-only or on a full disk."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def keyboard(reply: Reply, vtag: str, token: str | None) -> InlineKeyboardMarkup | None:
    """More / Context / Source under an answer (none under help or no-answer texts)."""
    if reply.kind not in (Kind.ANSWER, Kind.WEAK) or not reply.hits:
        return None
    top = reply.hits[0].passage_id
    row = []
    if reply.kind is Kind.ANSWER and reply.has_more and token:
        more = ButtonData(MORE, vtag, token=token, offset=reply.offset + len(reply.hits))
        row.append(InlineKeyboardButton(t(reply.lang, "btn_more"), callback_data=more.encode()))
    row.append(
        InlineKeyboardButton(
            t(reply.lang, "btn_context"),
            callback_data=ButtonData(CONTEXT, vtag, top, lang=reply.lang).encode(),
        )
    )
    row.append(
        InlineKeyboardButton(
            t(reply.lang, "btn_source"), callback_data=ButtonData(SOURCE, vtag, top, lang=reply.lang).encode()
        )
    )
    return InlineKeyboardMarkup([row])


def sources_keyboard(lang: str, page: int, pages: int) -> InlineKeyboardMarkup | None:
    """Newer / Older under a /sources page (none when everything fits on one)."""
    row = []
    if page > 0:
        data = ButtonData(SOURCES_PAGE, "", offset=page - 1, lang=lang).encode()
        row.append(InlineKeyboardButton(t(lang, "btn_newer"), callback_data=data))
    if page + 1 < pages:
        data = ButtonData(SOURCES_PAGE, "", offset=page + 1, lang=lang).encode()
        row.append(InlineKeyboardButton(t(lang, "btn_older"), callback_data=data))
    return InlineKeyboardMarkup([row]) if row else None
