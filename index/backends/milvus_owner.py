"""One writer per set of Milvus collections: the catalog (an `[index] dir`) that claimed them.

Milvus mirrors one SQLite catalog (`milvus_sync`): a sync deletes from Milvus every article
its catalog lacks, and passage ids are the catalog's own row ids. Two catalogs syncing into
the same collections would delete each other's articles and overwrite each other's passages
under colliding ids. So a catalog has a random identity (the file `CATALOG_ID` in its
directory), its first sync records it in `P_meta` under "owner", and a build or sync from any
other catalog is refused with one line before it changes anything. A generation of
collections is filled by one catalog only ("live" names it): `python -m index build
--take-over` makes another catalog the owner, and its sync then fills a fresh generation
with its own ids (never mixed with the previous owner's), switching readers over at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from index.backends import milvus_store as ms
from index.backends.base import IndexUnavailableError
from index.backends.milvus_store import Names

CATALOG_ID = "CATALOG_ID"
OWNER = "owner"  # the P_meta key
_ID = re.compile(r"[0-9a-f]{32}")


class OwnerConflictError(IndexUnavailableError):
    """Another catalog writes these Milvus collections; nothing was changed."""


@dataclass(frozen=True)
class Owner:
    """A catalog as an owner of Milvus collections: its identity, and where it lives (to name it)."""

    id: str
    dir: str
    host: str

    @classmethod
    def of(cls, index_dir: Path) -> Owner:
        return cls(catalog_id(index_dir), str(Path(index_dir).resolve()), socket.gethostname())

    def record(self) -> dict[str, Any]:
        claimed = datetime.now(UTC).isoformat(timespec="seconds")
        return {"id": self.id, "dir": self.dir, "host": self.host, "claimed_at": claimed}


def read_catalog_id(index_dir: Path) -> str | None:
    """The catalog's identity, None before its first Milvus build; a damaged file is an error."""
    path = Path(index_dir) / CATALOG_ID
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexUnavailableError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not _ID.fullmatch(text):
        raise IndexUnavailableError(
            f"{path} is damaged (not a catalog id): restore it, or delete it and run "
            "`python -m index build --take-over`"
        )
    return text


def catalog_id(index_dir: Path) -> str:
    """The catalog's identity, created on first use. Linked into place, so concurrent first
    builds agree on one id (the loser of the race reads the winner's)."""
    found = read_catalog_id(index_dir)
    if found is not None:
        return found
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=index_dir, prefix=f".{CATALOG_ID}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(uuid.uuid4().hex + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, index_dir / CATALOG_ID)
    finally:
        os.unlink(tmp)
    found = read_catalog_id(index_dir)
    assert found is not None
    return found


def owner_of(client: Any, names: Names) -> dict[str, Any] | None:
    """The owner record of the collections under `names.prefix`; None when unclaimed."""
    return ms.get_meta(client, names, OWNER)


def require(client: Any, names: Names, me: Owner, where: str) -> None:
    """Raise `OwnerConflictError` unless `me` owns the collections, or nobody does yet."""
    owner = owner_of(client, names)
    if owner is not None and owner.get("id") != me.id:
        raise OwnerConflictError(conflict(names, owner, me, where))


def claim(client: Any, names: Names, me: Owner, where: str) -> None:
    """Own the collections unless another catalog does (then raise, having changed nothing).
    Read back after writing: of two catalogs claiming at once, the one overwritten is refused
    here, or at the latest before it switches "live" (`require` before every destructive step)."""
    ms.create_meta(client, names)
    require(client, names, me, where)
    if owner_of(client, names) is None:
        ms.put_meta(client, names, {OWNER: me.record()})
        require(client, names, me, where)


def take_over(client: Any, names: Names, me: Owner) -> dict[str, Any] | None:
    """Make `me` the owner whoever owned the collections; returns the previous owner record."""
    ms.create_meta(client, names)
    previous = owner_of(client, names)
    if previous is None or previous.get("id") != me.id:
        ms.put_meta(client, names, {OWNER: me.record()})
    return previous


def describe(owner: dict[str, Any]) -> str:
    return f"{owner.get('dir', '?')} on host {owner.get('host', '?')}, id {str(owner.get('id', '?'))[:8]}"


def conflict(names: Names, owner: dict[str, Any], me: Owner, where: str) -> str:
    return (
        f"the Milvus collections {names.prefix}_* at {where} are written by another catalog "
        f"({describe(owner)}), not by this one ({describe(me.record())}); nothing was changed: point both "
        "at one [index] dir, or make this one the writer with `python -m index build --take-over`"
    )
