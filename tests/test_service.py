"""The bot as a service (issue 24): /healthz, webhook mode, building and rebuilding the index in the
background while askers are told so, and backup/restore of the corpus and the state.

Bots run in process with real PTB objects over the fake Bot API; webhook mode runs `bot.main`
itself against the fake over loopback HTTP, which posts updates to the bot's webhook port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import DEFAULT_CORPUS, write_config

from index import publish, store
from index.backends import IndexUnavailableError
from index.build import build_index
from loopback.fake_telegram import (
    TOKEN,
    FakeBotAPIServer,
    FakeTelegram,
    InProcessBot,
    Payloads,
    RecordingRequest,
    WebhookPoster,
    parse_html,
    sent,
)
from retrieval import Retriever
from settings import Config, load_config
from telegram_bot import health
from telegram_bot.app import build_application
from telegram_bot.backup import state_path
from telegram_bot.feedback import Answered, AnswerLog
from telegram_bot.pipeline import Kind, rebuild_index
from telegram_bot.state import STATE_KEY, BotState
from telegram_bot.statefile import prepare_state_dir

QUESTION = "断卡行动打掉了多少个犯罪团伙？"
WAIT = 60.0
Scenario = Callable[[threading.Event], None]  # runs beside the bot; the event is set once it stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> None:
    """Until something accepts connections on the loopback `port`."""
    deadline = time.monotonic() + WAIT
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.1)


def service_config(tmp_path: Path, **telegram: Any) -> Config:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        shutil.copytree(DEFAULT_CORPUS, corpus)
    settings = {"health_listen": "127.0.0.1:0", "reload_seconds": 0.2, "user_rate": 1000, **telegram}
    path = write_config(tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index", telegram=settings)
    return load_config(path)


async def healthz(state: BotState) -> tuple[int, dict[str, Any]]:
    assert state.health is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{state.health.port}/healthz")
    return response.status_code, response.json()


async def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def text_of(calls: list) -> str:
    [reply] = sent(calls)
    return parse_html(str(reply.params["text"])).text


def run_service(config: Config, scenario: Callable[[InProcessBot, Payloads, BotState], Any]) -> FakeTelegram:
    api = FakeTelegram(TOKEN)

    async def main() -> None:
        application = build_application(config, TOKEN, request=RecordingRequest(api), warm_up=False)
        async with InProcessBot(application, api) as running:
            await scenario(running, Payloads(), application.bot_data[STATE_KEY])

    asyncio.run(main())
    return api


# ---------------------------------------------------------------- background builds and /healthz


def test_the_first_index_is_built_in_the_background_and_askers_are_told(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    lock = contextlib.ExitStack()
    lock.enter_context(publish.build_lock(config.index.dir, 5))  # another build runs: ours must wait

    async def scenario(running: InProcessBot, p: Payloads, state: BotState) -> None:
        try:
            status, body = await healthz(state)
            assert (status, body) == (503, {"state": "building"})
            waiting = text_of(await running.feed(p.message(QUESTION, chat_id=11)))
            assert waiting == "索引正在建立，请过几分钟再问。"
            english = text_of(await running.feed(p.message("How many gangs?", chat_id=12, lang="en")))
            assert english.startswith("The index is being built")
        finally:
            lock.close()

        async def serving() -> tuple[int, dict[str, Any]] | None:
            status, body = await healthz(state)
            return (status, body) if status == 200 else None

        status, body = await wait_until(serving, "the index to be built")
        live = publish.current_version(config.index.dir)
        assert live is not None
        assert body["state"] == "serving" and body["version"] == live.name
        assert body["articles"] == 1 and body["passages"] > 10 and 0 <= body["age_seconds"] < 600
        answer = await running.feed(p.message(QUESTION, chat_id=13))
        assert "<blockquote>" in str(sent(answer)[0].params["text"]) and "索引正在" not in text_of(answer)

    run_service(config, scenario)


def test_a_model_change_is_rebuilt_while_the_old_version_answers(tmp_path: Path) -> None:
    old = service_config(tmp_path)
    old_version = build_index(old).version
    # Another document prompt is another model key: the live index cannot serve this config.
    config = replace(old, model=replace(old.model, document_prompt="passage: "))
    lock = contextlib.ExitStack()
    lock.enter_context(publish.build_lock(config.index.dir, 5))

    async def scenario(running: InProcessBot, p: Payloads, state: BotState) -> None:
        try:
            status, body = await healthz(state)
            assert status == 200 and body["state"] == "rebuilding" and body["version"] == old_version
            meanwhile = await running.feed(p.message(QUESTION, chat_id=21))
            assert "<blockquote>" in str(sent(meanwhile)[0].params["text"])  # quotes from the old version
            assert text_of(meanwhile).endswith("（索引正在重建：这个回答来自上一个版本。）")
        finally:
            lock.close()

        async def rebuilt() -> dict[str, Any] | None:
            status, body = await healthz(state)
            return body if status == 200 and body["state"] == "serving" else None

        body = await wait_until(rebuilt, "the rebuilt index")
        assert body["version"] != old_version
        after = await running.feed(p.message(QUESTION, chat_id=22))
        assert "索引正在重建" not in text_of(after) and "<blockquote>" in str(sent(after)[0].params["text"])

    run_service(config, scenario)
    live = publish.current_version(config.index.dir)
    assert live is not None
    db = store.open_db(live.db_path, readonly=True)
    try:
        assert store.get_meta(db)["model_key"] == "test-hash|passage: "
    finally:
        db.close()


def test_an_index_this_program_cannot_read_is_rebuilt_and_askers_wait(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    report = build_index(config)
    live = publish.current_version(config.index.dir)
    assert live is not None and report.version == live.name
    db = store.open_db(live.db_path)
    store.set_meta(db, {"schema": store.SCHEMA_VERSION - 1})  # as an older program left it
    db.conn.commit()
    db.close()
    lock = contextlib.ExitStack()
    lock.enter_context(publish.build_lock(config.index.dir, 5))

    async def scenario(running: InProcessBot, p: Payloads, state: BotState) -> None:
        try:
            assert await healthz(state) == (503, {"state": "rebuilding"})
            waiting = text_of(await running.feed(p.message(QUESTION, chat_id=31)))
            assert waiting == "索引正在重建，请过几分钟再问。"
            help_text = text_of(await running.feed(p.message("/sources", chat_id=32, lang="en")))
            assert help_text.startswith("The index is being rebuilt")
        finally:
            lock.close()

        async def rebuilt() -> bool:
            return (await healthz(state))[0] == 200

        await wait_until(rebuilt, "the rebuilt index")
        answer = await running.feed(p.message(QUESTION, chat_id=33))
        assert "<blockquote>" in str(sent(answer)[0].params["text"])

    run_service(config, scenario)


# ---------------------------------------------------------------- the health endpoint itself


def test_the_health_endpoint_bounds_what_a_client_may_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "READ_SECONDS", 0.5)

    async def exchange(port: int, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer

    async def main() -> None:
        up = {"ok": True}
        server = health.HealthServer(lambda: (up["ok"], {"state": "serving" if up["ok"] else "starting"}))
        await server.start("127.0.0.1", 0)
        try:
            port = server.port
            ok = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b'{"state": "serving"}')
            up["ok"] = False
            down = await exchange(port, b"GET /healthz?probe=1 HTTP/1.0\r\n\r\n")
            assert down.startswith(b"HTTP/1.1 503 ") and down.endswith(b'{"state": "starting"}')
            head = await exchange(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ") and head.endswith(b"\r\n\r\n")
            assert (await exchange(port, b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
            assert (await exchange(port, b"GET /admin HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
            assert (await exchange(port, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
            assert (await exchange(port, huge)).startswith(b"HTTP/1.1 431 ")
            # A client that never finishes its request head is cut off (slowloris).
            assert (await exchange(port, b"GET /healthz HTTP/1.1\r\nX-Slow: ")).startswith(b"HTTP/1.1 408 ")
        finally:
            await server.close()

    asyncio.run(main())


# ---------------------------------------------------------------- bot.main in process


@pytest.fixture
def in_process_main(bot_main: Callable[..., int]) -> Iterator[Callable[[list[str], Scenario], int]]:
    """Run `bot.main(argv)` in this (main) thread while `scenario(stopped)` runs in another; unless
    the bot stopped by itself meanwhile, SIGTERM then ends it as an operator would. What PTB
    changes in the process (SIGINT's handler, its closed event loop) is undone after."""
    sigint = signal.getsignal(signal.SIGINT)

    def run(argv: list[str], scenario: Scenario) -> int:
        failure: list[BaseException] = []
        stopped = threading.Event()

        def drive() -> None:
            try:
                scenario(stopped)
            except BaseException as exc:
                failure.append(exc)
            finally:
                if not stopped.is_set():
                    os.kill(os.getpid(), signal.SIGTERM)

        thread = threading.Thread(target=drive, name="scenario")
        thread.start()
        try:
            status = bot_main(*argv)
        finally:
            stopped.set()
            thread.join(WAIT)
            asyncio.set_event_loop(None)  # PTB leaves its closed loop as the current one
        if failure:
            raise failure[0]
        return status

    yield run
    signal.signal(signal.SIGINT, sigint)


def test_webhook_mode_answers_only_requests_with_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process_main: Callable[..., int]
) -> None:
    port, health_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    config = service_config(tmp_path, webhook_url=url, webhook_listen=f"127.0.0.1:{port}")
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        config_file.read_text(encoding="utf-8").replace('"127.0.0.1:0"', f'"127.0.0.1:{health_port}"'),
        encoding="utf-8",
    )
    build_index(config)
    secret = "s3cret_webhook-token"
    api = FakeTelegram(TOKEN)
    p = Payloads()
    with FakeBotAPIServer(api) as server:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("TELEGRAM_BASE_URL", server.base_url)
        monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", secret)

        def scenario(stopped: threading.Event) -> None:
            assert api.wait_for(lambda: api.webhook is not None, WAIT), "setWebhook never called"
            listening(port)  # PTB sets the webhook, then starts its server
            forged = [
                ({}, p.message(QUESTION, chat_id=41)),
                ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, p.message(QUESTION, chat_id=42)),
            ]
            for headers, update in forged:
                assert httpx.post(url, json=update, headers=headers, timeout=10).status_code == 403
            with WebhookPoster(api):
                api.push(p.message(QUESTION, chat_id=43))
                assert api.wait_for(lambda: any(c.params["chat_id"] == "43" for c in api.recorded("sendMessage")), WAIT)
            status = httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=10)
            assert status.status_code == 200 and status.json()["state"] == "serving"

        status = in_process_main(["--config", str(config_file)], scenario)

    assert status == 0
    [hook] = api.recorded("setWebhook")
    assert hook.params["url"] == url and hook.params["secret_token"] == secret
    assert not api.recorded("getUpdates", ok=None)  # no polling in webhook mode
    replies = api.recorded("sendMessage")
    assert [c.params["chat_id"] for c in replies] == ["43"]  # the forged updates caused nothing
    assert "<blockquote>" in str(replies[0].params["text"])
    assert [c.status for c in api.recorded("webhook", ok=None)] == [200]


