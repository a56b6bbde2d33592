"""The FAISS side of an index version: inner product over normalised vectors (= cosine),
wrapped in `IndexIDMap2` so FAISS ids are the passages' SQLite row ids."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from settings import IndexConfig


def choose_kind(config: IndexConfig, n_vectors: int) -> str:
    if config.faiss == "auto":
        return "hnsw" if n_vectors >= config.hnsw_threshold else "flat"
    return config.faiss


def build_faiss(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, kind: str, config: IndexConfig
) -> Any:
    """Build an id-mapped index from (ids, vectors) batches."""
    import faiss

    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = max(40, config.hnsw_m * 2)
        inner.hnsw.efSearch = config.hnsw_ef_search
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    for ids, vectors in batches:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def write_faiss(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_faiss(path: Path, ef_search: int | None = None) -> Any:
    import faiss

    index = faiss.read_index(str(path))
    if ef_search:
        inner = faiss.downcast_index(index.index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = ef_search
    return index


def faiss_ids(index: Any) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)
