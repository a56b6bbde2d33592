"""`python bot.py backup DIR` / `restore DIR`: the corpus and the bot's state, while the bot runs.

What cannot be recreated is the corpus (articles added by `/add` or `index add` exist nowhere
else) and the state file (the answer log with its votes, the questions behind "More" buttons);
the index is derived from the corpus and rebuilt after a restore. The state is copied with
SQLite's online backup API, page by page under SQLite's own locking, so a running bot may go on
writing: the copy is one consistent moment. A restore writes the state back the same way, so a
bot still running sees the restored rows at once.

Layout of DIR (0700; the state copy 0600: it holds users' questions)::

    manifest.json       when, what: corpus file count and bytes, state tables and their rows
    corpus/…            the corpus files, as laid out in [corpus] dir
    state/<state file>  the state database
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from settings import Config
from telegram_bot.statefile import FILE_NAME

MANIFEST = "manifest.json"
BUSY_SECONDS = 60.0  # a state file locked by another process is waited for this long


class BackupError(Exception):
    """The backup or restore cannot be done as asked; one line for the operator."""


@dataclass(frozen=True)
class Summary:
    files: int
    bytes: int
    tables: dict[str, int]  # state table → rows (empty: no state file)

    def line(self) -> str:
        rows = ", ".join(f"{table} {count}" for table, count in sorted(self.tables.items())) or "no state file"
        return f"{self.files} corpus file(s), {self.bytes:,} bytes; state: {rows}"


def state_path(config: Config) -> Path:
    """Where the bot keeps its state for this config."""
    return Path(config.telegram.state_dir) / FILE_NAME


def backup(config: Config, target: Path) -> Summary:
    """Copy the corpus and the state into the new directory `target`."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} already exists and is not an empty directory: choose a new one")
    corpus = Path(config.corpus.dir)
    if not corpus.is_dir():
        raise BackupError(f"corpus directory not found: {corpus}")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    files, size = _copy_tree(corpus, target / "corpus")
    tables: dict[str, int] = {}
    state = state_path(config)
    if state.is_file():
        (target / "state").mkdir(mode=0o700)
        tables = _copy_database(state, target / "state" / state.name)
    summary = Summary(files, size, tables)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": {"files": files, "bytes": size},
        "state": {"file": state.name, "tables": tables} if tables else None,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return summary


def restore(config: Config, source: Path, *, force: bool = False) -> Summary:
    """Put a backup's corpus files and state back; without `force`, only where nothing is."""
    source = Path(source)
    manifest = _manifest(source)
    corpus = Path(config.corpus.dir)
    if not force and corpus.is_dir() and any(_files(corpus)):
        raise BackupError(f"corpus directory {corpus} is not empty: restore with --force to overwrite its files")
    state = state_path(config)
    saved = source / "state" / str((manifest.get("state") or {}).get("file") or FILE_NAME)
    if saved.is_file() and state.is_file() and not force:
        raise BackupError(f"{state} exists: restore with --force to replace the bot's state with the backup's")
    files, size = _copy_tree(source / "corpus", corpus)
    tables = _copy_database(saved, state) if saved.is_file() else {}
    return Summary(files, size, tables)


def _manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not a backup made by `bot.py backup` ({MANIFEST}: {exc})") from None
    if not isinstance(manifest, dict) or not (source / "corpus").is_dir():
        raise BackupError(f"{source} is not a backup made by `bot.py backup` (no corpus/)")
    return manifest


def _files(root: Path) -> list[Path]:
    """The regular files under `root`, without hidden ones (temporary files of atomic writes)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _copy_tree(source: Path, target: Path) -> tuple[int, int]:
    """Copy the files of `source` into `target`, each replaced atomically. Returns (files, bytes)."""
    count = size = 0
    for file in _files(source):
        destination = target / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copy2(file, tmp)
            os.replace(tmp, destination)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        count += 1
        size += destination.stat().st_size
    return count, size


def _copy_database(source: Path, target: Path) -> dict[str, int]:
    """Copy the SQLite database `source` into `target` (created 0600 or overwritten in place)
    with the online backup API. Returns each table's rows in the copy."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not target.exists():
        target.touch(mode=0o600)
    try:
        src = sqlite3.connect(source, timeout=BUSY_SECONDS)
        try:
            dst = sqlite3.connect(target, timeout=BUSY_SECONDS)
            try:
                src.backup(dst, pages=1024, sleep=0.05)
                tables = [r[0] for r in dst.execute("select name from sqlite_master where type = 'table'")]
                return {t: dst.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source} to {target}: {exc}") from None
