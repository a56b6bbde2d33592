"""`pip install .` gives an importable install that stands apart from the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from settings import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_pip_install_gives_importable_layers_and_the_default_corpus(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves a build/ directory in the tree it installs from.
    source = tmp_path / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(".venv", "var", ".git", "build", "*.egg-info"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            target,
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    code = (
        "import bot, settings, corpus.reader, index.build, retrieval.search, telegram_bot.app\n"
        "from telegram_bot.components import callbacks, commands, errors, inline, questions\n"
        "articles = sorted(p.name for p in settings.load_config().corpus.dir.iterdir())\n"
        "print(settings.__file__); print(articles)\n"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{code}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    where, articles = run.stdout.splitlines()
    assert where.startswith(str(target))  # imported from the install, not the checkout
    assert articles == str(sorted(p.name for p in (PROJECT_ROOT / "corpus" / "articles").iterdir()))
