"""PTB's AIORateLimiter (Telegram's flood limits, 429 retry_after) plus retries for requests
that never reached Telegram.

Retried: connection errors, 5xx answers and timeouts while connecting or waiting for a pooled
connection. Not retried: a read/write timeout (PTB's `TimedOut` documents that the request may
have been processed: a `sendMessage` retried then would arrive twice) and client errors (400,
403), which would fail the same way again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.ext import AIORateLimiter

log = logging.getLogger("telegram_bot")

# httpx timeouts raised before a single byte of the request was sent.
_UNSENT_TIMEOUTS = (httpx.ConnectTimeout, httpx.PoolTimeout)


def never_sent(exc: NetworkError) -> bool:
    """Whether a failed request certainly did not reach Telegram, so retrying cannot duplicate it."""
    if isinstance(exc, TimedOut):
        return isinstance(exc.__cause__, _UNSENT_TIMEOUTS)
    return True


class RetryingRateLimiter(AIORateLimiter):
    """Flood limits plus exponential backoff for requests that did not reach Telegram."""

    def __init__(self, *, network_retries: int = 4, backoff: float = 0.25, retry_after_retries: int = 3) -> None:
        super().__init__(max_retries=retry_after_retries)
        self.network_retries = network_retries
        self.backoff = backoff

    async def process_request(
        self,
        callback: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        delay = self.backoff
        for attempt in range(self.network_retries + 1):
            try:
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
            except BadRequest:
                raise
            except NetworkError as exc:  # RetryAfter (429) is handled by the parent
                if attempt >= self.network_retries or not never_sent(exc):
                    raise
                log.warning(
                    "%s failed (%s: %s) chat=%s; retry %d/%d in %.2fs",
                    endpoint,
                    type(exc).__name__,
                    exc,
                    data.get("chat_id"),
                    attempt + 1,
                    self.network_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")
