"""The FAISS side of an index version: inner product over normalised vectors (= cosine),
wrapped in `IndexIDMap2` so FAISS ids are the passages' SQLite row ids."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from settings import IndexConfig


def choose_kind(config: IndexConfig, n_vectors: int) -> str:
    """The configured kind; `auto` is exact (flat) for small indexes and IVF from
    `ivf_threshold` vectors up, where a flat scan starts to cost milliseconds per query."""
    if config.faiss == "auto":
        return "ivf" if n_vectors >= config.ivf_threshold else "flat"
    return config.faiss


def build_faiss(batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, kind: str, config: IndexConfig) -> Any:
    """Build an id-mapped index from (ids, vectors) batches."""
    import faiss

    if kind == "ivf":
        return _build_ivf(batches, dim, config.ivf_nprobe)
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


def _build_ivf(batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, nprobe: int = 0) -> Any:
    """IVF-Flat: 4·sqrt(n) lists rounded up to a power of two, trained on a seeded sample of 40
    vectors per list, `nprobe` lists probed per query (saved with the index; 0: `auto_nprobe`).
    Builds in about a minute at 1M x 512 on 2 cores, where HNSW takes several (bench/README.md)."""
    import faiss

    pairs = list(batches)
    ids = np.concatenate([i.astype(np.int64) for i, _ in pairs]) if pairs else np.zeros(0, np.int64)
    x = np.concatenate([v for _, v in pairs]).astype(np.float32, copy=False) if pairs else np.zeros((0, dim), "f4")
    del pairs
    n = len(x)
    nlist = 1 << max(0, math.ceil(math.log2(max(1.0, 4.0 * math.sqrt(n)))))
    nlist = max(1, min(nlist, n // 40))
    inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = x if n <= 40 * nlist else x[np.sort(np.random.default_rng(0).choice(n, 40 * nlist, replace=False))]
    # A small index (`faiss = "ivf"` named explicitly) has fewer than the 39 training points per
    # list k-means wants; it still trains, so skip FAISS's warning on stderr.
    inner.cp.min_points_per_centroid = min(inner.cp.min_points_per_centroid, max(1, n // nlist))
    if n:
        inner.train(np.ascontiguousarray(sample))
    inner.nprobe = min(nlist, nprobe or auto_nprobe(n, nlist))
    index = faiss.IndexIDMap2(inner)
    if n:
        index.add_with_ids(np.ascontiguousarray(x), ids)
    return index


def auto_nprobe(n: int, nlist: int) -> int:
    """Lists to probe so that a query scans ~6,000 vectors. Measured on the benchmark's 100k and
    1M vectors, recall@10 against exact search depends on how many vectors are scanned far more
    than on the share of lists: ~6,000 gave 0.976 at 1M (4,096 lists, 25 probed, 1.3 ms) where
    2,048 lists with 64 probed (31,000 vectors, 5 ms) gave 0.961."""
    return max(1, min(nlist, math.ceil(6000 * nlist / max(n, 1))))


def write_faiss(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_faiss(path: Path, ef_search: int | None = None) -> Any:
    """Open a published index, its vectors read into memory. Memory-mapped, they are file
    pages the kernel may drop when they go unused for a while (this VM's reclaimer does, with
    23 GB free): at 1M passages an IVF question then read its ~6,000 probed vectors from disk,
    16.8 ms p50 instead of 1.7 ms. Reading costs ~1.5 s and 2 GB of memory at 1M."""
    import faiss

    index = faiss.read_index(str(path))
    if ef_search:
        inner = faiss.downcast_index(index.index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = ef_search
    return index


def enable_reconstruct(index: Any) -> None:
    """Let `index.reconstruct_batch` read vectors by passage id (the retriever's cosines of
    lexical-only candidates): IVF needs a map from id to list slot (8 bytes a vector, ~0.1 s
    at 1M); flat and HNSW storage reconstruct as they are."""
    import faiss

    inner = faiss.downcast_index(index.index)
    if hasattr(inner, "make_direct_map") and inner.direct_map.no():
        inner.make_direct_map()


def use_blas_for_batches() -> None:
    """Exhaustive search takes BLAS from 2,048 query floats (4 questions of 512 dimensions).

    FAISS 1.15 switches to BLAS only from 128,000 query floats, a crossover measured with dozens
    of OpenMP threads; the retriever searches on one (`dense`), where a batch of 32 questions
    over 6,000 passages took 34 ms without BLAS and 7.7 ms with it, and one question 1.4 ms
    without and 3.5 ms with (faiss#5109 measures the same). A process-wide setting, idempotent.
    """
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 2048


def faiss_ids(index: Any) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)
