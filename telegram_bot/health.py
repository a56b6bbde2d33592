"""`GET /healthz` for load balancers and container HEALTHCHECKs, served on the bot's event loop.

A deliberately small HTTP/1.x responder (no framework): it reads one request head of at most
`MAX_HEAD` bytes within `READ_SECONDS`, answers and closes the connection. A body, a slow
(slowloris) or oversized head, or more than `MAX_CONNECTIONS` clients at once are cut off, so a
hostile client costs at most one small buffer for a few seconds. The answer is computed from
what the bot holds in memory: nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("telegram_bot")

MAX_HEAD = 8192
READ_SECONDS = 5.0
MAX_CONNECTIONS = 64
PATH = "/healthz"

Status = Callable[[], tuple[bool, dict[str, Any]]]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout"}
_REASONS |= {431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class HealthServer:
    """Answers `GET /healthz` with `status()`: (able to answer, details) → 200 or 503 + JSON."""

    def __init__(self, status: Status) -> None:
        self._status = status
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        log.info("health endpoint on http://%s:%d%s", host, self.port, PATH)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the health server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), READ_SECONDS)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            status, body, head_only = await self._respond(reader)
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + (b"" if head_only else payload))
            await asyncio.wait_for(writer.drain(), READ_SECONDS)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any], bool]:
        """(status, JSON body, HEAD request) for the one request on this connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_SECONDS)
        except asyncio.LimitOverrunError:
            return 431, {"error": "request head too large"}, False
        except TimeoutError:
            return 408, {"error": "request head not received in time"}, False
        except asyncio.IncompleteReadError:
            return 400, {"error": "incomplete request"}, False
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "not an HTTP/1.x request"}, False
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target != PATH:
            return 404, {"error": f"only {PATH} is served here"}, False
        if method not in ("GET", "HEAD"):
            return 405, {"error": "use GET"}, False
        healthy, details = self._status()
        return (200 if healthy else 503), details, method == "HEAD"
