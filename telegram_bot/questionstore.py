"""The questions behind "More" buttons, by short random token, in the state file.

Callback data holds at most 64 bytes, so a "More" button carries a token and the question
waits here: in the state file (`telegram_bot.statefile`) so the buttons outlive a restart,
but only as long as they need it: `retention_days`, and at most `size` questions.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from telegram_bot.statefile import StateStore

log = logging.getLogger(__name__)


class QuestionStore(StateStore):
    """Questions (as searched, so the next page continues them) and their reply language."""

    WHAT = "More-button questions"

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
        self.purge_every = 1 if size < 256 else 256
        super().__init__(path, retention_days=retention_days, clock=clock, busy_timeout=busy_timeout)

    def _create(self, conn: sqlite3.Connection) -> None:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(questions)")}
        if columns and "created" not in columns:  # from a version that kept questions forever
            conn.execute("drop table questions")
        conn.execute(
            "create table if not exists questions "
            "(seq integer primary key autoincrement, token text unique not null, question text not null, "
            "lang text not null, created real not null)"
        )

    def put(self, question: str, lang: str) -> str:
        token = secrets.token_urlsafe(6)
        with self._lock:
            try:
                row = {"token": token, "question": question, "lang": lang, "created": self._clock()}
                self._db["questions"].insert(row)
                self._wrote_locked()
            except sqlite3.Error as exc:  # a full disk must not cost the answer, only its button
                log.warning("could not store a More-button question: %s", exc)
        return token

    def get(self, token: str) -> tuple[str, str] | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "select question, lang from questions where token = ? and created >= ?", [token, self._cutoff()]
                ).fetchone()
            except sqlite3.Error as exc:
                log.warning("could not read a More-button question: %s", exc)
                return None
        return (row[0], row[1]) if row else None

    def _purge_locked(self) -> None:
        self._db.execute("delete from questions where seq <= (select max(seq) from questions) - ?", [self.size])
        self._db.execute("delete from questions where created < ?", [self._cutoff()])
