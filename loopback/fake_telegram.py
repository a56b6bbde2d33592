"""A fake Telegram Bot API for the tests and benchmarks, in process or over loopback HTTP.

- `FakeTelegram`: the Bot API methods the bot uses, with Telegram's own checks applied to
  what it is sent (HTML parse mode parsed like Telegram does, 4096-unit limit, 64-byte
  callback data) and scriptable faults (HTTP status, 429 retry_after, dropped connections,
  timeouts). Every call is recorded.
- `FakeBotAPIServer`: serves a `FakeTelegram` at `http://127.0.0.1:<port>/bot<token>/<method>`
  with long-polling `getUpdates`, for running `bot.py` as a real subprocess.
- `RecordingRequest`: a `telegram.request.BaseRequest` that hands PTB's requests to a
  `FakeTelegram` directly, for handler tests with real PTB objects and no sockets.
- `Payloads`: real-looking update JSON for `Update.de_json`.

The HTML checker is written from Telegram's documentation, independently of the bot's
renderer, so tests can use it as the judge of "valid Telegram HTML".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from telegram import Update
from telegram.error import TimedOut
from telegram.ext import Application
from telegram.request import BaseRequest, RequestData

from settings import Config

MESSAGE_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64

# ---------------------------------------------------------------- Telegram HTML
# https://core.telegram.org/bots/api#html-style
ALLOWED_TAGS = {
    "b": set(),
    "strong": set(),
    "i": set(),
    "em": set(),
    "u": set(),
    "ins": set(),
    "s": set(),
    "strike": set(),
    "del": set(),
    "tg-spoiler": set(),
    "span": {"class"},
    "a": {"href"},
    "tg-emoji": {"emoji-id"},
    "code": {"class"},
    "pre": set(),
    "blockquote": {"expandable"},
}
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class TelegramHTMLError(ValueError):
    """What Telegram answers with "Bad Request: can't parse entities"."""


class _TelegramHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            raise TelegramHTMLError(f"unsupported start tag {tag!r}")
        for name, _ in attrs:
            if name not in ALLOWED_TAGS[tag]:
                raise TelegramHTMLError(f"unsupported attribute {name!r} of tag {tag!r}")
        if tag == "a" and not dict(attrs).get("href"):
            raise TelegramHTMLError("a tag without href")
        if tag == "blockquote" and "blockquote" in self.stack:
            raise TelegramHTMLError("nested blockquote")
        self.stack.append(tag)
        self.tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise TelegramHTMLError(f"self-closing tag {tag!r}")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise TelegramHTMLError(f"unmatched end tag {tag!r}")
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for bad in "<>&":
            if bad in data:
                raise TelegramHTMLError(f"unescaped {bad!r} in text")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in NAMED_ENTITIES:
            raise TelegramHTMLError(f"unsupported entity &{name};")
        self.text.append(NAMED_ENTITIES[name])

    def handle_charref(self, name: str) -> None:
        try:
            code = int(name[1:], 16) if name[:1] in "xX" else int(name)
            self.text.append(chr(code))
        except (ValueError, OverflowError) as exc:
            raise TelegramHTMLError(f"bad character reference &#{name};") from exc

    def handle_comment(self, data: str) -> None:
        raise TelegramHTMLError("comments are not supported")

    def handle_decl(self, decl: str) -> None:
        raise TelegramHTMLError("declarations are not supported")

    def handle_pi(self, data: str) -> None:
        raise TelegramHTMLError("processing instructions are not supported")

    def unknown_decl(self, data: str) -> None:
        raise TelegramHTMLError("CDATA is not supported")


@dataclass(frozen=True)
class ParsedHTML:
    text: str  # the message text after entity parsing
    tags: tuple[str, ...]  # every tag opened, in order

    @property
    def length(self) -> int:
        return utf16_len(self.text)


def parse_html(markup: str) -> ParsedHTML:
    """Parse like Telegram's HTML parse mode; raises `TelegramHTMLError` where Telegram would."""
    parser = _TelegramHTML()
    parser.feed(markup)
    parser.close()
    if parser.stack:
        raise TelegramHTMLError(f"unclosed tags {parser.stack}")
    return ParsedHTML("".join(parser.text), tuple(parser.tags))


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ---------------------------------------------------------------- the fake API
class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class Fault:
    """One scripted failure for the next call(s) of `method`."""

    method: str
    status: int = 0  # HTTP error status (429 with retry_after, 500, 502, ...)
    retry_after: int | None = None
    reset: bool = False  # drop the connection without an answer
    timeout: bool = False  # in process: raise TimedOut; over HTTP: stall for `stall` seconds
    connect_timeout: bool = False  # in process: TimedOut caused by httpx.ConnectTimeout (never sent)
    stall: float = 0.0
    times: int = 1
    description: str = ""  # the error text Telegram would send (default: "fault <status>")


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    result: Any = None
    error: str = ""
    fault: str = ""
    at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return self.status == 200


