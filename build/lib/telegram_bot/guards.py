"""Who gets answered: the optional allowlist and sliding-window flood limits.

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
    """At most `rate` updates per key (a user, a group) per `window` seconds (sliding window).

    The first update over the limit gets NOTICE, at most once per window, and the rest SILENT:
    a flooder receives at most `rate` + 1 replies in any window and costs almost nothing.
    """

    def __init__(self, rate: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.window = window
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}
        self._noticed: dict[int, float] = {}

    def check(self, key: int | None) -> Verdict:
        if key is None or self.rate <= 0 or self.window <= 0:
            return Verdict.ALLOW
        now = self._clock()
        if len(self._seen) > 10_000:
            self._forget(now)
        stamps = self._seen.setdefault(key, deque())
        while stamps and now - stamps[0] >= self.window:
            stamps.popleft()
        if len(stamps) < self.rate:
            stamps.append(now)
            return Verdict.ALLOW
        noticed = self._noticed.get(key)
        if noticed is not None and now - noticed < self.window:
            return Verdict.SILENT
        self._noticed[key] = now
        return Verdict.NOTICE

    def _forget(self, now: float) -> None:
        for key in [k for k, s in self._seen.items() if not s or now - s[-1] >= self.window]:
            del self._seen[key]
            self._noticed.pop(key, None)
