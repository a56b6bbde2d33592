"""Index versions on disk, the publish pointer and the build lock.

Layout under the index directory::

    CURRENT                 JSON naming the live version; replaced atomically with os.replace
    .build.lock             flock held by the one running build
    versions/<name>/        index.db (SQLite) + vectors.faiss, never modified once published
    versions/<name>.tmp/    a build in progress (or killed): invisible to readers

Readers resolve CURRENT once and keep their version open until they reopen, so a build can
never change what a reader is answering from, and a build killed at any moment leaves the
last good version live.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

POINTER = "CURRENT"
LOCK = ".build.lock"
VERSIONS = "versions"
DB_FILE = "index.db"
FAISS_FILE = "vectors.faiss"
# A version is one plain directory name under versions/: no separators, no "..", never a
# staging (.tmp) directory, so a tampered CURRENT cannot point a reader anywhere else.
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")

T = TypeVar("T")


class IndexMissingError(Exception):
    """No published index in the directory."""


class BuildLockedError(Exception):
    """Another build holds the lock and did not finish in time."""


@dataclass(frozen=True)
class Version:
    """One published, immutable index version."""

    name: str
    path: Path

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def faiss_path(self) -> Path:
        return self.path / FAISS_FILE


def current_version(index_dir: Path) -> Version | None:
    """The live version, or None when nothing was ever published (or the pointer is unreadable)."""
    pointer = Path(index_dir) / POINTER
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not valid_version_name(name):
        return None
    path = Path(index_dir) / VERSIONS / name
    if not (path / DB_FILE).is_file() or not (path / FAISS_FILE).is_file():
        return None
    return Version(name, path)


def valid_version_name(name: object) -> bool:
    return (
        isinstance(name, str) and len(name) <= 128 and bool(_VERSION_NAME.fullmatch(name)) and not name.endswith(".tmp")
    )


def require_current(index_dir: Path) -> Version:
    version = current_version(index_dir)
    if version is None:
        raise IndexMissingError(f"no index in {index_dir}: run `python -m index build` first")
    return version


def open_current(index_dir: Path, opener: Callable[[Version], T]) -> T:
    """`opener(live version)`, resolving CURRENT again once if the version vanished meanwhile.

    A build that publishes and cleans old versions (e.g. `keep_versions = 1`) may delete the
    version a reader has just read from CURRENT before it opens the files; the pointer then
    names a newer one. A second disappearance is reported as a missing index.
    """
    for attempt in range(2):
        version = require_current(index_dir)
        try:
            return opener(version)
        except (OSError, sqlite3.OperationalError, RuntimeError):
            if version.path.is_dir() and version.db_path.is_file() and version.faiss_path.is_file():
                raise  # the files are there: a real error, not the race
            if attempt:
                break
    raise IndexMissingError(f"the index in {index_dir} changed while it was being opened: try again")


def pointer_stamp(index_dir: Path) -> str | None:
    """A cheap token that changes whenever a new version is published (for reload watching)."""
    try:
        return (Path(index_dir) / POINTER).read_text(encoding="utf-8")
    except OSError:
        return None


def new_version_dir(index_dir: Path) -> tuple[str, Path]:
    """Create the staging directory for a build; its name sorts by time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"v{stamp}-{os.getpid()}"
    staging = Path(index_dir) / VERSIONS / f"{name}.tmp"
    staging.mkdir(parents=True)
    return name, staging


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(index_dir: Path, name: str, staging: Path) -> Version:
    """Make a finished staging directory the live version, atomically."""
    index_dir = Path(index_dir)
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(staging)  # the files' directory entries are durable before the rename
    final = index_dir / VERSIONS / name
    os.replace(staging, final)
    _fsync_dir(final.parent)
    payload = {"version": name, "published_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_atomic(index_dir / POINTER, json.dumps(payload))
    return Version(name, final)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) so that readers see the old file or the new one, never
    a part: a hidden temporary file in the same directory, fsynced, then `os.replace`.

    Hidden, so a corpus scan running meanwhile ignores it; unique, so threads may write at once.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def clean_old_versions(index_dir: Path, keep: int) -> list[str]:
    """Remove staging leftovers of killed builds and all but the newest `keep` versions.

    Only called while holding the build lock, so every `.tmp` directory is stale. The live
    version is always kept; readers still holding an older one keep their open files.
    """
    root = Path(index_dir) / VERSIONS
    if not root.is_dir():
        return []
    live = current_version(index_dir)
    removed: list[str] = []
    finished = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")), reverse=True)
    keep_names = {p.name for p in finished[: max(keep, 1)]}
    if live is not None:
        keep_names.add(live.name)
    for path in root.iterdir():
        if path.name.endswith(".tmp") or (path.is_dir() and path.name not in keep_names):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    for stray in Path(index_dir).glob(f".{POINTER}.*.tmp"):
        stray.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def build_lock(index_dir: Path, timeout: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the exclusive build lock; wait up to `timeout` seconds for another build.

    flock is released by the kernel when a process dies, so a killed build never leaves a
    stale lock behind.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK, "a+") as handle:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise BuildLockedError(
                        f"another build is running on {index_dir} and did not finish within {timeout:.0f}s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
