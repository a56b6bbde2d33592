"""Index backends behind one interface (`index.backends.base`), chosen by `[index] backend`."""

from __future__ import annotations

from index.backends.base import (
    CopyRow,
    IndexBackend,
    IndexReader,
    IndexUnavailableError,
    PassageRow,
    RebuildRequiredError,
)
from index.publish import IndexMissingError
from settings import Config

# What opening, building or checking an index raises for the operator to act on: each message is
# one line naming the fix (CLIs print it and exit 2, never a traceback).
OPEN_ERRORS = (IndexMissingError, RebuildRequiredError, IndexUnavailableError)

__all__ = [
    "OPEN_ERRORS",
    "CopyRow",
    "IndexBackend",
    "IndexReader",
    "IndexUnavailableError",
    "PassageRow",
    "RebuildRequiredError",
    "open_backend",
]


def open_backend(config: Config) -> IndexBackend:
    """The configured backend (pymilvus is imported only when Milvus is configured)."""
    if config.index.backend == "milvus":
        from index.backends.milvus import MilvusBackend

        return MilvusBackend(config)
    from index.backends.sqlite_faiss import SqliteFaissBackend

    return SqliteFaissBackend(config)
