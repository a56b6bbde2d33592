"""End to end: `bot.py` as a subprocess, long polling a fake Bot API server on loopback."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from helpers import DEFAULT_CORPUS, QUESTION, Exit, launch_argv, write_config

from loopback.fake_telegram import FakeBotAPIServer, FakeTelegram, Payloads, parse_html
from settings import PROJECT_ROOT, load_config

pytestmark = pytest.mark.slow

TOKEN = "12345:TEST_ONLY_not_a_real_token_abc"
EN_QUESTION = "How many criminal gangs were taken down in the card-breaking operation?"
GROUP = -100777
WAIT = 60.0  # generous bound so a broken build fails instead of hanging


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    shutil.copytree(DEFAULT_CORPUS, corpus)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        health = f"127.0.0.1:{s.getsockname()[1]}"
    return write_config(
        tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index", telegram={"health_listen": health}
    )


def wait_ready(config_file: Path, bot: subprocess.Popen[str]) -> None:
    """Until the bot's /healthz says it can answer (it builds a missing index in the background)."""
    url = f"http://{load_config(config_file).telegram.health_listen}/healthz"
    deadline = time.monotonic() + WAIT
    while bot.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail("the bot never became ready")


@pytest.fixture
def server() -> Iterator[FakeBotAPIServer]:
    with FakeBotAPIServer(FakeTelegram(TOKEN)) as running:
        yield running


