"""Watched feeds: `[ingest] feeds`, polled by the bot's job queue or `python -m index watch`.

A pass polls every feed that is due with a conditional GET (ETag, Last-Modified), takes the
entries not taken before (by link, guid, or title and summary) through the same path as
`index add` (`index.add.add_entry`), in a limited child process, then builds once. Feed
state lives in `feeds.sqlite` in the index directory (`FeedStore`): validators, last success
and error, consecutive failures with the exponential backoff they cause, articles taken, the
keys of entries taken, and whether the admins were told that the feed is failing (so they
get one message when it starts failing and one when it recovers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from index.add import (
    AddResult,
    Corpus,
    FeedError,
    add_entry,
    build_corpus,
    child_limits,
    read_feed,
)
from index.fetch import Fetcher, FetchError, Resolver
from index.isolate import ChildFailed, run_isolated
from settings import Config

if TYPE_CHECKING:
    from index.build import BuildReport, Progress

FILE_NAME = "feeds.sqlite"
# A failing feed is tried again after poll_minutes, then twice, four times... that long, at most this long.
MAX_BACKOFF_MINUTES = 24 * 60.0
# A pass polls a feed a little before its time: passes come every poll_minutes, not to the second.
_EARLY = 0.1


@dataclass(frozen=True)
class FeedState:
    """What the store knows about one feed (times are Unix seconds, 0 = never)."""

    url: str
    etag: str = ""
    last_modified: str = ""
    last_success: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    failures: int = 0  # consecutive
    next_poll: float = 0.0  # while failing: not before this
    alerted: bool = False  # the admins were told it is failing
    taken: int = 0  # articles added or updated from it

    @property
    def failing(self) -> bool:
        return self.failures > 0


@dataclass(frozen=True)
class FeedPoll:
    """One feed polled: "ok" (read; `taken` holds the keys of its entries taken), "unchanged"
    (304 Not Modified), or "failed" with `error`."""

    url: str
    status: str
    error: str = ""
    etag: str = ""
    last_modified: str = ""
    taken: tuple[tuple[str, ...], ...] = ()
    articles: int = 0  # added or updated

    def line(self) -> str:
        if self.status == "failed":
            return f"feed {self.url}: failed: {self.error}"
        if self.status == "unchanged":
            return f"feed {self.url}: not modified"
        return f"feed {self.url}: {len(self.taken)} new entries, {self.articles} articles added or updated"


@dataclass(frozen=True)
class WatchReport:
    """One pass: the feeds polled, the articles' results, and the build that followed (if any)."""

    polls: tuple[FeedPoll, ...]
    results: tuple[AddResult, ...]
    waiting: tuple[FeedState, ...] = ()  # failing feeds not yet due again
    build: BuildReport | None = None
    build_error: str = ""

    @property
    def ok(self) -> bool:
        return all(p.status != "failed" for p in self.polls) and not self.build_error

    def lines(self) -> list[str]:
        lines = [poll.line() for poll in self.polls]
        for state in self.waiting:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.next_poll))
            lines.append(f"feed {state.url}: failing ({state.failures}x), next try after {when}: {state.last_error}")
        if self.build_error:
            lines.append(f"index not rebuilt: {self.build_error}")
        elif self.build is not None:
            lines.append(self.build.summary())
        return lines


