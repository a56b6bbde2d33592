"""Performance benchmarks behind `make bench`: build, rebuild, query latency, start-up, bot.

Every timed program runs as a child process the way an operator runs it (`python -m index
build`, `python -m retrieval`, `python bot.py`); wall times are taken around the child and peak
RSS comes from `os.wait4`. Figures that are compared are measured in the same run, alternating
which side goes first, and reported as medians. See bench/README.md for what each figure means.

The sub-commands `api` and `scale` are the in-process parts, run as children of `bench/run.py`
so each starts from a fresh interpreter:

    .venv/bin/python -m bench.perf api --index DIR [--n 300]
    .venv/bin/python -m bench.perf scale --base DIR --out DIR --n 1000000 --kind ivf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

PY = sys.executable
CMRC = ROOT / "bench" / "data" / "cmrc2018_trial.json"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
HEAVY_MODULES = ("torch", "sentence_transformers", "faiss", "jieba")

# Runs a module as `python -m MODULE ARGS` and reports at exit which heavy modules it imported.
_PROBE = (
    "import atexit, json, runpy, sys\n"
    "def _report():\n"
    f"    heavy = {{m: m in sys.modules for m in {HEAVY_MODULES!r}}}\n"
    "    sys.stderr.write('\\n@@probe ' + json.dumps(heavy) + '\\n')\n"
    "atexit.register(_report)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def questions(n: int, seed: int = 0) -> list[str]:
    """Distinct CMRC-2018 trial questions in a seeded order (the synthetic corpus is made of
    CMRC sentences, so they are on topic)."""
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    qs = list(dict.fromkeys(q["question"].strip() for a in data for p in a["paragraphs"] for q in p["qas"]))
    qs = [q for q in qs if q and "\n" not in q]
    random.Random(seed).shuffle(qs)
    return qs[:n]


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo, printed beside every timing (figures from
    an Intel and an AMD machine are not comparable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- child processes
@dataclass
class Child:
    wall_s: float
    maxrss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Child:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}: {self.stderr[-2000:]}")
        return self

    def probe(self) -> dict[str, bool]:
        for line in reversed(self.stderr.splitlines()):
            if line.startswith("@@probe "):
                return json.loads(line[len("@@probe ") :])
        return {}


# Deployment overrides a developer's shell may hold; the benchmarks run on their own config
# (QA_CONFIG, which chooses that config, is passed on).
_DEPLOYMENT_ENV = (
    "QA_INDEX_DIR",
    "QA_STATE_DIR",
    "QA_ADMINS",
    "QA_ALLOWLIST",
    "TELEGRAM_BASE_URL",
    "TELEGRAM_BOT_TOKEN",
    "MILVUS_URI",
    "MILVUS_TOKEN",
)


def child_env(**extra: str | None) -> dict[str, str]:
    """The bench's environment without deployment overrides, plus `extra` (None removes)."""
    env = {k: v for k, v in os.environ.items() if k not in _DEPLOYMENT_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_child(
    args: Sequence[str], *, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 1800.0
) -> Child:
    """Run to completion; wall time around the child, its own peak RSS from wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env or child_env(),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            if stdin is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin.encode("utf-8"))
                proc.stdin.close()
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(
            wall,
            usage.ru_maxrss / 1024,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def ref_env(threads: int) -> dict[str, str]:
    """The numpy reference's environment: OpenBLAS core-type overrides removed, BLAS/OpenMP
    pools pinned to `threads`."""
    n = str(threads)
    return child_env(
        **{k: None for k in OPENBLAS_VARS},
        PYTHONPATH=None,
        OPENBLAS_NUM_THREADS=n,
        OMP_NUM_THREADS=n,
        MKL_NUM_THREADS=n,
    )


def run_reference(texts_json: Path, threads: int, repeats: int = 1) -> dict[str, Any]:
    child = run_child(
        [PY, "-I", str(BENCH / "ref_encode.py"), str(texts_json), "--threads", str(threads), "--repeats", str(repeats)],
        env=ref_env(threads),
    ).check("reference encode")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if result["torch_imported"] or result["sklearn_imported"]:
        raise RuntimeError("the reference process imported torch or sklearn: not a clean run")
    result["wall_s"] = child.wall_s
    return result


def build_chunks(texts: Sequence[str]) -> list[Sequence[str]]:
    """`texts` cut like `index build` cuts them for the embedder (~EMBED_CHARS a call)."""
    from index.build import EMBED_CHARS

    chunks, start = [], 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (end == start or chars + len(texts[end]) <= EMBED_CHARS):
            chars += len(texts[end])
            end += 1
        chunks.append(texts[start:end])
        start = end
    return chunks


def our_encode(texts_json: Path) -> dict[str, Any]:
    """Child entry point: our embedder (config.toml's model) over the texts in the build's
    chunks, in a process that imports only what the build imports."""
    started = time.perf_counter()
    from index.embedder import load_embedder
    from settings import load_config

    texts = json.loads(texts_json.read_text(encoding="utf-8"))
    embedder = load_embedder(load_config().model)
    embedder.encode_documents(texts[:8])
    load_s = time.perf_counter() - started
    t = time.perf_counter()
    for chunk in build_chunks(texts):
        embedder.encode_documents(chunk)
    return {"n": len(texts), "load_s": load_s, "encode_s": time.perf_counter() - t}


def run_our_encode(texts_json: Path) -> dict[str, Any]:
    child = run_child([PY, "-m", "bench.perf", "encode", "--texts", str(texts_json)]).check("our encode")
    return json.loads(child.stdout.strip().splitlines()[-1])


def index_build(corpus: Path, index: Path, *, probe: bool = False, full: bool = False) -> Child:
    args = ["index", "build", "--corpus", str(corpus), "--index", str(index)] + (["--full"] if full else [])
    cmd = [PY, "-c", _PROBE, *args] if probe else [PY, "-m", *args]
    return run_child(cmd).check("index build")


# ---------------------------------------------------------------- build and rebuild
def bench_build(work: Path, *, n_passages: int, repeats: int, rebuild_repeats: int, threads: int) -> dict[str, Any]:
    """Full build of the synthetic corpus vs the reference's bare encode; then rebuilds."""
    from bench.synth import add_article, corpus_passages, make_corpus

    corpus, index = work / "corpus", work / "index"
    shutil.rmtree(corpus, ignore_errors=True)
    articles = make_corpus(corpus, n_passages)
    texts = corpus_passages(corpus)
    texts_json = work / "passages.json"
    texts_json.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    log(f"build: {articles} articles, {len(texts)} passages, {sum(map(len, texts))} chars")

    builds: list[Child] = []
    refs: list[dict[str, Any]] = []

    def one_build() -> None:
        shutil.rmtree(index, ignore_errors=True)
        child = index_build(corpus, index)
        log(f"  full build {child.wall_s:.1f}s, peak RSS {child.maxrss_mb:.0f} MB")
        builds.append(child)

    def one_ref() -> None:
        ref = run_reference(texts_json, threads)
        log(f"  reference encode {ref['encode_s'][0]:.1f}s (+{ref['load_s']:.1f}s load)")
        refs.append(ref)

    ours: list[dict[str, Any]] = []

    def one_ours() -> None:
        ours.append(run_our_encode(texts_json))
        log(f"  our encode {ours[-1]['encode_s']:.1f}s (+{ours[-1]['load_s']:.1f}s load)")

    for r in range(repeats):
        for step in (one_ref, one_ours, one_build) if r % 2 == 0 else (one_build, one_ours, one_ref):
            step()
    build_s = median([b.wall_s for b in builds])
    ref_s = median([x["encode_s"][0] for x in refs])
    ours_s = median([x["encode_s"] for x in ours])
    result: dict[str, Any] = {
        "articles": articles,
        "passages": len(texts),
        "chars": sum(map(len, texts)),
        "build_runs_s": [round(b.wall_s, 2) for b in builds],
        "build_s": build_s,
        "build_peak_rss_mb": max(b.maxrss_mb for b in builds),
        "build_summary": builds[-1].stdout.strip().splitlines()[-1],
        "ref_encode_runs_s": [round(x["encode_s"][0], 2) for x in refs],
        "ref_encode_s": ref_s,
        "ref_load_s": median([x["load_s"] for x in refs]),
        "ref_pools": refs[-1]["pools"],
        "ref_env": refs[-1]["env"],
        "ratio": ref_s / build_s,
        "threads": threads,
        # Embedding alone, both sides in clean child processes, same passages.
        "ours_encode_runs_s": [round(x["encode_s"], 2) for x in ours],
        "ours_encode_s": ours_s,
        "ours_load_s": median([x["load_s"] for x in ours]),
        "encode_ratio": ref_s / ours_s,
    }

    # Rebuilds: nothing changed, one article added, that article removed again, each probed for
    # the heavy modules it imported. Fractions of the median full build.
    nochange: list[Child] = []
    added: list[Child] = []
    removed: list[Child] = []
    for _ in range(rebuild_repeats):
        nochange.append(index_build(corpus, index, probe=True))
        path = add_article(corpus)
        added.append(index_build(corpus, index, probe=True))
        path.unlink()
        removed.append(index_build(corpus, index, probe=True))
    log(
        f"  rebuild no change {median([c.wall_s for c in nochange]):.2f}s, "
        f"one added {median([c.wall_s for c in added]):.2f}s, one removed {median([c.wall_s for c in removed]):.2f}s"
    )
    for child, expect in ((nochange[-1], "nothing changed"), (added[-1], "1 added"), (removed[-1], "1 removed")):
        if expect not in child.stdout:
            raise RuntimeError(f"rebuild did not report {expect!r}: {child.stdout[-500:]}")
    for name, runs in (("nochange", nochange), ("added", added), ("removed", removed)):
        wall = median([c.wall_s for c in runs])
        result[f"rebuild_{name}_s"] = wall
        result[f"rebuild_{name}_runs_s"] = [round(c.wall_s, 2) for c in runs]
        result[f"rebuild_{name}_fraction"] = wall / build_s
    result["rebuild_nochange_imports"] = nochange[-1].probe()
    result["rebuild_removed_imports"] = removed[-1].probe()
    result["rebuild_added_imports"] = added[-1].probe()
    return result


def bench_lazy_imports() -> dict[str, Any]:
    """Which heavy modules commands that need no model import (must be none of torch/ST)."""
    out = {}
    for name, args in (("index --help", ["index", "--help"]), ("retrieval --help", ["retrieval", "--help"])):
        child = run_child([PY, "-c", _PROBE, *args])
        out[name] = {"wall_s": child.wall_s, "imports": child.probe()}
    return out


# ---------------------------------------------------------------- queries at 6k
def bench_cli(
    index: Path, *, n: int, repeats: int, warm: int = 10, k: int | None = None, min_chars: int = 0
) -> dict[str, Any]:
    """`python -m retrieval` batch mode: spawn → first answer line, and the marginal time per
    question (slope of answer-line times after `warm` lines). `k` is passed as `--k`;
    `min_chars` keeps only questions at least that long (the "long Chinese questions" mix).

    Also the marginal *CPU* time per question: the child's user + system time (wait4) with
    all questions minus that with the first `warm` only, per extra question. On a shared
    machine the wall-clock slope swings with the other tenants' load; CPU time much less."""
    qs = [q for q in questions(2000, seed=1) if len(q) >= min_chars][:n]
    k_args = ["--k", str(k)] if k is not None else []

    def run(lines: list[str]) -> tuple[float, list[float], float]:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [PY, "-m", "retrieval", "--index", str(index), *k_args],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(("\n".join(lines) + "\n").encode("utf-8"))
        proc.stdin.close()
        stamps = [time.perf_counter() for _ in iter(proc.stdout.readline, b"")]
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or len(stamps) != len(lines):
            raise RuntimeError(f"retrieval batch mode: exit {proc.returncode}, {len(stamps)}/{len(lines)} lines")
        return started, stamps, usage.ru_utime + usage.ru_stime

    firsts, marginals, cpu_marginals = [], [], []
    for _ in range(repeats):
        started, stamps, cpu_all = run(qs)
        _, _, cpu_warm = run(qs[:warm])
        firsts.append(stamps[0] - started)
        marginals.append((stamps[-1] - stamps[warm]) / (len(stamps) - 1 - warm))
        cpu_marginals.append((cpu_all - cpu_warm) / (len(qs) - warm))
    log(
        f"  CLI (k={k or 'default'}, questions >= {min_chars} chars) first answer {median(firsts):.2f}s, "
        f"marginal {1000 * median(marginals):.2f} ms/question, CPU {1000 * median(cpu_marginals):.2f} ms/question"
        f" [{cpu_model()}]"
    )
    return {
        "questions": len(qs),
        "k": k,
        "min_chars": min_chars,
        "first_answer_s": median(firsts),
        "first_answer_runs_s": [round(x, 3) for x in firsts],
        "marginal_ms": 1000 * median(marginals),
        "marginal_runs_ms": [round(1000 * x, 3) for x in marginals],
        "marginal_cpu_ms": 1000 * median(cpu_marginals),
        "marginal_cpu_runs_ms": [round(1000 * x, 3) for x in cpu_marginals],
    }


def api_latency(index: Path, n: int, *, batch: int = 32, seed: int = 2) -> dict[str, Any]:
    """In-process: Retriever.answer one question at a time (p50/p95), plus the per-question
    time of answer_many in batches (what the bot's batcher does) and component medians."""

    from retrieval.search import Retriever
    from settings import load_config, with_overrides

    config = with_overrides(load_config(), index_dir=index)
    started = time.perf_counter()
    retriever = Retriever.open(index, config)
    retriever.warm_up(background=False)  # nothing left loading while timed
    open_s = time.perf_counter() - started
    qs = questions(2 * n, seed=seed)
    single, batched = qs[:n], qs[n:]
    lat = []
    for q in single:
        t = time.perf_counter()
        retriever.answer(q)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    for start in range(0, len(batched), batch):
        retriever.answer_many(batched[start : start + batch])
    batched_ms = 1000 * (time.perf_counter() - t) / max(len(batched), 1)

    # Where the time goes: the same calls as _answer_one, timed separately, and per question
    # the rest of a whole `answer` (fusion, titles, dates, copies, highlighting: retrieval/).
    from index.text import terms

    snap = retriever.reader
    parts: dict[str, list[float]] = {"embed": [], "bm25": [], "faiss": [], "cosines": [], "sql": [], "rest": []}
    for q in single[:100]:
        t = time.perf_counter()
        retriever.answer(q)
        whole = time.perf_counter() - t
        t0 = time.perf_counter()
        qvec = retriever.embedder.encode_queries([q])
        t1 = time.perf_counter()
        lexical = snap.lexical(list(dict.fromkeys(terms(q))), config.retrieval.candidates)
        t2 = time.perf_counter()
        _, dense_ids = snap.dense(qvec[0], min(config.retrieval.candidates, snap.count))
        t3 = time.perf_counter()
        dense = set(dense_ids[0].tolist())
        snap.cosines([i for i in lexical if i not in dense], qvec[0])  # lexical-only candidates
        t4 = time.perf_counter()
        snap.rows(dense_ids[0][:3].tolist())
        t5 = time.perf_counter()
        parts["embed"].append(t1 - t0)
        parts["bm25"].append(t2 - t1)
        parts["faiss"].append(t3 - t2)
        parts["cosines"].append(t4 - t3)
        parts["sql"].append(t5 - t4)  # the top rows
        parts["rest"].append(max(0.0, whole - (t5 - t0)))
    retriever.close()
    return {
        "cpu": cpu_model(),
        "passages": snap.count,
        "faiss": snap.meta.get("faiss"),
        "questions": n,
        "open_and_warm_s": open_s,
        "p50_ms": 1000 * percentile(lat, 50),
        "p95_ms": 1000 * percentile(lat, 95),
        "mean_ms": 1000 * statistics.mean(lat),
        "batched_ms_per_question": batched_ms,
        "batch": batch,
        "component_p50_ms": {k: 1000 * median(v) for k, v in parts.items()},
    }


def run_api_child(index: Path, n: int) -> dict[str, Any]:
    child = run_child([PY, "-m", "bench.perf", "api", "--index", str(index), "--n", str(n)]).check("api")
    return json.loads(child.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- 100k and 1M passages
def synthetic_vectors(real: Any, n: int, seed: int = 0, noise: float = 0.3) -> tuple[Any, Any]:
    """`n` unit vectors near the real embeddings' distribution: each is a random convex mix of two
    real passage embeddings (weight U(0.2, 0.8)) plus Gaussian noise of norm ~`noise`. Returns
    the vectors and, per vector, the rows of the two real embeddings it mixes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    pairs = np.empty((n, 2), dtype=np.int64)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        w = rng.uniform(0.2, 0.8, (m, 1)).astype(np.float32)
        a, b = rng.integers(0, len(real), m), rng.integers(0, len(real), m)
        v = w * real[a] + (1 - w) * real[b]
        v += (noise / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[start : start + m] = v
        pairs[start : start + m] = np.stack([a, b], axis=1)
    return out, pairs


def exact_top_k(vectors: Any, queries: Any, k: int) -> Any:
    """Exact inner-product top-k ids (row numbers), chunked to bound memory."""
    import numpy as np

    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), 200_000):
        sims = queries @ vectors[start : start + 200_000].T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, top, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, top + start], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    return best_i


def scale_index(
    base: Path,
    out: Path,
    n: int,
    kinds: Sequence[str],
    *,
    n_api: int,
    n_recall: int,
    hnsw_m: int | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """A published index of `n` passages: the base index's real passages and embeddings, then
    synthetic passages (vectors from `synthetic_vectors`, text stitched from sentences of the two
    real passages each vector mixes, terms from their segmentation), BM25 postings by
    `index.store.write_bm25` as a build writes them. FAISS built by `index.vectors` for each
    kind in `kinds` (the last one is published and queried through the Python API). Measures
    dense-only latency and recall@10 against exact search for each kind, then API latency.
    With `reuse`, an index already published in `out` is only queried (API latency), to
    iterate on the query side."""
    from dataclasses import replace

    import numpy as np

    from bench.synth import material
    from index import publish, store, vectors
    from index.text import segment_for_index, sentence_spans
    from settings import load_config

    live_out = publish.current_version(out) if reuse else None
    if live_out is not None:
        for path in (live_out.db_path, live_out.faiss_path):  # into the page cache, as a build leaves them
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        api = api_latency(out, n_api)
        parts = {k: round(v, 2) for k, v in api["component_p50_ms"].items()}
        log(
            f"  {api['passages']} (reused) API p50 {api['p50_ms']:.1f} ms p95 {api['p95_ms']:.1f} ms, "
            f"parts {parts} [{api['cpu']}]"
        )
        return {"passages": api["passages"], "reused": True, "api": api}
    config = load_config()
    live = publish.require_current(base)
    shutil.rmtree(out, ignore_errors=True)
    name, staging = publish.new_version_dir(out)
    db_path = staging / publish.DB_FILE
    store.copy_database(live.db_path, db_path)
    db = store.open_db(db_path)
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = OFF")
    real = np.frombuffer(
        b"".join(r[0] for r in conn.execute("select embedding from passages order by id")), dtype=np.float32
    ).reshape(-1, 512)
    n_real = len(real)
    synthetic, pairs = synthetic_vectors(real, n - n_real)
    titles, _ = material()
    # A synthetic passage's text is made of sentences of the two real passages its vector
    # mixes, so that text and vector agree as in a real corpus: with unrelated text, ~35 % of
    # questions found dense hits sharing none of their words and paid for highlighting by
    # sentence embeddings, which real questions seldom do (5-9 %).
    real_sentences: list[list[tuple[str, list, str]]] = []  # per real passage: (text, spans, terms)
    for text, stored in conn.execute("select text, sentences from passages order by id"):
        sentences = []
        for start, end, norm in json.loads(stored):
            sentence = text[start:end]
            sentences.append((sentence, [(0, end - start, norm)], segment_for_index(sentence)))
        real_sentences.append(sentences or [(text, sentence_spans(text), segment_for_index(text))])
    rng = random.Random(5)
    started = time.perf_counter()
    per_article, batch = 12, 20_000
    for start in range(0, n - n_real, batch):
        rows, arts = [], []
        for i in range(start, min(n - n_real, start + batch)):
            picks = []
            for real_row in pairs[i]:
                own = real_sentences[real_row]
                first = rng.randrange(len(own))
                picks += own[first : first + rng.randint(1, 3)]
            article = f"synthetic/{i // per_article:07d}.md"
            if i % per_article == 0:
                arts.append((article, article, rng.choice(titles), "合成新闻", "", "2020-01-01", "", "zh", "-", 0))
            ordinal = i % per_article
            text = "".join(sentence for sentence, _, _ in picks)
            stored, offset = [], 0
            for sentence, spans, _ in picks:
                stored += [[a + offset, b + offset, norm] for a, b, norm in spans]
                offset += len(sentence)
            rows.append(
                (
                    article,
                    ordinal,
                    "",
                    ordinal + 1,
                    ordinal + 1,
                    text,
                    0,
                    len(text),
                    " ".join(terms for _, _, terms in picks),
                    synthetic[i].tobytes(),
                    json.dumps(stored, ensure_ascii=False),
                )
            )
        with conn:
            conn.executemany("insert into articles values (?,?,?,?,?,?,?,?,?,?)", arts)
            conn.executemany(
                'insert into passages (article_id, ordinal, section, paragraph, paragraph_end, text, start, "end",'
                " terms, embedding, sentences) values (?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
    sqlite_s = time.perf_counter() - started
    started = time.perf_counter()
    store.write_bm25(db)
    bm25_s = time.perf_counter() - started
    log(f"  {n} passages: SQLite + FTS written in {sqlite_s:.0f}s, BM25 postings in {bm25_s:.0f}s")

    # Ground truth for recall: exact search over all vectors (FAISS ids = passage row ids).
    ids = np.fromiter((r[0] for r in conn.execute("select id from passages order by id")), dtype=np.int64)
    all_vectors = np.concatenate([real, synthetic])
    del synthetic
    from index.embedder import load_embedder

    embedder = load_embedder(config.model)
    qvecs = embedder.encode_queries(questions(n_recall, seed=3)).astype(np.float32)
    truth = ids[exact_top_k(all_vectors, qvecs, 10)]
    del all_vectors

    import faiss

    threads = faiss.omp_get_max_threads()
    result: dict[str, Any] = {
        "passages": n,
        "real_passages": n_real,
        "sqlite_s": sqlite_s,
        "bm25_s": bm25_s,
        "dense": {},
    }
    faiss_path = staging / publish.FAISS_FILE
    for kind in kinds:
        icfg = config.index if hnsw_m is None else replace(config.index, hnsw_m=hnsw_m)
        t = time.perf_counter()
        index = vectors.build_faiss(store.iter_embeddings(db), 512, kind, icfg)
        build_s = time.perf_counter() - t
        vectors.write_faiss(index, faiss_path)
        del index
        index = vectors.read_faiss(faiss_path, config.index.hnsw_ef_search)
        lat, hits = [], []
        faiss.omp_set_num_threads(1)  # one query at a time, as the retriever searches
        for i in range(len(qvecs)):
            t = time.perf_counter()
            _, found = index.search(qvecs[i : i + 1], 10)
            lat.append(time.perf_counter() - t)
            hits.append(len(set(found[0].tolist()) & set(truth[i].tolist())) / 10)
        faiss.omp_set_num_threads(threads)
        inner = faiss.downcast_index(index.index)
        ivf_params = f"nlist={inner.nlist} nprobe={inner.nprobe}" if kind == "ivf" else ""
        del index, inner
        result["dense"][kind] = {
            "build_s": build_s,
            "p50_ms": 1000 * percentile(lat, 50),
            "p95_ms": 1000 * percentile(lat, 95),
            "recall_at_10": float(np.mean(hits)),
            "params": (
                f"M={icfg.hnsw_m} efConstruction={max(40, icfg.hnsw_m * 2)} efSearch={icfg.hnsw_ef_search}"
                if kind == "hnsw"
                else "exact"
                if kind == "flat"
                else ivf_params
            ),
        }
        log(
            f"  {n} {kind}: built {build_s:.0f}s, p50 {result['dense'][kind]['p50_ms']:.2f} ms, "
            f"recall@10 {result['dense'][kind]['recall_at_10']:.3f} [{cpu_model()}]"
        )
    meta = store.get_meta(db)
    meta.update(passages=n, faiss=kinds[-1], version=name, articles=db["articles"].count)
    store.set_meta(db, meta)
    conn.commit()
    db.close()
    publish.publish(out, name, staging)
    result["api"] = api_latency(out, n_api)
    parts = result["api"]["component_p50_ms"]
    log(
        f"  {n} API p50 {result['api']['p50_ms']:.1f} ms p95 {result['api']['p95_ms']:.1f} ms "
        f"(embed {parts['embed']:.1f}, bm25 {parts['bm25']:.1f}, faiss {parts['faiss']:.1f}, "
        f"cosines {parts['cosines']:.1f}, sql {parts['sql']:.1f}, rest {parts['rest']:.1f}) [{result['api']['cpu']}]"
    )
    return result


def run_scale_child(
    base: Path, out: Path, n: int, kinds: Sequence[str], *, n_api: int, n_recall: int, hnsw_m: int | None = None
) -> dict[str, Any]:
    args = [
        PY,
        "-m",
        "bench.perf",
        "scale",
        "--base",
        str(base),
        "--out",
        str(out),
        "--n",
        str(n),
        "--kinds",
        ",".join(kinds),
        "--n-api",
        str(n_api),
        "--n-recall",
        str(n_recall),
    ]
    if hnsw_m:
        args += ["--hnsw-m", str(hnsw_m)]
    try:
        child = run_child(args, timeout=3600).check(f"scale {n}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = child.maxrss_mb
    result["wall_s"] = child.wall_s
    return result


# ---------------------------------------------------------------- bot
def bench_bot(work: Path, corpus: Path, index: Path, *, bursts: Sequence[int], repeats: int) -> dict[str, Any]:
    """bot.py against the loopback fake Bot API: spawn → first answer, then bursts of questions
    from distinct chats (time until every chat has its answer), then peak RSS."""
    from loopback.fake_telegram import FakeBotAPIServer, FakeTelegram, Payloads

    token = "12345:BENCH_only_not_a_real_token"
    config = work / "bot-config.toml"
    config.write_text(
        f"[index]\ndir = {json.dumps(str(index))}\n[corpus]\ndir = {json.dumps(str(corpus))}\n"
        f"[telegram]\nstate_dir = {json.dumps(str(work / 'state'))}\n",
        encoding="utf-8",
    )
    qs = questions(sum(bursts) * repeats + 1, seed=4)
    result: dict[str, Any] = {"bursts": {}}
    with FakeBotAPIServer(FakeTelegram(token)) as server:
        api = server.api
        payloads = Payloads()

        def answered(chats: set[int]) -> int:
            return len({int(c.params["chat_id"]) for c in api.recorded("sendMessage")} & chats)

        env = child_env(TELEGRAM_BOT_TOKEN=token, TELEGRAM_BASE_URL=server.base_url)
        with tempfile.TemporaryFile() as out:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [PY, "bot.py", "--config", str(config)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                api.push(payloads.message(qs.pop(), chat_id=1, user_id=1))
                if not api.wait_for(lambda: answered({1}) == 1, 300):
                    raise RuntimeError("the bot did not answer its first question within 300 s")
                result["first_answer_s"] = time.perf_counter() - started
                log(f"  bot first answer {result['first_answer_s']:.1f}s")
                chat = 1000
                for size in bursts:
                    runs = []
                    for _ in range(repeats):
                        chats = set(range(chat, chat + size))
                        chat += size
                        t = time.perf_counter()
                        for c in sorted(chats):
                            api.push(payloads.message(qs.pop(), chat_id=c, user_id=c))
                        if not api.wait_for(lambda chats=chats: answered(chats) == len(chats), 600):
                            raise RuntimeError(f"burst of {size}: only {answered(chats)} answered")
                        runs.append(time.perf_counter() - t)
                    result["bursts"][str(size)] = {"s": median(runs), "runs_s": [round(x, 2) for x in runs]}
                    log(f"  bot burst {size}: {median(runs):.2f}s")
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    _, _, usage = os.wait4(proc.pid, 0)
                    proc.returncode = 0
                    result["peak_rss_mb"] = usage.ru_maxrss / 1024
                except ChildProcessError:
                    pass
    return result


# ---------------------------------------------------------------- children's entry points
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    api = sub.add_parser("api")
    api.add_argument("--index", type=Path, required=True)
    api.add_argument("--n", type=int, default=300)
    scale = sub.add_parser("scale")
    scale.add_argument("--base", type=Path, required=True)
    scale.add_argument("--out", type=Path, required=True)
    scale.add_argument("--n", type=int, required=True)
    scale.add_argument("--kinds", default="flat")
    scale.add_argument("--n-api", type=int, default=200)
    scale.add_argument("--n-recall", type=int, default=200)
    scale.add_argument("--hnsw-m", type=int, default=None)
    scale.add_argument("--reuse", action="store_true", help="only query the index already published in --out")
    enc = sub.add_parser("encode")
    enc.add_argument("--texts", type=Path, required=True)
    args = parser.parse_args(argv)
    run: Callable[[], dict[str, Any]]
    if args.cmd == "api":

        def run() -> dict[str, Any]:
            return api_latency(args.index, args.n)
    elif args.cmd == "encode":

        def run() -> dict[str, Any]:
            return our_encode(args.texts)
    else:

        def run() -> dict[str, Any]:
            return scale_index(
                args.base,
                args.out,
                args.n,
                args.kinds.split(","),
                n_api=args.n_api,
                n_recall=args.n_recall,
                hnsw_m=args.hnsw_m,
                reuse=args.reuse,
            )

    print(json.dumps(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
