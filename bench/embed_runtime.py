"""USE-m3 on torch vs on ONNX Runtime (index/usem3_onnx.py), measured in the same run.

    .venv/bin/python -m bench.embed_runtime [--questions 300] [--passages 1500] [--rounds 3]

Per round, each runtime runs in a fresh child process (order alternating between rounds):
it embeds warm-up questions, then times ``encode`` of one question at a time (the
retriever's call: ``USEm3Embedder.encode_queries([q])``; distinct CMRC questions, so the id
cache is warm only for ids met before, as in service) and then the passages of a synthetic
CMRC-sentence corpus in the build's ~60,000-character calls. Reported: the CPU model, the
medians over rounds of each child's p50/p95 one-question ms and passages/s, the ratios
torch/onnx (also of the calling thread's CPU ms, steadier on a shared machine: both run a
question on that one thread), and the lowest cosine between the two runtimes' vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import perf

RUNTIMES = ("torch", "onnx")


def child(runtime: str, work: Path, n_warm: int) -> dict[str, Any]:
    """Child entry point: one runtime, timed; vectors saved for the cross-check."""
    import numpy as np
    import torch

    from index.usem3_torch import default_threads, load_usem3_model

    questions = json.loads((work / "questions.json").read_text(encoding="utf-8"))
    passages = json.loads((work / "passages.json").read_text(encoding="utf-8"))
    threads = default_threads()
    torch.set_num_threads(threads)  # as `index.embedder` sets it
    started = time.perf_counter()
    model = load_usem3_model(threads=threads, runtime=runtime, onnx_cache=str(work / "onnx-cache"))
    model.encode(questions[:1])
    first_s = time.perf_counter() - started
    for q in questions[:n_warm]:
        model.encode([q])
    ms, cpu_ms = [], []
    for q in questions[n_warm:]:
        t, c = time.perf_counter(), time.thread_time()
        model.encode([q])
        ms.append(1000 * (time.perf_counter() - t))
        cpu_ms.append(1000 * (time.thread_time() - c))
    t = time.perf_counter()
    vectors = [model.encode(chunk) for chunk in perf.build_chunks(passages)]
    passages_s = time.perf_counter() - t
    np.save(work / f"{runtime}-passages.npy", np.concatenate(vectors)[:200])
    np.save(work / f"{runtime}-questions.npy", model.encode(questions[n_warm:]))
    return {
        "runtime": model.runtime_used,
        "p50_ms": perf.percentile(ms, 50),
        "p95_ms": perf.percentile(ms, 95),
        "cpu_p50_ms": perf.percentile(cpu_ms, 50),
        "passages_per_s": len(passages) / passages_s,
        "load_and_first_s": first_s,
    }


def run(n_questions: int = 300, n_passages: int = 1500, rounds: int = 3, n_warm: int = 50) -> dict[str, Any]:
    import numpy as np

    from bench.synth import corpus_passages, make_corpus

    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        work = Path(tmp)
        make_corpus(work / "corpus", n_passages)
        passages = corpus_passages(work / "corpus")
        (work / "passages.json").write_text(json.dumps(passages, ensure_ascii=False), encoding="utf-8")
        questions = perf.questions(n_warm + n_questions, seed=5)
        (work / "questions.json").write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
        runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNTIMES}
        for i in range(rounds):
            for runtime in RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]:
                cmd = [perf.PY, "-m", "bench.embed_runtime", "--child", runtime, "--work", str(work)]
                cmd += ["--warm", str(n_warm)]
                out = perf.run_child(cmd).check(f"{runtime} embedding")
                runs[runtime].append(json.loads(out.stdout.strip().splitlines()[-1]))
                perf.log(f"  {runtime}: {runs[runtime][-1]}")
        cosine = min(
            float(np.min(np.sum(np.load(work / f"torch-{kind}.npy") * np.load(work / f"onnx-{kind}.npy"), axis=1)))
            for kind in ("questions", "passages")
        )
    result: dict[str, Any] = {"cpu": perf.cpu_model(), "passages": len(passages), "questions": n_questions}
    for runtime in RUNTIMES:
        result[runtime] = {
            key: perf.median([r[key] for r in runs[runtime]])
            for key in ("p50_ms", "p95_ms", "cpu_p50_ms", "passages_per_s", "load_and_first_s")
        }
        result[runtime]["ran_on"] = sorted({r["runtime"] for r in runs[runtime]})
    result["p50_ratio"] = result["torch"]["p50_ms"] / result["onnx"]["p50_ms"]
    result["p95_ratio"] = result["torch"]["p95_ms"] / result["onnx"]["p95_ms"]
    result["cpu_p50_ratio"] = result["torch"]["cpu_p50_ms"] / result["onnx"]["cpu_p50_ms"]
    result["passages_ratio"] = result["onnx"]["passages_per_s"] / result["torch"]["passages_per_s"]
    result["cosine_min"] = cosine
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"CPU: {result['cpu']}; {result['questions']} questions one at a time, {result['passages']} passages")
    print(f"{'':<28}{'torch':>10}{'onnx':>10}{'ratio':>8}")
    t, o = result["torch"], result["onnx"]
    print(f"{'1 question p50 ms':<28}{t['p50_ms']:>10.2f}{o['p50_ms']:>10.2f}{result['p50_ratio']:>8.2f}")
    print(f"{'1 question p95 ms':<28}{t['p95_ms']:>10.2f}{o['p95_ms']:>10.2f}{result['p95_ratio']:>8.2f}")
    print(
        f"{'1 question CPU p50 ms':<28}{t['cpu_p50_ms']:>10.2f}{o['cpu_p50_ms']:>10.2f}{result['cpu_p50_ratio']:>8.2f}"
    )
    print(
        f"{'passages/s (build calls)':<28}{t['passages_per_s']:>10.1f}{o['passages_per_s']:>10.1f}"
        f"{result['passages_ratio']:>8.2f}"
    )
    print(f"{'load + first question s':<28}{t['load_and_first_s']:>10.2f}{o['load_and_first_s']:>10.2f}")
    print(f"lowest cosine torch vs onnx: {result['cosine_min']:.7f}; onnx ran on {o['ran_on']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--passages", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.work, args.warm)))
        return 0
    result = run(args.questions, args.passages, args.rounds)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
