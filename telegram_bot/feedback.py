"""The answer log: every question the bot answered or could not answer, the 👍 / 👎 votes on
those answers, and the figures `/stats` and `python bot.py stats` show.

It lives in the state file (`telegram_bot.statefile`) under the same retention as the
questions behind "More" buttons, so what it knows about users' questions is gone after
`question_retention_days`; so are the rows of an export. Inline queries are not logged: they
arrive while the user types.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from telegram_bot.pipeline import Kind, Reply
from telegram_bot.statefile import FILE_MODE, StateStore

log = logging.getLogger(__name__)

LOGGED = (Kind.ANSWER, Kind.UNSURE, Kind.WEAK, Kind.NOTHING)  # replies to a question (not help, not "More")
TOP = 10


@dataclass(frozen=True)
class Answered:
    """One reply to a question, as the log keeps it."""

    question: str
    lang: str
    kind: Kind
    chat_type: str
    version: str
    passages: tuple[tuple[int, str], ...]  # (passage id, citation) of the passages shown
    ms: int  # from the question reaching the handler to the reply being ready to send

    @classmethod
    def of(cls, reply: Reply, chat_type: str, ms: int) -> Answered:
        shown = tuple((hit.passage_id, hit.citation) for hit in reply.hits)
        return cls(reply.question, reply.lang, reply.kind, chat_type, reply.version, shown, ms)


@dataclass(frozen=True)
class Flagged:
    """A question answered unsure, not covered or given 👎, with how often: what an operator
    should add articles for."""

    question: str
    times: int
    unsure: int
    not_covered: int
    down: int


@dataclass(frozen=True)
class Stats:
    days: tuple[tuple[str, int], ...]  # (UTC date, questions), oldest first
    answered: int  # sure
    unsure: int
    not_covered: int
    up: int
    down: int
    p50_ms: float | None
    p95_ms: float | None
    top: tuple[Flagged, ...]

    @property
    def questions(self) -> int:
        return self.answered + self.unsure + self.not_covered


class AnswerLog(StateStore):
    """Answers and votes in the state file; one vote per user per answer.

    A vote the file cannot take now (another process holds its write lock, e.g. a backup
    tool) is kept in memory and written with the next write or at close: the user was thanked.
    """

    WHAT = "the answer log"
    MAX_PENDING_VOTES = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_votes: list[tuple[int, int, int, float]] = []
        super().__init__(*args, **kwargs)

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "create table if not exists answers (id integer primary key autoincrement, key text not null, "
            "created real not null, question text not null, lang text not null, kind text not null, "
            "chat_type text not null, version text not null, passages text not null, ms integer not null)"
        )
        conn.execute("create index if not exists answers_created on answers (created)")
        conn.execute(
            "create table if not exists votes (answer_id integer not null, user_id integer not null, "
            "up integer not null, created real not null, primary key (answer_id, user_id))"
        )

    def record(self, entry: Answered) -> tuple[int, str] | None:
        """Log a reply; (answer id, key) for its vote buttons, or None when it could not be
        stored (a full disk costs the buttons, not the answer)."""
        key = secrets.token_urlsafe(6)
        passages = [{"id": pid, "citation": citation} for pid, citation in entry.passages]
        row = {
            "key": key,
            "created": self._clock(),
            "question": entry.question,
            "lang": entry.lang,
            "kind": entry.kind.value,
            "chat_type": entry.chat_type,
            "version": entry.version,
            "passages": json.dumps(passages, ensure_ascii=False),
            "ms": entry.ms,
        }
        with self._lock:
            try:
                answer_id = self._db["answers"].insert(row).last_pk
                self._wrote_locked()
            except sqlite3.Error as exc:
                log.warning("could not log an answer: %s", exc)
                return None
            self._write_votes_locked()
        return int(answer_id), key

    def vote(self, answer_id: int, key: str, user_id: int, up: bool) -> bool:
        """Store (or change) `user_id`'s vote; False when there is no such answer (expired,
        forged, or logged in memory before a restart)."""
        with self._lock:
            known = self._db.execute(
                "select 1 from answers where id = ? and key = ? and created >= ?", [answer_id, key, self._cutoff()]
            ).fetchone()
            if known is None:
                return False
            if len(self._pending_votes) >= self.MAX_PENDING_VOTES:
                log.warning("dropping the oldest vote kept in memory: the state file has not taken votes for long")
                del self._pending_votes[0]
            self._pending_votes.append((answer_id, user_id, int(up), self._clock()))
            self._write_votes_locked()
        return True

    def _write_votes_locked(self) -> None:
        """Write the votes kept in memory, in order (a later vote of a user on an answer wins)."""
        if not self._pending_votes:
            return
        conn = self._db.conn
        try:
            conn.execute("begin immediate")  # waits up to the busy timeout for the write lock
            try:
                conn.executemany(
                    "insert into votes (answer_id, user_id, up, created) values (?, ?, ?, ?) "
                    "on conflict (answer_id, user_id) do update set up = excluded.up, created = excluded.created",
                    self._pending_votes,
                )
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")
        except sqlite3.OperationalError as exc:
            log.warning("%d vote(s) kept in memory for now: %s", len(self._pending_votes), exc)
            return
        self._pending_votes.clear()

    def close(self) -> None:
        with self._lock:
            self._write_votes_locked()
            if self._pending_votes:
                log.error("%d vote(s) could not be written before closing", len(self._pending_votes))
        super().close()

    def stats(self, now: float, days: int = 7) -> Stats:
        """Figures for the last `days` UTC calendar days, today included."""
        today = datetime.fromtimestamp(now, UTC).date()
        dates = [today - timedelta(days=i) for i in reversed(range(days))]
        start = datetime(dates[0].year, dates[0].month, dates[0].day, tzinfo=UTC).timestamp()
        rows = self._rows(max(start, now - self.retention))
        per_day = Counter(datetime.fromtimestamp(r[1], UTC).date() for r in rows)
        answered = sum(r[3] == Kind.ANSWER for r in rows)
        unsure = sum(r[3] == Kind.UNSURE for r in rows)
        flagged: dict[str, list[int]] = {}  # folded question -> [times, unsure, not covered, down]
        shown: dict[str, str] = {}
        for row in rows:  # oldest first: the newest spelling of a question is shown
            _, _, question, kind, _, _, _, _, _, downs = row
            if kind == Kind.ANSWER and not downs:
                continue
            folded = question.casefold()
            counts = flagged.setdefault(folded, [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += kind == Kind.UNSURE
            counts[2] += kind not in (Kind.ANSWER, Kind.UNSURE)
            counts[3] += downs
            shown[folded] = question
        top = sorted(flagged.items(), key=lambda item: -item[1][0])[:TOP]  # stable: earlier first on ties
        p50, p95 = _p50_p95([r[4] for r in rows])
        return Stats(
            days=tuple((d.isoformat(), per_day[d]) for d in dates),
            answered=answered,
            unsure=unsure,
            not_covered=len(rows) - answered - unsure,
            up=sum(r[8] for r in rows),
            down=sum(r[9] for r in rows),
            p50_ms=p50,
            p95_ms=p95,
            top=tuple(Flagged(shown[q], *counts) for q, counts in top),
        )

    def export(self, path: Path, *, force: bool = False) -> int:
        """Write every unexpired question that was answered unsure, not covered or got 👎 as
        JSON lines (oldest first), for curating articles and building evaluation sets; returns how many.

        The file holds users' questions: it is created 0600, and an existing one is replaced
        only with `force` (FileExistsError otherwise)."""
        rows = self._rows(self._cutoff())
        count = 0
        with _private_output(path, force) as out:
            for answer_id, created, question, kind, _, lang, version, passages, ups, downs in rows:
                if kind == Kind.ANSWER and not downs:
                    continue
                record = {
                    "id": answer_id,
                    "date": datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds"),
                    "question": question,
                    "lang": lang,
                    "kind": kind,
                    "version": version,
                    "passages": json.loads(passages),
                    "vote": {"up": ups, "down": downs},
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        return count

    def _rows(self, since: float) -> list[tuple]:
        """(id, created, question, kind, ms, lang, version, passages, 👍, 👎) per answer logged
        since `since`, oldest first."""
        with self._lock:
            return self._db.execute(
                "select a.id, a.created, a.question, a.kind, a.ms, a.lang, a.version, a.passages, "
                "coalesce(sum(v.up = 1), 0), coalesce(sum(v.up = 0), 0) "
                "from answers a left join votes v on v.answer_id = a.id where a.created >= ? "
                "group by a.id order by a.created, a.id",
                [since],
            ).fetchall()

    def _purge_locked(self) -> None:
        self._write_votes_locked()  # the retention timer also writes the votes a lock held back
        cutoff = self._cutoff()
        self._db.execute("delete from votes where answer_id in (select id from answers where created < ?)", [cutoff])
        self._db.execute("delete from answers where created < ?", [cutoff])


def _private_output(path: Path, force: bool) -> IO[str]:
    """`path` opened for writing, readable by its owner only; never an existing file without `force`."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a file replaced with --force keeps its old mode otherwise
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _p50_p95(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Median and 95th percentile, interpolating between the closest ranks (as bench/ does)."""
    if not values:
        return None, None
    if len(values) == 1:
        return float(values[0]), float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]