def test_webhook_mode_without_its_secret_is_one_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bot_main: Callable[..., int]
) -> None:
    service_config(tmp_path, webhook_url="https://bot.example.org/hook")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    assert bot_main("--config", str(tmp_path / "config.toml")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("TELEGRAM_WEBHOOK_SECRET must hold the webhook's secret token")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "not allowed!")
    assert bot_main("--config", str(tmp_path / "config.toml")) == 2
    assert "1-256 characters" in capsys.readouterr().err


def test_a_first_build_that_cannot_run_stops_the_bot_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process_main: Callable[..., int], capsys
) -> None:
    (tmp_path / "corpus").mkdir()  # no articles at all
    config = service_config(tmp_path)
    api = FakeTelegram(TOKEN)
    with FakeBotAPIServer(api) as server:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("TELEGRAM_BASE_URL", server.base_url)
        status = in_process_main(["--config", str(config.path)], lambda stopped: stopped.wait(WAIT))
    assert status == 2
    assert f"error: no readable .md, .txt or .html articles in {config.corpus.dir}" in capsys.readouterr().err


# ---------------------------------------------------------------- backup and restore


def test_backup_and_restore_bring_back_the_votes_and_the_articles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bot_main: Callable[..., int]
) -> None:
    config = service_config(tmp_path)
    build_index(config)

    async def scenario(running: InProcessBot, p: Payloads, state: BotState) -> None:
        for chat in (51, 52, 53):
            [answer] = sent(await running.feed(p.message(QUESTION, chat_id=chat)))
            buttons = [b for row in answer.params["reply_markup"]["inline_keyboard"] for b in row]
            vote = next(b["callback_data"] for b in buttons if b["text"] == ("👍" if chat != 53 else "👎"))
            message = p.bot_message("answer", chat_id=chat, message_id=answer.result["message_id"])
            pressed = await running.feed(p.callback(vote, message=message, user_id=chat))
            assert sent(pressed, "answerCallbackQuery")

    run_service(config, scenario)
    votes_before = _votes(state_path(config))
    assert sorted(v[2] for v in votes_before) == [0, 1, 1]
    articles = sorted(p.name for p in config.corpus.dir.iterdir())
    added = config.corpus.dir / "added-by-an-admin.md"
    added.write_text(
        "---\ntitle: 新增\ndate: 2021-06-20\n---\n\n内蒙古清退了全部虚拟货币挖矿项目。\n", encoding="utf-8"
    )

    target = tmp_path / "backups" / "today"
    assert bot_main("--config", str(config.path), "backup", str(target)) == 0
    assert "2 corpus file(s)" in capsys.readouterr().out
    assert oct((target).stat().st_mode & 0o777) == "0o700"
    saved = target / "state" / state_path(config).name
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert bot_main("--config", str(config.path), "backup", str(target)) == 2  # never into an old backup

    # Everything lost: corpus, index and state.
    shutil.rmtree(config.corpus.dir)
    shutil.rmtree(config.index.dir)
    shutil.rmtree(config.telegram.state_dir)
    assert bot_main("--config", str(config.path), "restore", str(target)) == 0
    assert "restored 2 corpus file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in config.corpus.dir.iterdir()) == sorted([*articles, added.name])
    assert _votes(state_path(config)) == votes_before
    assert bot_main("--config", str(config.path), "restore", str(target)) == 2  # would overwrite
    assert "--force" in capsys.readouterr().err
    assert bot_main("--config", str(config.path), "restore", "--force", str(target)) == 0

    build_index(config)

    async def after(running: InProcessBot, p: Payloads, state: BotState) -> None:
        library = await state.qa.library()
        assert {a["title"] for a in library.articles} >= {"新增"} and len(library.articles) == 2
        stats = await asyncio.to_thread(state.answers.stats, time.time())
        assert (stats.up, stats.down) == (2, 1)

    run_service(config, after)


