"""`bot.py --console` and the command line: same pipeline, terminal rendering, clean exits."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import write_config

from index.build import build_index
from settings import PROJECT_ROOT, load_config
from telegram_bot.console import run_console

CORPUS = PROJECT_ROOT / "corpus" / "articles"
QUESTION = "断卡行动打掉了多少个犯罪团伙？"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    return write_config(tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index")


def bot_command(*args: str, stdin: str = "", token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "QA_INDEX_DIR")}
    if token is not None:
        env["TELEGRAM_BOT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "bot.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_console_answers_through_the_shared_pipeline(config_file: Path) -> None:
    config = load_config(config_file)
    build_index(config)
    lines = [QUESTION, "/more", "/context", "/source", "hi", "", "/sources", "/about", "推荐一部好看的电影"]
    stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
    stdout = io.StringIO()
    assert asyncio.run(run_console(config, stdin=stdin, stdout=stdout)) == 0  # type: ignore[arg-type]
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
def test_piped_console_prints_a_quoted_cited_answer_and_exits_0(config_file: Path) -> None:
    # No index yet: the bot builds it first (progress on stderr), then answers stdin.
    result = bot_command("--console", "--config", str(config_file), stdin=QUESTION + "\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "> " in result.stdout and "170余个" in result.stdout
    assert "《区块链日报》2021-06-10" in result.stdout and "¶" in result.stdout
    assert "building index" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_no_token_means_console_mode(config_file: Path) -> None:
    result = bot_command("--config", str(config_file), stdin="hello\n" + QUESTION + "\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TELEGRAM_BOT_TOKEN is not set" in result.stderr
    assert "170余个" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[telegram]\nmax_passages = 'three'\n", "config error:"),
        ("[telegram\n", "TOML syntax error"),
        ("[nonsense]\n", "unknown section"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, toml: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml, encoding="utf-8")
    result = bot_command("--config", str(bad), token="12345:TEST_ONLY_not_a_real_token_abc")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_missing_corpus_and_index_is_one_clear_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", corpus=tmp_path / "nowhere", index=tmp_path / "index")
    result = bot_command("--console", "--config", str(config))
    assert result.returncode == 2
    assert "corpus directory not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_console_stops_cleanly_on_a_signal(config_file: Path, sig: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "bot.py", "--console", "--config", str(config_file)],
        cwd=PROJECT_ROOT,
        env=env,
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
