"""`bot-state.sqlite`: the one file where the bot keeps what must outlive a restart (the
questions behind "More" buttons, the answer log and its votes), and the rules every table in
it follows.

The file lives in `[telegram] state_dir`, apart from the index, so deleting or rebuilding the
index loses no vote. Users' questions are in it: the directory is created 0700 and the file
with SQLite's `-wal`/`-shm` beside it is 0600. Rows are kept only for `retention_days`
(0 = memory only, nothing on disk); the bot deletes expired ones on a timer
(`telegram_bot.components.retention`) as well as now and then on writes. A file that is
genuinely corrupt is moved aside (`.broken`) and recreated; that copy is deleted once
everything in it has expired. A file that is only unusable now
(locked, read-only, disk full) is left alone and the store lives in memory until a restart.
Store methods block (SQLite): the bot calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

log = logging.getLogger(__name__)

FILE_NAME = "bot-state.sqlite"
BROKEN = ".broken"  # suffix of a corrupt state file set aside
SIDE_FILES = ("-wal", "-shm")  # SQLite's files beside a database in WAL mode
DIR_MODE = 0o700
FILE_MODE = 0o600


class StateFileError(Exception):
    """The state file cannot be read as asked (`bot.py stats`): one line for the user."""


def prepare_state_dir(state_dir: Path, legacy_dir: Path | None = None) -> Path:
    """The state file's path in `state_dir`, which is created 0700. A state file that an older
    version kept in `legacy_dir` (the index directory) is moved over first, once: only while
    `state_dir` has none. Problems are logged, not raised: the store then says what it cannot use."""
    state_dir = Path(state_dir)
    path = state_dir / FILE_NAME
    try:
        if not state_dir.is_dir():
            state_dir.mkdir(parents=True, mode=DIR_MODE)
            os.chmod(state_dir, DIR_MODE)  # mkdir's mode is filtered by the umask
        elif state_dir.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; it holds users' questions (chmod 700 it)", state_dir)
        if legacy_dir is not None:
            _move_legacy(Path(legacy_dir), state_dir)
    except OSError as exc:
        log.warning("cannot prepare the state directory %s: %s", state_dir, exc)
    return path


def _move_legacy(legacy_dir: Path, state_dir: Path) -> None:
    old = legacy_dir / FILE_NAME
    if not old.is_file():
        return
    if (state_dir / FILE_NAME).exists():
        log.warning("%s is not used (the state is in %s); delete it", old, state_dir)
        return
    # The database last: a move cut short leaves it behind, and the next start finishes it.
    files = sorted(legacy_dir.glob(FILE_NAME + "*"), key=lambda f: f.name == FILE_NAME)
    for file in files:
        target = state_dir / file.name
        if target.exists():
            continue
        shutil.move(file, target)
        restrict(target)
    log.info("moved the bot state from %s to %s", legacy_dir, state_dir)


def restrict(path: Path) -> None:
    """Make `path` and its SQLite side files (where they exist) readable by their owner only."""
    for file in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        try:
            os.chmod(file, FILE_MODE)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot make %s private: %s", file, exc)


def remove_expired_copy(path: Path, cutoff: float) -> None:
    """Delete the set-aside copy of `path` (`.broken`) when its last write is older than
    `cutoff`: every row in it has expired by then."""
    copy = path.with_name(path.name + BROKEN)
    try:
        if copy.stat().st_mtime >= cutoff:
            return
        copy.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot delete the expired copy %s: %s", copy, exc)
        return
    log.info("deleted %s: everything in it is past the retention", copy)


class StateStore:
    """One store's connection to the state file: opening, retention, locking.

    Subclasses create their tables in `_create` and delete expired rows in `_purge_locked`
    (run by `purge`: on open, on the bot's timer, and every `purge_every` writes).
    `existing=True` is for readers such as `bot.py stats`: the file must already exist and is
    never created, moved aside or replaced by memory; anything wrong raises `StateFileError`.
    """

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
        self.file = path if retention_days > 0 else None  # where it belongs, even if it fell back to memory
        self.path: Path | None = None  # where it is
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        connection = None
        if existing:
            connection = self._open_existing(path, retention_days)
        elif path is not None and retention_days > 0:
            connection = self._open_file(path)
        self._db = sqlite_utils.Database(connection or self._connect(":memory:"))
        self.purge()

    def _open_file(self, path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            try:
                connection = self._connect(str(_private_file(path)))
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                # Damaged or foreign: set it aside and start afresh; losing old rows is
                # better than keeping nothing until someone notices.
                aside = path.with_name(path.name + BROKEN)
                path.replace(aside)  # (SQLite deleted its -wal and -shm on closing it)
                restrict(aside)
                log.warning("%s was not a usable database (%s); moved to %s", path, exc, aside)
                connection = self._connect(str(_private_file(path)))
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
        """Count a write; purge now and then, so expired rows go while the bot is busy."""
        self._writes += 1
        if self._writes % self.purge_every == 0:
            self._purge_locked()

    def purge(self) -> None:
        """Delete expired rows, and the set-aside copy of the file once it holds only expired ones."""
        with self._lock:
            try:
                self._purge_locked()
            except sqlite3.Error as exc:
                log.warning("could not delete expired %s: %s", self.WHAT, exc)
        if self.file is not None:
            remove_expired_copy(self.file, self._cutoff())

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _private_file(path: Path) -> Path:
    """`path`, created empty with mode 0600 if missing, else made 0600 with its side files,
    before SQLite opens it (SQLite gives the -wal and -shm it creates the database's mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    restrict(path)
    return path


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Genuine corruption, as opposed to a file that is locked, read-only or on a full disk."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text
