"""Who gets answered: the optional allowlist and the per-user flood limit.

Both are cheap, in-memory and checked before any retrieval, so a refused or flooding user
never takes worker threads from the others.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from enum import Enum


class Verdict(Enum):
    ALLOW = "allow"
    NOTICE = "notice"  # refuse and say so (once)
    SILENT = "silent"  # refuse without a word (already told)


class Allowlist:
    """When ids are configured, only those users or chats are served; everyone else gets
    one polite refusal and then silence (so a stranger cannot make the bot spam a group)."""

    def __init__(self, ids: Iterable[int], *, remember: int = 10_000) -> None:
        self.ids = frozenset(ids)
        self._told: OrderedDict[int, None] = OrderedDict()
        self._remember = remember

    def allows(self, user_id: int | None, chat_id: int | None) -> bool:
        return not self.ids or user_id in self.ids or chat_id in self.ids

    def check(self, user_id: int | None, chat_id: int | None) -> Verdict:
        """For messages: ALLOW, or NOTICE the first time a stranger writes, then SILENT."""
        if self.allows(user_id, chat_id):
            return Verdict.ALLOW
        key = chat_id if chat_id is not None else user_id
        if key is None or key in self._told:
            return Verdict.SILENT
        self._told[key] = None
        if len(self._told) > self._remember:
            self._told.popitem(last=False)
        return Verdict.NOTICE


class FloodGate:
    """At most `rate` questions per user per `window` seconds (sliding window).

    The first question over the limit gets a short notice, the rest of the burst is
    ignored until the window frees up, so one flooding user costs almost nothing.
    """

    def __init__(self, rate: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.window = window
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}
        self._noticed: dict[int, float] = {}

    def check(self, user_id: int | None) -> Verdict:
        if user_id is None or self.rate <= 0 or self.window <= 0:
            return Verdict.ALLOW
        now = self._clock()
        if len(self._seen) > 10_000:
            self._forget(now)
        stamps = self._seen.setdefault(user_id, deque())
        while stamps and now - stamps[0] >= self.window:
            stamps.popleft()
        if len(stamps) < self.rate:
            stamps.append(now)
            self._noticed.pop(user_id, None)
            return Verdict.ALLOW
        if user_id in self._noticed:
            return Verdict.SILENT
        self._noticed[user_id] = now
        return Verdict.NOTICE

    def _forget(self, now: float) -> None:
        for user_id in [u for u, s in self._seen.items() if not s or now - s[-1] >= self.window]:
            del self._seen[user_id]
            self._noticed.pop(user_id, None)
