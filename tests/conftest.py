"""Shared fixtures: the fake embedder registered, the default corpus indexed once per session
(fake embedder; and, for tests marked slow, the real model), entry points run in this process,
the loopback servers. Plain helpers live in `helpers.py`."""

from __future__ import annotations

import io
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
from fakes import register_fakes
from helpers import DEFAULT_CORPUS, Exit, make_config

from index.build import build_index
from index.embedder import Embedder, load_embedder
from loopback.news_site import NewsSite
from retrieval import Retriever
from settings import BUILTIN_MODEL, Config, load_config

register_fakes()  # `[model] name = "test-hash"` in this process (`launch.py` does it in children)


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


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session")
def default_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """The default corpus indexed with the fake embedder, once per session, for the tests that
    only read it. A test that writes (corpus, index) copies it or builds its own; a bot over it
    gets its own state directory (`default_config`). Checked unchanged at the end."""
    root = tmp_path_factory.mktemp("default-index")
    shutil.copytree(DEFAULT_CORPUS, root / "corpus")
    config = make_config(root / "corpus", root / "index")
    build_index(config)
    built = _tree(root)
    yield config
    assert _tree(root) == built, "a test changed the shared default index: copy it or build your own"


@pytest.fixture
def default_config(default_index: Config, tmp_path: Path) -> Config:
    """`default_index` with this test's own state directory (the bot's files)."""
    return replace(default_index, telegram=replace(default_index.telegram, state_dir=tmp_path / "state"))


@pytest.fixture(scope="session")
def real_embedder() -> Embedder:
    """The bundled model as the committed config sets it up, loaded once per session for every
    test that embeds with it."""
    return load_embedder(replace(load_config().model, name=BUILTIN_MODEL))


@pytest.fixture(scope="session")
def real_config(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Config:
    """The default corpus indexed with the real bundled model (built once per session)."""
    index_dir = tmp_path_factory.mktemp("real-index")
    config = make_config(DEFAULT_CORPUS, index_dir, model=BUILTIN_MODEL)
    build_index(config, embedder=real_embedder)
    return config


@pytest.fixture(scope="session")
def real_retriever(real_config: Config, real_embedder: Embedder) -> Iterator[Retriever]:
    """A retriever over `real_config` sharing the session's model."""
    retriever = Retriever.open(real_config.index.dir, real_config, embedder=real_embedder)
    yield retriever
    retriever.close()


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    bot_main: Callable[..., int],
) -> Callable[..., Exit]:
    """Run a command line in this process through its `main(argv)`: `cli("index", "build", ...)`,
    `cli("retrieval", ...)`, `cli("bot", ...)`, with `stdin` bytes (a real file: batch mode
    reads its descriptor). Returns the exit status, stdout and stderr."""
    from index.__main__ import main as index_main
    from retrieval.__main__ import main as retrieval_main

    mains = {"index": index_main, "retrieval": retrieval_main, "bot": bot_main}
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # what bot.py sets for its own process
    monkeypatch.setenv("COLUMNS", "200")  # readable output is not wrapped
    stdin_dir = tmp_path_factory.mktemp("stdin")
    runs = iter(range(1_000_000))

    def run(entry: str, *argv: str, stdin: bytes = b"") -> Exit:
        capsys.readouterr()
        path = stdin_dir / f"{next(runs)}"
        path.write_bytes(stdin)
        with open(path, "rb") as raw:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw, encoding="utf-8"))
            try:
                code = mains[entry](*argv) if entry == "bot" else mains[entry](list(argv))
            except SystemExit as exit:  # argparse's usage errors and --help, as the interpreter ends them
                if isinstance(exit.code, str):
                    print(exit.code, file=sys.stderr)
                code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        out, err = capsys.readouterr()
        return Exit(code, out, err)

    return run


@pytest.fixture(scope="session")
def site() -> Iterator[NewsSite]:
    """The Chinese news site on loopback (`loopback/news_site.py`), one server for the session."""
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
