"""Both index backends side by side on one synthetic corpus (`make bench`, section `backends`).

    .venv/bin/python -m bench.backends --work DIR [--passages 100000] [--queries 200]

The corpus is real files (`bench.synth.make_corpus`: CMRC sentences as news articles), built
through each backend's own `build()`: the same catalog pipeline (split, segment, copy groups,
BM25 terms), then FAISS files or a sync into Milvus Lite. Vectors come from `SyntheticEmbedder`
(mixes of real USE-m3 sentence embeddings plus noise, so no hour of embedding); questions are
embedded by the real model. Measured, per backend, in one process on one machine: full build,
one-article rebuild, question latency through the retriever (p50/p95), and the dense side's
latency and recall@10 against exact search. Milvus Lite is an embedded Python rewrite of Milvus:
its figures say nothing about a Milvus server's speed and are reported as Lite's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.perf import cpu_model, exact_top_k, log, percentile, questions
from bench.synth import make_corpus, material

BACKENDS = ("faiss", "milvus")


class SyntheticEmbedder:
    """Passage vectors near real embeddings without running the model per passage: each text
    maps (by its CRC) to a mix of two real sentence embeddings plus noise, deterministically."""

    def __init__(self, real: np.ndarray, name: str, noise: float = 0.3) -> None:
        self.real = real
        self.name = name
        self.noise = noise

    @property
    def dim(self) -> int:
        return int(self.real.shape[1])

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
            a, b = rng.integers(0, len(self.real), 2)
            w = rng.uniform(0.2, 0.8)
            v = w * self.real[a] + (1 - w) * self.real[b]
            v += (self.noise / np.sqrt(self.dim)) * rng.standard_normal(self.dim).astype(np.float32)
            out[row] = v / np.linalg.norm(v)
        return out

    encode_queries = encode_documents


def evaluate(work: Path, passages: int, n_queries: int) -> dict[str, Any]:
    from index.backends import open_backend
    from index.embedder import load_embedder
    from retrieval import Retriever
    from settings import load_config

    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    started = time.perf_counter()
    articles = make_corpus(corpus, passages)
    log(f"backends: {articles} synthetic articles written in {time.perf_counter() - started:.0f}s")
    base = load_config()
    model = load_embedder(base.model)
    _, sentences = material()
    synthetic = SyntheticEmbedder(model.encode_documents(sentences[:1500]), base.model.name)
    qs = questions(2 * n_queries, seed=4)
    qvecs = model.encode_queries(qs[:n_queries]).astype(np.float32)
    from index.text import segment_for_index

    segment_for_index("预热")  # jieba's dictionary loads before the first timed build, not inside it

    results: dict[str, Any] = {"cpu": cpu_model(), "passages_asked": passages, "articles": articles}
    for backend in BACKENDS:
        index = replace(
            base.index,
            dir=work / f"index-{backend}",
            backend=backend,
            milvus_uri=str(work / "milvus.db"),
            milvus_collection="bench",
        )
        config = replace(base, corpus=replace(base.corpus, dir=corpus), index=index)
        store = open_backend(config)
        t = time.perf_counter()
        report = store.build(embedder=synthetic)
        full_s = time.perf_counter() - t
        log(f"backends: {backend} full build {full_s:.0f}s ({report.summary()})")
        # One article edited: what an operator's `index add` of one story costs.
        edited = corpus / "a00000.md"
        original = edited.read_text(encoding="utf-8")
        edited.write_text(original.replace("。", "。据悉，", 1), encoding="utf-8")
        t = time.perf_counter()
        one = store.build(embedder=synthetic)
        one_s = time.perf_counter() - t
        edited.write_text(original, encoding="utf-8")
        log(f"backends: {backend} one-article rebuild {one_s:.1f}s ({one.summary()})")

        retriever = Retriever.open(config.index.dir, config, embedder=model)
        retriever.warm_up(background=False)
        reader = retriever.reader
        lat = []
        for q in qs[n_queries:]:
            t = time.perf_counter()
            retriever.answer(q)
            lat.append(time.perf_counter() - t)
        dense_lat, found = [], []
        for qvec in qvecs:
            t = time.perf_counter()
            _, ids = reader.dense(qvec[None, :], 10)
            dense_lat.append(time.perf_counter() - t)
            found.append(ids[0])
        results[backend] = {
            "passages": reader.count,
            "full_build_s": full_s,
            "one_article_rebuild_s": one_s,
            "query_p50_ms": 1000 * percentile(lat, 50),
            "query_p95_ms": 1000 * percentile(lat, 95),
            "dense_p50_ms": 1000 * percentile(dense_lat, 50),
            "found": found,
        }
        retriever.close()
        store.close()
        log(f"backends: {backend} query p50 {results[backend]['query_p50_ms']:.1f} ms")

    # Recall@10 of each dense side against exact search over the catalog's vectors (the same
    # passages and ids in both backends).
    for backend, value in dense_recall(work / "index-faiss", qvecs, {b: results[b].pop("found") for b in BACKENDS}):
        results[backend]["dense_recall_at_10"] = value
    results["ratios_milvus_lite_over_faiss"] = {
        key: results["milvus"][key] / max(results["faiss"][key], 1e-9)
        for key in ("full_build_s", "one_article_rebuild_s", "query_p50_ms", "query_p95_ms", "dense_p50_ms")
    }
    return results


def dense_recall(catalog: Path, qvecs: np.ndarray, found: dict[str, list[np.ndarray]]) -> list[tuple[str, float]]:
    """Recall@10 against exact search over the catalog's vectors, tie-aware: a found passage
    counts when its cosine reaches the 10th exact one (copies share their vectors, and exact
    searches order ties differently)."""
    from index import publish
    from index import store as sqlite_store

    db = sqlite_store.open_db(publish.require_current(catalog).db_path, readonly=True)
    pairs = list(sqlite_store.iter_embeddings(db))
    db.close()
    ids = np.concatenate([i for i, _ in pairs])
    vectors = np.concatenate([v for _, v in pairs])
    row_of = {int(i): row for row, i in enumerate(ids)}
    truth = exact_top_k(vectors, qvecs, 10)
    kth = np.array([float(vectors[t[-1]] @ q) for t, q in zip(truth, qvecs, strict=True)])
    out = []
    for backend, hits in found.items():
        shares = [
            sum(1 for i in f.tolist() if i in row_of and float(vectors[row_of[i]] @ q) >= low - 1e-6) / 10
            for f, q, low in zip(hits, qvecs, kth, strict=True)
        ]
        out.append((backend, float(np.mean(shares))))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    result = evaluate(args.work, args.passages, args.queries)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