def _votes(path: Path) -> list[tuple[int, int, int]]:
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute("select answer_id, user_id, up from votes").fetchall())
    finally:
        db.close()


def test_the_backup_copies_the_state_file_the_bot_writes(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    assert prepare_state_dir(config.telegram.state_dir, config.index.dir) == state_path(config)


def test_votes_wait_in_memory_while_another_process_locks_the_state(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bot-state.sqlite"
    answers = AnswerLog(path, busy_timeout=0.1)
    entry = Answered("问题", "zh", Kind.ANSWER, "private", "v1", ((1, "cite"),), 12)
    logged = answers.record(entry)
    assert logged is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("begin exclusive")  # a backup tool, a sqlite3 shell…
    try:
        assert answers.vote(*logged, user_id=7, up=True)  # thanked…
        assert answers.vote(*logged, user_id=8, up=False)
        assert other.execute("select count(*) from votes").fetchone() == (0,)  # …not yet written
    finally:
        other.execute("rollback")
    assert answers.record(entry) is not None  # the next write takes them along
    assert _votes(path) == [(logged[0], 7, 1), (logged[0], 8, 0)]
    other.execute("begin exclusive")
    assert answers.vote(*logged, user_id=9, up=True)
    other.execute("rollback")
    other.close()
    answers.close()  # …or the close
    assert _votes(path) == [(logged[0], 7, 1), (logged[0], 8, 0), (logged[0], 9, 1)]


def test_a_milvus_reader_recovers_after_the_server_restarts(tmp_path: Path) -> None:
    """A restarted `milvus-lite server` has released every collection: the reader loads them
    again by itself; while the server is down, questions fail with one IndexUnavailableError."""
    port = free_port()
    argv = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "served.db")]

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        listening(port)
        return server

    base = service_config(tmp_path)
    config = replace(base, index=replace(base.index, backend="milvus", milvus_uri=f"http://127.0.0.1:{port}"))
    server = start()
    try:
        rebuild_index(config)
        retriever = Retriever.open(config.index.dir, config)
        try:
            before = [h.passage_id for h in retriever.answer(QUESTION).hits]
            server.terminate()
            server.wait(30)
            with pytest.raises(IndexUnavailableError, match="cannot reach Milvus"):
                retriever.answer(QUESTION)
            server = start()
            deadline = time.monotonic() + WAIT
            while True:  # the reload check (the bot's watcher) loads the collections again once it connects…
                try:
                    assert retriever.refresh() is False
                    break
                except IndexUnavailableError:
                    assert time.monotonic() < deadline, "Milvus never came back"
                    time.sleep(0.5)
            assert [h.passage_id for h in retriever.answer(QUESTION).hits] == before  # …and the reader answers
        finally:
            retriever.close()
    finally:
        server.terminate()
        server.wait(30)
