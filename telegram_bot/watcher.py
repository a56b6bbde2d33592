"""Switch the running bot to newly published index versions without a restart."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("telegram_bot")


class Refreshable(Protocol):
    """What is watched: the bot's `Serving` (or a `QAService`)."""

    @property
    def version(self) -> str: ...

    async def refresh(self) -> bool: ...


async def watch_index(qa: Refreshable, interval: float) -> None:
    """Check for a new version every `interval` seconds (0 = never); problems are logged once
    per distinct error, not every few seconds, while the old version keeps serving."""
    if interval <= 0:
        return
    last_error = ""
    while True:
        await asyncio.sleep(interval)
        try:
            await qa.refresh()
            last_error = ""
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != last_error:
                log.error("cannot switch to the newly published index (still serving %s): %s", qa.version, message)
            last_error = message