def start_bot(config_file: Path, base_url: str, *args: str, token: str = TOKEN) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QA_INDEX_DIR", "TELEGRAM_BASE_URL")}
    env.update(TELEGRAM_BOT_TOKEN=token, TELEGRAM_BASE_URL=base_url, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        launch_argv("bot.py", "--config", str(config_file), *args),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(bot: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the bot and collect its exit status and output (killed if it hangs)."""
    if bot.poll() is None:
        bot.send_signal(sig)
    try:
        out, err = bot.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        bot.kill()
        out, err = bot.communicate()
        pytest.fail(f"bot did not stop within 30 s after signal {sig}:\n{err[-3000:]}")
    return bot.returncode, out + err


def replies_to(api: FakeTelegram, chat_id: int) -> list[dict[str, object]]:
    return [c.params for c in api.recorded("sendMessage") if int(c.params["chat_id"]) == chat_id]


def test_bot_end_to_end_against_a_fake_bot_api(config_file: Path, server: FakeBotAPIServer) -> None:
    api = server.api
    p = Payloads()
    bot = start_bot(config_file, server.base_url)
    try:
        wait_ready(config_file, bot)  # the missing index is built first, in the background
        # 1. A Chinese question.
        api.push(p.message(QUESTION, chat_id=11))
        assert api.wait_for(lambda: len(replies_to(api, 11)) == 1, WAIT), "no answer to the Chinese question"
        # 2. An English question, with a 429 "retry after" injected on its reply.
        api.inject("sendMessage", status=429, retry_after=1)
        api.push(p.message(EN_QUESTION, chat_id=12, lang="en"))
        assert api.wait_for(lambda: len(replies_to(api, 12)) == 1, WAIT), "English answer lost after a 429"
        # 3. A group: silence without a mention, a reply with one.
        silent = p.message(QUESTION, chat_id=GROUP, user_id=21)
        mention = p.mention(QUESTION, chat_id=GROUP, user_id=21)
        api.push(silent)
        api.push(mention)
        assert api.wait_for(lambda: len(replies_to(api, GROUP)) >= 1, WAIT)
        # 4. Markup in the question, a 6,000-character message, and a dropped getUpdates.
        api.inject("getUpdates", reset=True)
        api.inject("getUpdates", status=502)
        api.push(p.message("<b>x</b> & <script>", chat_id=13, lang="en"))
        api.push(p.message(QUESTION + "长" * 6000, chat_id=14))
        assert api.wait_for(lambda: bool(replies_to(api, 13) and replies_to(api, 14)), WAIT)
        # 5. A 5xx and a connection reset on sendMessage: retried with backoff.
        api.inject("sendMessage", status=502)
        api.inject("sendMessage", reset=True)
        api.push(p.message("青海省禁止向挖矿项目提供什么？", chat_id=15))
        assert api.wait_for(lambda: bool(replies_to(api, 15)), WAIT)
    finally:
        status, output = stop(bot)

    assert status == 0, output[-3000:]
    assert TOKEN not in output and "TEST_ONLY" not in output
    assert "building index" in output  # the missing index was built, with progress in the log
    assert QUESTION not in output and "<script>" not in output  # logs carry chat ids, not texts
    assert "chat=11" in output

    every = api.recorded("sendMessage")
    assert not api.recorded("sendMessage", ok=False) or all(c.fault for c in api.recorded("sendMessage", ok=False))
    for params in (c.params for c in every):
        assert params["parse_mode"] == "HTML"
        parsed = parse_html(str(params["text"]))  # valid Telegram HTML (the fake server checks too)
        assert parsed.length <= 4096
        assert set(parsed.tags) <= {"b", "a", "blockquote"}

    [zh] = replies_to(api, 11)
    assert "170余个" in parse_html(str(zh["text"])).text and "¶" in str(zh["text"])
    [en] = replies_to(api, 12)
    en_text = parse_html(str(en["text"])).text
    assert en_text.startswith(("From the articles", "The articles do not cover this.")) and "《区块链日报》" in en_text
    attempts = [c for c in api.recorded("sendMessage", ok=None) if c.params["chat_id"] == "12"]
    assert [c.status for c in attempts] == [429, 200]  # the retry happened, nothing was lost

    [group_reply] = replies_to(api, GROUP)
    assert group_reply["reply_parameters"]["message_id"] == mention["message"]["message_id"]  # type: ignore[index]

    [markup] = replies_to(api, 13)
    assert "<script>" not in str(markup["text"])  # never echoed unescaped
    [long] = replies_to(api, 14)
    long_text = parse_html(str(long["text"])).text
    assert "<blockquote>" in str(long["text"]) and "只使用了前 500 个字符" in long_text
    [retried] = replies_to(api, 15)
    faults = [c.fault for c in api.recorded("sendMessage", ok=None) if c.params["chat_id"] == "15"]
    assert faults == ["502", "reset", ""] and "<blockquote>" in str(retried["text"])
    polling_faults = {c.fault for c in api.recorded("getUpdates", ok=None)}
    assert {"reset", "502"} <= polling_faults  # polling survived both


def test_debug_logging_still_redacts_the_token(config_file: Path, server: FakeBotAPIServer) -> None:
    api = server.api
    bot = start_bot(config_file, server.base_url, "--debug")
    try:
        wait_ready(config_file, bot)
        api.push(Payloads().message(QUESTION, chat_id=31))
        assert api.wait_for(lambda: len(replies_to(api, 31)) == 1, WAIT)
    finally:
        status, output = stop(bot, signal.SIGINT)
    assert status == 0, output[-3000:]
    assert TOKEN not in output and "TEST_ONLY" not in output
    assert "/bot<redacted>/getUpdates" in output  # request URLs are logged, token replaced
    assert QUESTION in output  # debug logging includes message texts


def test_a_rejected_token_is_one_clear_line(
    config_file: Path, server: FakeBotAPIServer, cli: Callable[..., Exit], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "54321:WRONG_TEST_token_value_xyz"
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", wrong)
    monkeypatch.setenv("TELEGRAM_BASE_URL", server.base_url)
    result = cli("bot", "--config", str(config_file))
    output = result.out + result.err
    assert result.code == 2
    assert "Telegram rejected the bot token" in output
    assert "Traceback" not in output and wrong not in output and "WRONG_TEST" not in output


def test_a_flooding_user_in_a_group_does_not_delay_anyone_else(config_file: Path, server: FakeBotAPIServer) -> None:
    """The abuse case over real HTTP: one user sends 100 /help and 40 forged More presses in a
    group within 10 s; another user's private question is answered within 5 s, every press is
    answered, and the flooder gets at most user_rate + 1 replies in any rate_window."""
    api = server.api
    p = Payloads()
    bot = start_bot(config_file, server.base_url)
    try:
        wait_ready(config_file, bot)
        api.push(p.message(QUESTION, chat_id=41))  # the bot is up once this is answered
        assert api.wait_for(lambda: len(replies_to(api, 41)) == 1, WAIT)
        message = p.bot_message("an earlier answer", chat_id=GROUP, message_id=77)
        kinds = ["help"] * 100 + ["press"] * 40
        random.Random(7).shuffle(kinds)  # interleaved
        kinds.insert(len(kinds) // 2, "question")  # the other user's, midway
        # Payloads made in the order they are sent: update ids increase, as Telegram's do.
        flood = [
            p.message(QUESTION, chat_id=42)
            if kind == "question"
            else p.message("/help", chat_id=GROUP, user_id=66)
            if kind == "help"
            else p.callback(f"m:deadbeef:forged{i:03d}:3", message=message, user_id=66)
            for i, kind in enumerate(kinds)
        ]
        asked_at = 0.0
        start = time.monotonic()
        for i, (kind, update) in enumerate(zip(kinds, flood, strict=True)):
            if kind == "question":
                asked_at = time.monotonic()
            api.push(update)
            time.sleep(max(0.0, start + (i + 1) * 10.0 / len(flood) - time.monotonic()))
        assert api.wait_for(lambda: len(replies_to(api, 42)) == 1, WAIT)
        answered_at = next(c.at for c in api.recorded("sendMessage") if c.params["chat_id"] == "42")
        assert api.wait_for(lambda: len(api.recorded("answerCallbackQuery")) >= 40, WAIT)
        time.sleep(1.0)  # anything still queued for the group would arrive now
    finally:
        status, output = stop(bot)

    assert status == 0, output[-3000:]
    assert answered_at - asked_at <= 5.0
    assert "170余个" in parse_html(str(replies_to(api, 42)[0]["text"])).text
    to_flooder = sorted(
        c.at
        for c in api.recorded()
        if c.method in ("sendMessage", "editMessageText") and c.params["chat_id"] == str(GROUP)
    )
    window = 10.0  # the default rate_window; user_rate is 8
    assert len(api.recorded("answerCallbackQuery")) == 40  # each press answered once
    assert to_flooder and max(sum(1 for t in to_flooder if s <= t < s + window) for s in to_flooder) <= 8 + 1


def test_the_bot_serves_from_a_milvus_server_while_another_process_builds(
    tmp_path: Path, server: FakeBotAPIServer, lite_server: str
) -> None:
    """`[index] backend = "milvus"` against `milvus-lite server` on loopback (a server's code
    path): `python -m index build` runs in another process while the bot answers; the bot keeps
    answering during the build and quotes the edited article once the sync is live."""
    corpus = tmp_path / "corpus"
    shutil.copytree(DEFAULT_CORPUS, corpus)
    config_file = write_config(
        tmp_path / "config.toml",
        corpus=corpus,
        index=tmp_path / "index",
        telegram={"reload_seconds": 0.5, "user_rate": 1000},
        index_settings={"backend": "milvus", "milvus_uri": lite_server},
    )
    build = launch_argv("-m", "index", "build", "--config", str(config_file))
    first = subprocess.run(build, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "milvus: " in first.stdout, first.stderr[-2000:]
    api = server.api
    p = Payloads()
    bot = start_bot(config_file, server.base_url)
    try:
        api.push(p.message(QUESTION, chat_id=31))
        assert api.wait_for(lambda: len(replies_to(api, 31)) == 1, WAIT), "no answer from the Milvus index"
        article = next(corpus.glob("*.md"))
        article.write_text(article.read_text(encoding="utf-8").replace("170余个", "190余个"), encoding="utf-8")
        rebuild = subprocess.Popen(build, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        asked = 0
        while rebuild.poll() is None:  # questions during the build are answered, whole
            asked += 1
            api.push(p.message(QUESTION, chat_id=32))
            assert api.wait_for(lambda n=asked: len(replies_to(api, 32)) == n, WAIT), "no answer during the build"
        out, err = rebuild.communicate()
        assert rebuild.returncode == 0 and "1 updated" in out, err[-2000:]

        def answered_new() -> bool:
            api.push(p.message(QUESTION, chat_id=33))
            return api.wait_for(lambda: any("190余个" in str(r["text"]) for r in replies_to(api, 33)), 2.0)

        deadline = time.monotonic() + WAIT
        while not answered_new():
            assert time.monotonic() < deadline, "the bot never served the rebuilt index"
    finally:
        status, output = stop(bot)
    assert status == 0, output[-3000:]
    [before] = replies_to(api, 31)
    assert "170余个" in parse_html(str(before["text"])).text
    during = [parse_html(str(r["text"])).text for r in replies_to(api, 32)]
    assert asked >= 1 and all(("170余个" in t) != ("190余个" in t) for t in during)