class FeedStore:
    """`feeds.sqlite`: the watched feeds' state and the entries taken from them. Blocking
    (SQLite); open one where it is used and close it (`with`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite_utils.Database(path)
        self._db.conn.execute("PRAGMA busy_timeout = 5000")
        self._db["feeds"].create(
            {field: type(getattr(FeedState(""), field)) for field in FeedState.__dataclass_fields__},
            pk="url",
            if_not_exists=True,
        )
        self._db["entries"].create({"key": str, "feed": str, "taken_at": float}, pk="key", if_not_exists=True)

    @classmethod
    def beside_index(cls, index_dir: Path) -> FeedStore:
        return cls(Path(index_dir) / FILE_NAME)

    def __enter__(self) -> FeedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def state(self, url: str) -> FeedState:
        rows = list(self._db["feeds"].rows_where("url = ?", [url]))
        if not rows:
            return FeedState(url)
        row = rows[0]
        return FeedState(**{**row, "alerted": bool(row["alerted"])})

    def states(self, urls: Iterable[str]) -> list[FeedState]:
        return [self.state(url) for url in urls]

    def known_keys(self) -> set[str]:
        return {row["key"] for row in self._db.query("select key from entries")}

    def record(self, poll: FeedPoll, now: float, poll_minutes: float) -> FeedState:
        """Store how a poll went: validators and taken entries, or one more failure and when
        to try again."""
        old = self.state(poll.url)
        if poll.status == "failed":
            failures = old.failures + 1
            backoff = min(poll_minutes * 2 ** (failures - 1), max(MAX_BACKOFF_MINUTES, poll_minutes))
            new = replace(
                old, last_error=poll.error, last_error_at=now, failures=failures, next_poll=now + backoff * 60
            )
        else:
            new = replace(old, last_success=now, failures=0, next_poll=0.0, taken=old.taken + poll.articles)
            if poll.status == "ok":
                new = replace(new, etag=poll.etag, last_modified=poll.last_modified)
        with self._db.conn:
            self._db["feeds"].upsert(asdict(new), pk="url")
            self._db["entries"].upsert_all(
                ({"key": key, "feed": poll.url, "taken_at": now} for keys in poll.taken for key in keys), pk="key"
            )
        return new

    def due(self, urls: Sequence[str], now: float, poll_minutes: float) -> tuple[list[FeedState], list[FeedState]]:
        """(feeds to poll now, failing feeds still backing off)."""
        early = _EARLY * poll_minutes * 60
        states = self.states(urls)
        return [s for s in states if s.next_poll - early <= now], [s for s in states if s.next_poll - early > now]

    def pending_alerts(self, urls: Sequence[str]) -> list[FeedState]:
        """Feeds whose admins have not been told that they started failing, or recovered."""
        return [s for s in self.states(urls) if s.failing != s.alerted]

    def mark_alerted(self, url: str, alerted: bool) -> None:
        with self._db.conn:
            self._db["feeds"].update(url, {"alerted": alerted})


def watch_once(
    config: Config,
    *,
    isolated: bool = True,
    resolver: Resolver | None = None,
    cancel: threading.Event | None = None,
    on_result: Callable[[AddResult], None] | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
    now: float | None = None,
) -> WatchReport:
    """Poll the feeds that are due, take their new entries into the corpus, then build once
    if any entry was read."""
    feeds = list(dict.fromkeys(config.ingest.feeds))
    started = time.time() if now is None else now
    poll_minutes = config.ingest.poll_minutes
    Corpus(Path(config.corpus.dir))  # AddError before anything starts
    with FeedStore.beside_index(config.index.dir) as store:
        due, waiting = store.due(feeds, started, poll_minutes)
        known = store.known_keys()
    polls: list[FeedPoll] = []
    results: list[AddResult] = []

    def on_event(event: AddResult | FeedPoll | str) -> None:
        if isinstance(event, FeedPoll):
            polls.append(event)
            with FeedStore.beside_index(config.index.dir) as store:
                store.record(event, time.time() if now is None else now, poll_minutes)
        elif isinstance(event, AddResult):
            results.append(event)
            if on_result is not None:
                on_result(event)

    if due:
        args = (config, due, known, resolver)
        if isolated:
            current = [due[0].url]

            def track(event: Any) -> None:
                if isinstance(event, str) and event in feeds:
                    current[0] = event
                on_event(event)

            fetches = len(due) * (1 + config.ingest.max_feed_entries)
            try:
                run_isolated(_poll_feeds, args, child_limits(config.ingest, fetches), on_event=track, cancel=cancel)
            except ChildFailed as exc:
                if cancel is None or not cancel.is_set():  # stopping is no failure of the feed
                    on_event(FeedPoll(current[0], "failed", str(exc)))
        else:
            _poll_feeds(*args, on_event)
    report = WatchReport(tuple(polls), tuple(results), tuple(waiting))
    # By the results, as `add` does: articles a stopped pass wrote come back "unchanged" and
    # are built then.
    if not any(r.status != "skipped" for r in results) or (cancel is not None and cancel.is_set()):
        return report
    built, error = build_corpus(config, progress, on_wait)
    return WatchReport(report.polls, report.results, report.waiting, built, error)


def _poll_feeds(
    config: Config, due: list[FeedState], known: set[str], resolver: Resolver | None, emit: Callable[[object], None]
) -> None:
    """Each due feed: emits its URL, its entries' results, then its `FeedPoll`."""
    corpus = Corpus(Path(config.corpus.dir))
    with Fetcher(config.ingest, resolver=resolver) as fetcher:
        for state in due:
            emit(state.url)
            emit(_poll_feed(state, fetcher, corpus, known, config.ingest.max_feed_entries, emit))


def _poll_feed(
    state: FeedState,
    fetcher: Fetcher,
    corpus: Corpus,
    known: set[str],
    max_entries: int,
    emit: Callable[[object], None],
) -> FeedPoll:
    try:
        download = fetcher.get(state.url, etag=state.etag, last_modified=state.last_modified)
        if download.kind == "unchanged":
            return FeedPoll(state.url, "unchanged")
        if download.kind != "feed":
            raise FeedError("not a feed (a web page)")
        feed = read_feed(download, max_entries)
    except (FetchError, FeedError) as exc:
        return FeedPoll(state.url, "failed", str(exc))
    taken: list[tuple[str, ...]] = []
    articles = 0
    for entry in feed.entries:
        if known.intersection(entry.keys):
            continue
        emit(entry.link)
        result = add_entry(entry, feed.title, fetcher, corpus)
        emit(result)
        if result.temporary:
            continue  # tried again at the next poll
        taken.append(entry.keys)
        known.update(entry.keys)
        articles += result.status in ("added", "updated")
    return FeedPoll(state.url, "ok", "", download.etag, download.last_modified, tuple(taken), articles)


def feed_status(config: Config) -> list[dict[str, Any]]:
    """Each watched feed for people (`index info`, `/feeds`): last success, last error,
    articles taken, and when a failing feed is tried again. Never creates the store."""
    path = Path(config.index.dir) / FILE_NAME
    urls = list(dict.fromkeys(config.ingest.feeds))
    if path.exists():
        with FeedStore(path) as store:
            states = store.states(urls)
    else:
        states = [FeedState(url) for url in urls]
    return [
        {
            "url": s.url,
            "last_success": _when(s.last_success),
            "last_error": s.last_error if s.failing else "",
            "last_error_at": _when(s.last_error_at) if s.failing else "",
            "failures": s.failures,
            "next_try": _when(s.next_poll) if s.failing else "",
            "articles_taken": s.taken,
        }
        for s in states
    ]


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""
