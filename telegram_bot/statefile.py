"""`bot-state.sqlite`: the one file beside the index where the bot keeps what must outlive a
restart (the questions behind "More" buttons, the answer log and its votes), and the rules
every table in it follows.

Rows are kept only for `retention_days` (0 = memory only, nothing on disk). A file that is
genuinely corrupt is moved aside (`.broken`) and recreated; a file that is only unusable now
(locked, read-only, disk full) is left alone and the store lives in memory until a restart.
Store methods block (SQLite): the bot calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import sqlite_utils

log = logging.getLogger(__name__)

FILE_NAME = "bot-state.sqlite"


class StateFileError(Exception):
    """The state file cannot be read as asked (`bot.py stats`): one line for the user."""


class StateStore:
    """One store's connection to the state file: opening, retention, locking.

    Subclasses create their tables in `_create` and delete expired rows in `_purge_locked`
    (run on open and every `purge_every` writes). `existing=True` is for readers such as
    `bot.py stats`: the file must already exist and is never created, moved aside or
    replaced by memory; anything wrong raises `StateFileError`.
    """

    FILE_NAME = FILE_NAME
    WHAT = "bot state"  # what the store keeps, for log lines
    purge_every = 256

    def __init__(
        self,
        path: Path | None,
        *,
        retention_days: float = 7.0,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        existing: bool = False,
    ) -> None:
        self.busy_timeout = busy_timeout
        # In memory (retention 0) rows live until a restart.
        self.retention = retention_days * 86_400 if retention_days > 0 else float("inf")
        self.path: Path | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        connection = None
        if existing:
            connection = self._open_existing(path, retention_days)
        elif path is not None and retention_days > 0:
            connection = self._open_file(path)
        self._db = sqlite_utils.Database(connection or self._connect(":memory:"))
        self._purge()

    @classmethod
    def beside_index(cls, index_dir: Path, **options: Any) -> Self:
        return cls(Path(index_dir) / FILE_NAME, **options)

    def _open_file(self, path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = self._connect(str(path))
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                # Damaged or foreign: set it aside and start afresh; losing old rows is
                # better than keeping nothing until someone notices.
                aside = path.with_name(path.name + ".broken")
                path.replace(aside)
                log.warning("%s was not a usable database (%s); moved to %s", path, exc, aside)
                connection = self._connect(str(path))
        except (OSError, sqlite3.Error) as exc:
            log.warning("keeping %s in memory: cannot use %s (%s)", self.WHAT, path, exc)
            return None
        self.path = path
        return connection

    def _open_existing(self, path: Path | None, retention_days: float) -> sqlite3.Connection:
        if retention_days <= 0:
            raise StateFileError("question_retention_days = 0: the bot keeps nothing on disk")
        if path is None or not path.is_file():
            raise StateFileError(f"no bot state at {path} (the bot has not answered anything with this config)")
        try:
            connection = self._connect(path.resolve().as_uri() + "?mode=rw")
        except sqlite3.Error as exc:
            raise StateFileError(f"cannot read {path}: {exc}") from exc
        self.path = path
        return connection

    def _connect(self, target: str) -> sqlite3.Connection:
        uri = target.startswith("file:")
        conn = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout, uri=uri
        )
        try:
            if target != ":memory:":
                check = conn.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # losing the last row on power loss is fine
            self._create(conn)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        """Create (or migrate) this store's tables."""
        raise NotImplementedError

    def _purge_locked(self) -> None:
        """Delete expired rows; the caller holds the lock."""
        raise NotImplementedError

    def _cutoff(self) -> float:
        """Rows created before this moment have expired."""
        return self._clock() - self.retention

    def _wrote_locked(self) -> None:
        """Count a write; purge now and then, so expired rows go while the bot runs."""
        self._writes += 1
        if self._writes % self.purge_every == 0:
            self._purge_locked()

    def _purge(self) -> None:
        with self._lock:
            try:
                self._purge_locked()
            except sqlite3.Error as exc:
                log.warning("could not delete expired %s: %s", self.WHAT, exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Genuine corruption, as opposed to a file that is locked, read-only or on a full disk."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text