JSON_PARAMS = {
    "reply_markup",
    "allowed_updates",
    "link_preview_options",
    "reply_parameters",
    "results",
    "button",
    "commands",
    "entities",
    "scope",
}

BOT_USER = {
    "id": 777000111,
    "is_bot": True,
    "first_name": "Crackdown QA",
    "username": "crackdown_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": True,
}


class FakeTelegram:
    """The Bot API's behaviour as far as the bot uses it. Thread-safe."""

    def __init__(self, token: str, bot_user: dict[str, Any] | None = None) -> None:
        self.token = token
        self.bot_user = dict(bot_user or BOT_USER)
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.updates: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self._message_id = 10_000
        self.closed = False
        self.files: dict[str, bytes] = {}  # file_id -> content, served by getFile + the file URL
        self.webhook: dict[str, Any] | None = None  # what setWebhook set (url, secret_token, ...)

    # ----- scripting
    def inject(self, method: str, **fault: Any) -> None:
        with self.cond:
            self.faults.append(Fault(method, **fault))

    def push(self, update: dict[str, Any]) -> None:
        with self.cond:
            self.updates.append(update)
            self.cond.notify_all()

    def take_fault(self, method: str) -> Fault | None:
        with self.cond:
            for fault in self.faults:
                if fault.method == method:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ----- inspection
    def recorded(self, method: str | None = None, *, ok: bool | None = True) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if (method is None or c.method == method) and (ok is None or c.ok == ok)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def record(self, call: Call) -> None:
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    # ----- methods
    def handle(self, method: str, params: dict[str, Any], *, poll: bool = True) -> Any:
        """The `result` of a successful call; raises `ApiError` like Telegram."""
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        return handler(params, poll) if method == "getUpdates" else handler(params)

    def api_getMe(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    def api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        with self.cond:
            self.webhook = None
        return True

    def api_setWebhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url and not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: invalid URL")
        with self.cond:
            self.webhook = {"url": url, "secret_token": secret, "allowed_updates": params.get("allowed_updates")}
            if not url:
                self.webhook = None
            self.cond.notify_all()
        return True

    def api_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    def api_close(self, params: dict[str, Any]) -> Any:
        return True

    def api_getUpdates(self, params: dict[str, Any], poll: bool) -> Any:
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0) if poll else 0.0
        deadline = time.monotonic() + min(timeout, 10.0)
        with self.cond:
            if offset:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.2))
            return list(self.updates[:100])

    def _check_markup(self, params: dict[str, Any]) -> None:
        markup = params.get("reply_markup")
        if not markup:
            return
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and len(data.encode("utf-8")) > CALLBACK_DATA_LIMIT:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")

    def _check_text(self, text: Any, parse_mode: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if parse_mode == "HTML":
            try:
                plain = parse_html(text).text
            except TelegramHTMLError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif parse_mode:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        else:
            plain = text
        if utf16_len(plain) > MESSAGE_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        return plain

    def _message(self, chat_id: Any, plain: str) -> dict[str, Any]:
        with self.cond:
            self._message_id += 1
            message_id = self._message_id
        chat_id = int(chat_id)
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        if chat_id < 0:
            chat["title"] = "Test group"
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")},
            "text": plain,
        }

    def api_sendMessage(self, params: dict[str, Any]) -> Any:
        if "chat_id" not in params:
            raise ApiError(400, "Bad Request: chat_id is empty")
        plain = self._check_text(params.get("text"), params.get("parse_mode"))
        self._check_markup(params)
        return self._message(params["chat_id"], plain)

    def api_editMessageText(self, params: dict[str, Any]) -> Any:
        plain = self._check_text(params.get("text"), params.get("parse_mode"))
        self._check_markup(params)
        if params.get("inline_message_id"):
            return True
        message = self._message(params["chat_id"], plain)
        message["message_id"] = int(params["message_id"])
        message["edit_date"] = int(time.time())
        return message

    def api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        if len(str(params.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    def api_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id") or "")
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        size = len(self.files[file_id])
        if size > 20 * 1024 * 1024:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": size,
            "file_path": f"documents/{file_id}",
        }

    def file_content(self, path: str) -> bytes | None:
        """The bytes behind a `file_path` handed out by getFile (the file download URL)."""
        prefix = "documents/"
        return self.files.get(path[len(prefix) :]) if path.startswith(prefix) else None

    def api_answerInlineQuery(self, params: dict[str, Any]) -> Any:
        results = params.get("results") or []
        if len(results) > 50:
            raise ApiError(400, "Bad Request: RESULTS_TOO_MUCH")
        for result in results:
            if len(str(result.get("id", "")).encode("utf-8")) > 64:
                raise ApiError(400, "Bad Request: RESULT_ID_INVALID")
            content = result.get("input_message_content") or {}
            self._check_text(content.get("message_text"), content.get("parse_mode"))
        return True


def decode_params(raw: dict[str, str]) -> dict[str, Any]:
    """Form fields as PTB sends them: structured values are JSON strings."""
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in JSON_PARAMS and isinstance(value, str):
            try:
                params[key] = json.loads(value)
                continue
            except ValueError:
                pass
        params[key] = value
    return params


# ---------------------------------------------------------------- in process
class RecordingRequest(BaseRequest):
    """PTB's network layer replaced by a direct call into a `FakeTelegram`.

    Faults behave like their network counterparts: an HTTP status goes through PTB's own
    error mapping, `reset` raises ConnectionResetError (PTB wraps it in NetworkError),
    `timeout` raises TimedOut.
    """

    def __init__(self, api: FakeTelegram) -> None:
        self.api = api

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        if "/file/bot" in url:
            content = self.api.file_content(url.split("/file/bot", 1)[1].split("/", 1)[1])
            return (200, content) if content is not None else (404, b"Not Found")
        api_method = url.rsplit("/", 1)[-1]
        params = decode_params(request_data.json_parameters if request_data else {})
        status, body, fault = respond(self.api, api_method, params, poll=False)
        if fault is not None and fault.reset:
            raise ConnectionResetError("connection reset by fake peer")
        if fault is not None and fault.timeout:
            raise TimedOut("fake timeout")
        if fault is not None and fault.connect_timeout:
            raise TimedOut("fake connect timeout") from httpx.ConnectTimeout("fake connect timeout")
        return status, json.dumps(body).encode("utf-8")


def respond(api: FakeTelegram, method: str, params: dict[str, Any], *, poll: bool) -> tuple[int, Any, Fault | None]:
    """Run one API call with fault injection and recording: (status, JSON body, fault)."""
    fault = api.take_fault(method)
    if fault is not None:
        if fault.reset or fault.timeout or fault.connect_timeout:
            kind = "reset" if fault.reset else "timeout" if fault.timeout else "connect_timeout"
            api.record(Call(method, params, 0, fault=kind))
            return 0, None, fault
        body: dict[str, Any] = {
            "ok": False,
            "error_code": fault.status,
            "description": fault.description or f"fault {fault.status}",
        }
        if fault.retry_after is not None:
            body["description"] = f"Too Many Requests: retry after {fault.retry_after}"
            body["parameters"] = {"retry_after": fault.retry_after}
        api.record(Call(method, params, fault.status, error=body["description"], fault=str(fault.status)))
        return fault.status, body, fault
    try:
        result = api.handle(method, params, poll=poll)
    except ApiError as exc:
        body = {"ok": False, "error_code": exc.status, "description": exc.description}
        api.record(Call(method, params, exc.status, error=exc.description))
        return exc.status, body, None
    if method != "getUpdates" or result:
        api.record(Call(method, params, 200, result=result))
    return 200, {"ok": True, "result": result}, None


# ---------------------------------------------------------------- over HTTP
class FakeBotAPIServer:
    """`FakeTelegram` behind a loopback `ThreadingHTTPServer`, PTB `base_url` style."""

    def __init__(self, api: FakeTelegram, host: str = "127.0.0.1") -> None:
        self.api = api
        handler = _make_handler(api)
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-bot-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/bot"

    def __enter__(self) -> FakeBotAPIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.api.cond:
            self.api.closed = True
            self.api.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(api: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def _params(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = dict(parse_qsl(urlsplit(self.path).query))
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if kind == "application/json" and raw:
                return {**query, **json.loads(raw)}
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            return decode_params({**query, **form})

        def _handle(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith(f"/file/bot{api.token}/"):
                content = api.file_content(path[len(f"/file/bot{api.token}/") :])
                self._send_bytes(200, content) if content is not None else self._send_bytes(404, b"Not Found")
                return
            prefix = f"/bot{api.token}/"
            params = self._params()
            if not path.startswith(prefix):
                self._send(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            method = path[len(prefix) :]
            status, body, fault = respond(api, method, params, poll=True)
            if fault is not None and (fault.reset or fault.timeout):
                if fault.timeout:
                    time.sleep(fault.stall)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(status, body)

        def _send(self, status: int, body: Any) -> None:
            self._send_bytes(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json")

        def _send_bytes(self, status: int, payload: bytes, kind: str = "application/octet-stream") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (e.g. the bot stopped mid long-poll)
                self.close_connection = True

        do_POST = _handle
        do_GET = _handle

    return Handler


class WebhookPoster:
    """Telegram's side of a webhook: each pushed update is POSTed to the URL `setWebhook` set,
    with its secret token, over `connections` parallel connections; a failed delivery is retried
    (as Telegram does), up to `attempts` times. Deliveries are recorded as "webhook" calls."""

    def __init__(self, api: FakeTelegram, connections: int = 8, attempts: int = 5) -> None:
        self.api = api
        self.attempts = attempts
        self._stop = False
        self._threads = [
            threading.Thread(target=self._work, name=f"fake-webhook-{i}", daemon=True) for i in range(connections)
        ]

    def __enter__(self) -> WebhookPoster:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.api.cond:
            self._stop = True
            self.api.cond.notify_all()
        for thread in self._threads:
            thread.join(15)

    def _work(self) -> None:
        api = self.api
        with httpx.Client(timeout=15.0) as client:
            while True:
                with api.cond:
                    while not self._stop and not (api.webhook and api.updates):
                        api.cond.wait(0.2)
                    if self._stop:
                        return
                    assert api.webhook is not None
                    update, hook = api.updates.pop(0), dict(api.webhook)
                self._deliver(client, update, hook)

    def _deliver(self, client: httpx.Client, update: dict[str, Any], hook: dict[str, Any]) -> None:
        headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]} if hook.get("secret_token") else {}
        for attempt in range(self.attempts):
            try:
                status = client.post(hook["url"], json=update, headers=headers).status_code
            except httpx.HTTPError as exc:
                status, error = 0, type(exc).__name__
            else:
                error = ""
            self.api.record(Call("webhook", {"update_id": update["update_id"]}, status, error=error))
            if status == 200 or self._stop:
                return
            time.sleep(0.2 * 2**attempt)


# ---------------------------------------------------------------- update payloads
class Payloads:
    """Real-looking update JSON, with increasing update and message ids."""

    def __init__(self, bot_user: dict[str, Any] | None = None) -> None:
        self.bot_user = dict(bot_user or BOT_USER)
        self._update_id = 500
        self._message_id = 100
        self._lock = threading.Lock()

    def _next(self) -> tuple[int, int]:
        with self._lock:
            self._update_id += 1
            self._message_id += 1
            return self._update_id, self._message_id

    @staticmethod
    def user(user_id: int, lang: str | None = "zh-hans", name: str = "Tester") -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": name,
            "username": f"user{user_id}",
        }
        if lang:
            user["language_code"] = lang
        return user

    def message(
        self,
        text: str,
        *,
        chat_id: int = 1001,
        user_id: int | None = None,
        lang: str | None = "zh-hans",
        entities: list[dict[str, Any]] | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        update_id, message_id = self._next()
        uid = user_id if user_id is not None else chat_id
        if chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": "Tester"}
        else:
            chat = {"id": chat_id, "type": "supergroup", "title": "Test group"}
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(uid, lang),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            entities = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}, *(entities or [])]
        if entities:
            message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        return {"update_id": update_id, "message": message}

    def mention(self, question: str, *, chat_id: int, user_id: int, lang: str | None = "zh-hans") -> dict[str, Any]:
        """A group message starting with an @mention of the bot (with its entity)."""
        handle = f"@{self.bot_user['username']}"
        entity = {"type": "mention", "offset": 0, "length": utf16_len(handle)}
        return self.message(f"{handle} {question}", chat_id=chat_id, user_id=user_id, lang=lang, entities=[entity])

    def bot_message(self, text: str, *, chat_id: int, message_id: int) -> dict[str, Any]:
        """A message the bot sent (to reply to)."""
        chat = {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "Test group"}
        sender = {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")}
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            "text": text,
        }

    def callback(self, data: str, *, message: dict[str, Any], user_id: int, lang: str | None = "zh-hans") -> dict:
        update_id, _ = self._next()
        return {
            "update_id": update_id,
            "callback_query": {
                "id": f"cb{update_id}",
                "from": self.user(user_id, lang),
                "chat_instance": "ci-1",
                "message": message,
                "data": data,
            },
        }

    def document(
        self,
        file_id: str,
        file_name: str,
        *,
        caption: str = "",
        chat_id: int = 1001,
        user_id: int | None = None,
        lang: str | None = "zh-hans",
        mime_type: str = "text/html",
        size: int = 0,
    ) -> dict[str, Any]:
        """A document message (a file sent to the bot), with an optional caption like `/add`."""
        update = self.message("", chat_id=chat_id, user_id=user_id, lang=lang)
        message = update["message"]
        del message["text"]
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": size,
        }
        if caption:
            message["caption"] = caption
            if caption.startswith("/"):
                command = caption.split()[0]
                message["caption_entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
        return update

    def inline(self, query: str, *, user_id: int, lang: str | None = "en") -> dict[str, Any]:
        update_id, _ = self._next()
        return {
            "update_id": update_id,
            "inline_query": {
                "id": f"iq{update_id}",
                "from": self.user(user_id, lang),
                "query": query,
                "offset": "",
            },
        }


# ---------------------------------------------------------------- driving an Application
class InProcessBot:
    """A PTB `Application` run without polling: updates in, recorded API calls out.

    Mirrors `run_polling`'s lifecycle: initialize → post_init, then shutdown → post_shutdown;
    with `start`, also start → (job queue running) → stop, as for the watched-feeds job.
    """

    def __init__(self, application: Application, api: FakeTelegram, *, start: bool = False) -> None:
        self.app = application
        self.api = api
        self.start = start

    async def __aenter__(self) -> InProcessBot:
        await self.app.initialize()
        if self.app.post_init is not None:
            await self.app.post_init(self.app)
        if self.start:
            await self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.start:
            await self.app.stop()
        await self.app.shutdown()
        if self.app.post_shutdown is not None:
            await self.app.post_shutdown(self.app)

    async def feed(self, payload: dict[str, Any]) -> list[Call]:
        """Process one update; the API calls made meanwhile (in order)."""
        before = len(self.api.calls)
        await self.app.process_update(Update.de_json(payload, self.app.bot))
        return self.api.calls[before:]


TOKEN = "12345:TEST_ONLY_not_a_real_token_abc"


def run_bot(
    config: Config, scenario: Callable[[InProcessBot, Payloads], Awaitable[None]], *, start: bool = False
) -> FakeTelegram:
    """Start the bot in process, run `scenario`, shut down; the recording API for assertions.
    `start` also runs the job queue (see `InProcessBot`)."""
    from telegram_bot.app import build_application

    api = FakeTelegram(TOKEN)

    async def main() -> None:
        application = build_application(config, TOKEN, request=RecordingRequest(api))
        async with InProcessBot(application, api, start=start) as bot:
            await scenario(bot, Payloads())

    asyncio.run(main())
    return api


def sent(calls: list[Call], method: str = "sendMessage") -> list[Call]:
    """The successful calls of `method` among `calls`."""
    return [c for c in calls if c.method == method and c.ok]
