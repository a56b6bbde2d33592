"""`bot.py --console` and the command line: same pipeline, terminal rendering, clean exits."""

from __future__ import annotations

import asyncio
import io
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DEFAULT_CORPUS, QUESTION, Exit, copy_index, launch_argv, write_config, write_toml

from settings import PROJECT_ROOT, Config
from telegram_bot.console import run_console


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A corpus and no index yet (the bot builds it first)."""
    corpus = tmp_path / "corpus"
    shutil.copytree(DEFAULT_CORPUS, corpus)
    return write_config(tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index")


@pytest.fixture
def built_config_file(default_index: Config, tmp_path: Path) -> Path:
    """A config over a copy of the default index (the bot starts answering at once)."""
    copy = copy_index(default_index, tmp_path)
    return write_config(tmp_path / "config.toml", corpus=copy.corpus.dir, index=copy.index.dir)


def test_console_answers_through_the_shared_pipeline(default_config: Config) -> None:
    lines = [QUESTION, "/more", "/context", "/source", "hi", "", "/sources", "/about", "推荐一部好看的电影"]
    stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
    stdout = io.StringIO()
    assert asyncio.run(run_console(default_config, stdin=stdin, stdout=stdout)) == 0  # type: ignore[arg-type]
    out = stdout.getvalue()
    assert "文章原文摘录：\n> " in out and "170余个" in out and "**" in out
    assert "— 《区块链日报》2021-06-10 · " in out and "¶28" in out
    assert "更多段落（4–6）" in out  # /more: the next page
    assert "上下文：" in out and "来源：" in out
    assert "/help" in out  # "hi" got the short help, not a quote
    assert "Indexed articles (1):" in out or "已收录的文章（1 篇）" in out
    assert "test-hash" in out
    assert "这些文章没有涉及这个问题。" in out


@pytest.mark.slow
def test_piped_console_runs_as_a_process_and_builds_a_missing_index_first(config_file: Path) -> None:
    """`python bot.py --console` in its own interpreter: no index yet, so it builds one (progress
    on stderr), then answers stdin."""
    result = subprocess.run(
        launch_argv("bot.py", "--console", "--config", str(config_file)),
        cwd=PROJECT_ROOT, input=QUESTION + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "> " in result.stdout and "170余个" in result.stdout
    assert "《区块链日报》2021-06-10" in result.stdout and "¶" in result.stdout
    assert "building index" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_token_means_console_mode(config_file: Path, cli: Callable[..., Exit]) -> None:
    result = cli("bot", "--config", str(config_file), stdin=("hello\n" + QUESTION + "\n").encode())
    assert result.code == 0, result.err[-2000:]
    assert "TELEGRAM_BOT_TOKEN is not set" in result.err
    assert "170余个" in result.out


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[telegram]\nmax_passages = 'three'\n", "config error:"),
        ("[telegram\n", "TOML syntax error"),
        ("[nonsense]\n", "unknown section"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, cli: Callable[..., Exit], monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "12345:TEST_ONLY_not_a_real_token_abc")
    result = cli("bot", "--config", str(write_toml(tmp_path / "bad.toml", toml)))
    assert result.code == 2
    result.one_clear_error(message)


def test_missing_corpus_and_index_is_one_clear_line(tmp_path: Path, cli: Callable[..., Exit]) -> None:
    config = write_config(tmp_path / "c.toml", corpus=tmp_path / "nowhere", index=tmp_path / "index")
    result = cli("bot", "--console", "--config", str(config))
    assert result.code == 2
    assert "corpus directory not found" in result.err and "Traceback" not in result.err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_console_stops_cleanly_on_a_signal(built_config_file: Path, sig: int) -> None:
    proc = subprocess.Popen(
        launch_argv("bot.py", "--console", "--config", str(built_config_file)),
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    guard = threading.Timer(120, proc.kill)  # against hangs only
    guard.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(QUESTION + "\n")
        proc.stdin.flush()
        seen = ""
        while "¶" not in seen:
            line = proc.stdout.readline()
            assert line, "console ended before answering"
            seen += line
        proc.send_signal(sig)  # stdin stays open: the signal alone must end it
        proc.wait(timeout=30)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 0


@pytest.mark.slow
def test_importing_bot_loads_no_model_and_opens_no_connection() -> None:
    code = (
        "import sys, socket\n"
        "socket.socket.connect = lambda *a: (_ for _ in ()).throw(AssertionError('network at import'))\n"
        "import bot\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules\n"
        "assert callable(bot.main)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
