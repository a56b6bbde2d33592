"""Just enough of the Telegram Bot API on loopback for the bot benchmarks (`perf.bench_bot`,
`feeds.run`): questions go in as long-polled text messages, replies are kept per chat.

The tests have their own, stricter fake (`tests/fake_telegram.py`: Telegram's checks on what
the bot sends, scripted faults, every call recorded); the benchmark only drives load, and
benchmarks never import the tests. Methods it does not know answer `true`, so a new call the
bot makes at start-up does not stop the benchmark.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_USER = {"id": 777000222, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
POLL_SECONDS = 10.0  # the longest a getUpdates waits (Telegram's own cap is larger)


class BenchBotAPI:
    """A loopback Bot API for one token: `ask` queues a question, `wait_for` waits on `answered`."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._cond = threading.Condition()
        self._updates: list[dict[str, Any]] = []
        self._next_update = 1
        self._next_message = 1
        self._replies: dict[int, list[tuple[float, str]]] = {}  # chat id -> (monotonic time, plain text) sent
        self._closed = False
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bench-bot-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/bot"

    def __enter__(self) -> BenchBotAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()

    def ask(self, text: str, chat_id: int) -> None:
        """A private text message from user `chat_id`."""
        with self._cond:
            user = {"id": chat_id, "is_bot": False, "first_name": "Bench", "language_code": "zh-hans"}
            message = {
                "message_id": self._next_message,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private", "first_name": "Bench"},
                "from": user,
                "text": text,
            }
            self._updates.append({"update_id": self._next_update, "message": message})
            self._next_update += 1
            self._next_message += 1
            self._cond.notify_all()

    def answered(self, chats: set[int]) -> int:
        """How many of `chats` have been sent a message."""
        with self._cond:
            return sum(1 for chat in chats if self._replies.get(chat))

    def replies(self, chat_id: int) -> list[tuple[float, str]]:
        """The messages sent to a chat: when (`time.monotonic()`) and their text without markup."""
        with self._cond:
            return list(self._replies.get(chat_id, ()))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """The `result` of one Bot API call."""
        if method == "getMe":
            return BOT_USER
        if method == "getUpdates":
            return self._poll(int(params.get("offset") or 0), float(params.get("timeout") or 0))
        if method in ("sendMessage", "editMessageText"):
            chat_id = int(params["chat_id"])
            text = html.unescape(re.sub(r"<[^>]*>", "", str(params.get("text", ""))))
            with self._cond:
                if method == "sendMessage":
                    self._replies.setdefault(chat_id, []).append((time.monotonic(), text))
                self._next_message += 1
                message_id = self._next_message
                self._cond.notify_all()
            chat = {"id": chat_id, "type": "private", "first_name": "Bench"}
            return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": BOT_USER, "text": "."}
        return True

    def _poll(self, offset: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + min(timeout, POLL_SECONDS)
        with self._cond:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closed and time.monotonic() < deadline:
                self._cond.wait(min(deadline - time.monotonic(), 0.2))
            return list(self._updates[:100])


def _handler(api: BenchBotAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            prefix = f"/bot{api.token}/"
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not url.path.startswith(prefix):
                self._send(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            if (self.headers.get("Content-Type") or "").startswith("application/json") and raw:
                params = json.loads(raw)
            else:
                params = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            self._send(200, {"ok": True, "result": api.call(url.path[len(prefix) :], params)})

        do_GET = do_POST

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the bot gave up (e.g. stopped mid long-poll)
                self.close_connection = True

    return Handler
