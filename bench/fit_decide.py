"""Fit the "not covered" decision (`retrieval.decide`) by cross-validation, and report it.

    .venv/bin/python -m bench.fit_decide [--folds 5] [--json out.json] [--cache vectors.npz]

Labelled questions, each with the decision's features computed by the real retriever:

- the default article: `bench/data/article-answerable*.jsonl` (answered) and
  `near-topic*.jsonl` (not covered) of `bench.quality.FITTED_BATCHES`, written for this
  purpose; figures are printed per file. The `HELD_OUT_BATCHES` are never fitted on: they
  are decided by the parameters fitted on everything and reported apart;
- CMRC-2018 trial (every paragraph an article): each question against the whole corpus
  (answered), and against the corpus without its own paragraph (not covered: the closest
  other paragraphs are in the same Wikipedia style, often on a related subject). Paragraphs
  are split into folds; fold f's questions are asked of an index built without fold f;
- off topic (not covered): every third CMRC question asked of the article, and the article's
  questions asked of the CMRC paragraphs (English ones included).

The weights are a logistic regression with non-negative weights (gradient descent in numpy),
each (source, label) group weighing alike; the threshold is then the highest
score that flags at most `--target` of each corpus's answerable questions, so the flag stays
rare on real questions. The second threshold, `sure_threshold`, splits what is quoted into
"sure" and "unsure": it is the score below which at most a share `u` of the article's
answerable questions fall (flagged or unsure); `u` is the middle one of those on a grid whose
cross-validated figures leave at least `--near-topic` of the article's near-topic questions
unsure or not covered and at most `--max-unsure` of its answerable ones unsure (three grades:
`retrieval.model.Confidence`).

Cross-validation holds out a fold of CMRC paragraphs (whole articles: their questions on both
sides) together with a fold of the article's questions (one article, so its questions are
split by position). The parameters printed last are fitted on everything and are what
`config.toml` `[retrieval]` holds, with their in-sample figures. Seed-dev, held-out and the
`bench/quality.py` lists are never used here. `--cache` keeps the model's vectors between runs
(`bench.embed_cache`): a rerun then takes ~3 minutes instead of ~6.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.embed_cache import CachedEmbedder
from bench.quality import DECISION_SETS, cmrc_paragraphs, seed_questions, write_cmrc_corpus
from index.build import build_index
from index.embedder import Embedder, load_embedder
from retrieval.decide import FEATURES
from retrieval.search import Retriever
from settings import Config, load_config


def _features(retriever: Retriever, questions: list[str]) -> list[dict[str, float]]:
    return [a.features for a in retriever.answer_many(questions, 3)]


def _config(base: Config, corpus: Path, index: Path) -> Config:
    return replace(base, corpus=replace(base.corpus, dir=corpus), index=replace(base.index, dir=index))


def collect(folds: int, work: Path, embedder: Embedder | None = None) -> list[dict]:
    """Every labelled question: {corpus, set, group, lang, label (1 = answered), q, features,
    held_out}. The article's held-out batches get features too, to be decided, not fitted."""
    base = load_config()
    rows: list[dict] = []

    def add(
        corpus: str, name: str, group: int, lang: str, label: int, q: str, f: dict[str, float], held_out: bool = False
    ) -> None:
        rows.append(
            {
                "corpus": corpus,
                "set": name,
                "group": group,
                "lang": lang,
                "label": label,
                "q": q,
                "features": f,
                "held_out": held_out,
            }
        )

    cfg = replace(base, index=replace(base.index, dir=work / "article-index"))
    build_index(cfg, embedder=embedder)
    retriever = Retriever.open(cfg.index.dir, cfg, embedder)
    article = [(labelled, q) for labelled in DECISION_SETS for q in seed_questions(labelled.path)]
    asked = [q["q"] for _, q in article]
    for i, ((labelled, q), f) in enumerate(zip(article, _features(retriever, asked), strict=True)):
        add("article", labelled.name, i % folds, q["lang"], int(labelled.answered), q["q"], f, not labelled.fitted)
    article = [(labelled, q) for labelled, q in article if labelled.fitted]
    asked = [q["q"] for _, q in article]
    # Off topic: every third CMRC question (Wikipedia trivia) asked of the crypto article.
    paragraphs = cmrc_paragraphs()
    trivia = [(n, qa["question"]) for n, (_, _, par) in enumerate(paragraphs) for qa in par["qas"]][::3]
    for (n, q), f in zip(trivia, _features(retriever, [q for _, q in trivia]), strict=True):
        add("off-topic", "off-topic: CMRC asked of the article", n % folds, "zh", 0, q, f)
    retriever.close()

    for fold in range(-1, folds):
        corpus = work / f"cmrc-{fold}"
        corpus.mkdir()
        write_cmrc_corpus(corpus, frozenset(n for n in range(len(paragraphs)) if n % folds == fold))
        cfg = _config(base, corpus, work / f"cmrc-index-{fold}")
        build_index(cfg, embedder=embedder)
        retriever = Retriever.open(cfg.index.dir, cfg, embedder)
        cmrc = [
            (n, qa["question"])
            for n, (_, _, par) in enumerate(paragraphs)
            for qa in par["qas"]
            if fold < 0 or n % folds == fold
        ]
        name = "CMRC own paragraph" if fold < 0 else "CMRC without its paragraph"
        for (n, q), f in zip(cmrc, _features(retriever, [q for _, q in cmrc]), strict=True):
            add("cmrc", name, n % folds, "zh", int(fold < 0), q, f)
        if fold < 0:  # off topic the other way: the article's questions asked of Wikipedia paragraphs
            for i, ((_, q), f) in enumerate(zip(article, _features(retriever, asked), strict=True)):
                add("off-topic", "off-topic: the article's asked of CMRC", i % folds, q["lang"], 0, q["q"], f)
        retriever.close()
    return rows


def fit_weights(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float, steps: int = 3000
) -> tuple[np.ndarray, float]:
    """Logistic regression with non-negative feature weights (projected gradient descent on
    the weighted log-loss plus `l2`·|w|²): (weights, bias)."""
    w = np.zeros(x.shape[1])
    b = 0.0
    weight = weight / weight.sum()
    rate = 1.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = weight * (p - y)
        w = np.maximum(0.0, w - rate * (x.T @ g + 2 * l2 * w))
        b -= rate * g.sum()
    return w, b


def sample_weights(rows: list[dict]) -> np.ndarray:
    """Every (source, label) group weighs alike: the article's hundred questions count as
    much as CMRC's two thousand."""
    keys = [(r["corpus"], r["label"]) for r in rows]
    counts = {k: keys.count(k) for k in set(keys)}
    return np.array([1.0 / counts[k] for k in keys])


def threshold_for(scores: np.ndarray, rows: list[dict], target: float) -> float:
    """The highest threshold that flags at most `target` of the answerable questions of each
    corpus (a flag is score < threshold)."""
    cuts = []
    for corpus in sorted({r["corpus"] for r in rows}):
        s = np.sort([sc for sc, r in zip(scores, rows, strict=True) if r["corpus"] == corpus and r["label"] == 1])
        cuts.append(s[int(np.floor(target * len(s)))] if len(s) else np.inf)
    return float(min(cuts))


def fit(rows: list[dict], l2: float, target: float) -> tuple[np.ndarray, float]:
    """(weights, threshold) fitted on `rows`."""
    x = matrix(rows)
    y = np.array([r["label"] for r in rows], dtype=float)
    w, _ = fit_weights(x, y, sample_weights(rows), l2)
    return w, threshold_for(x @ w, rows, target)


def matrix(rows: list[dict]) -> np.ndarray:
    return np.array([[r["features"][n] for n in FEATURES] for r in rows])


def flagged(rows: list[dict], flags: np.ndarray, by: str = "set") -> dict[str, dict[str, float]]:
    """Share flagged "not covered" per `by` (a question file, or "corpus"), label and language
    (`n_<lang>`: how many)."""
    out: dict[str, dict[str, float]] = {}
    names = [f"{'answerable' if r['label'] else 'not covered'}: {r[by]}" for r in rows]
    for name in sorted(set(names)):
        for lang in ("all", *sorted({r["lang"] for r, n in zip(rows, names, strict=True) if n == name})):
            mask = np.array([n == name and lang in ("all", r["lang"]) for r, n in zip(rows, names, strict=True)])
            out.setdefault(name, {})[lang] = round(float(flags[mask].mean()), 3)
            out[name][f"n_{lang}"] = int(mask.sum())
    return out


def cross_validate(rows: list[dict], folds: int, l2: float, target: float) -> np.ndarray:
    """Out-of-fold margins (score minus threshold; below 0 is flagged "not covered"): each
    fold decided by parameters fitted on the others."""
    margins = np.zeros(len(rows))
    groups = np.array([r["group"] for r in rows])
    for fold in range(folds):
        train = [r for r, g in zip(rows, groups, strict=True) if g != fold]
        w, t = fit(train, l2, target)
        test = groups == fold
        margins[test] = matrix([r for r, g in zip(rows, groups, strict=True) if g == fold]) @ w - t
    return margins


def tradeoff(rows: list[dict], margins: np.ndarray, shifts: Iterable[float]) -> list[dict[str, float]]:
    """The article's questions flagged on each side if the threshold moved by each shift: what
    any threshold of these features could reach (near-topic flagged vs answerable flagged)."""
    article = np.array([r["corpus"] == "article" for r in rows])
    answerable = np.array([r["label"] == 1 for r in rows])
    return [
        {
            "shift": shift,
            "near-topic flagged": round(float((margins[article & ~answerable] < shift).mean()), 3),
            "answerable flagged": round(float((margins[article & answerable] < shift).mean()), 3),
        }
        for shift in shifts
    ]


# The shares of the article's answerable questions the sure threshold may leave below it.
UNSURE_TARGETS = tuple(round(u, 2) for u in np.arange(0.05, 0.3001, 0.01))


def sure_shift(rows: list[dict], margins: np.ndarray, unsure: float) -> float:
    """How far above the not-covered threshold the sure one lies: the margin below which a
    share `unsure` of the article's answerable questions fall (flagged or unsure)."""
    answerable = np.sort([m for m, r in zip(margins, rows, strict=True) if r["corpus"] == "article" and r["label"]])
    return max(0.0, float(answerable[min(int(np.floor(unsure * len(answerable))), len(answerable) - 1)]))


def cross_validate_sure(rows: list[dict], folds: int, l2: float, target: float, unsure: float) -> np.ndarray:
    """Out-of-fold margins against each fold's sure threshold (below 0: not sure)."""
    margins = np.zeros(len(rows))
    groups = np.array([r["group"] for r in rows])
    for fold in range(folds):
        train = [r for r, g in zip(rows, groups, strict=True) if g != fold]
        w, t = fit(train, l2, target)
        shift = sure_shift(train, matrix(train) @ w - t, unsure)
        test = groups == fold
        margins[test] = matrix([r for r, g in zip(rows, groups, strict=True) if g == fold]) @ w - t - shift
    return margins


def article_share(rows: list[dict], marked: np.ndarray, label: int) -> float:
    """Share of the article's questions with `label` (1 answerable, 0 near-topic) `marked` marks."""
    mask = np.array([r["corpus"] == "article" and r["label"] == label for r in rows])
    return float(marked[mask].mean())


def grades(rows: list[dict], not_covered: np.ndarray, unsure: np.ndarray) -> dict[str, dict[str, float]]:
    """Per question file and language: the share not covered, and the share unsure."""
    nc = flagged(rows, not_covered)
    un = flagged(rows, unsure & ~not_covered)
    return {
        name: {
            f"{key} nc/unsure" if not key.startswith("n_") else key: (v, un[name][key])
            if not key.startswith("n_")
            else v
            for key, v in shares.items()
        }
        for name, shares in nc.items()
    }


def run(
    folds: int = 5,
    target: float = 0.03,
    l2s: tuple[float, ...] = (1e-4, 1e-3, 1e-2),
    rows: list | None = None,
    cache: Path | None = None,
    near_topic: float = 0.8,
    max_unsure: float = 0.2,
) -> dict:
    """Cross-validate the fitting procedure for each regularisation strength, then fit the
    parameters on everything with the best one; then the sure threshold (`sure_shift`), with
    the share of caveats in the middle of those whose cross-validated figures leave at least
    `near_topic` of the near-topic questions and at most `max_unsure` of the answerable ones
    unsure. Returns
    the figures and parameters. `cache`: an .npz file of the model's vectors kept between runs
    (`bench.embed_cache`)."""
    if rows is None:
        embedder = CachedEmbedder(load_embedder(load_config().model), cache) if cache else None
        with tempfile.TemporaryDirectory() as tmp:
            rows = collect(folds, Path(tmp), embedder)
        if embedder:
            embedder.save()
    rows = [r for r in rows if r["features"]]  # blank questions are never answered
    held_out = [r for r in rows if r.get("held_out")]
    rows = [r for r in rows if not r.get("held_out")]
    out_of_fold = {l2: cross_validate(rows, folds, l2, target) for l2 in l2s}
    cv = {l2: flagged(rows, margins < 0) for l2, margins in out_of_fold.items()}
    chosen = min(cv, key=lambda l2: _errors(flagged(rows, out_of_fold[l2] < 0, "corpus")))
    weights, threshold = fit(rows, chosen, target)
    # Of the caveat shares whose cross-validated figures meet both bounds (near-topic questions
    # unsure or not covered, answerable ones unsure), the middle one: slack on both sides.
    sure_cv = {u: cross_validate_sure(rows, folds, chosen, target, u) for u in UNSURE_TARGETS}
    not_covered = out_of_fold[chosen] < 0
    feasible = [
        u
        for u in UNSURE_TARGETS
        if article_share(rows, sure_cv[u] < 0, 0) >= near_topic
        and article_share(rows, (sure_cv[u] < 0) & ~not_covered, 1) <= max_unsure
    ]
    unsure = feasible[len(feasible) // 2] if feasible else UNSURE_TARGETS[-1]
    margins = matrix(rows) @ weights - threshold
    shift = sure_shift(rows, margins, unsure)
    held_margins = matrix(held_out) @ weights - threshold if held_out else np.zeros(0)
    parameters = {f"evidence_{n}": round(float(w), 3) for n, w in zip(FEATURES, weights, strict=True)}
    parameters["evidence_threshold"] = round(threshold, 3)
    parameters["sure_threshold"] = round(threshold + shift, 3)
    in_sample = flagged(rows, margins < 0)
    return {
        "rows": rows + held_out,
        "cv": cv,
        "l2": chosen,
        "cv_chosen": cv[chosen],
        "in_sample": in_sample,
        "held_out": flagged(held_out, held_margins < 0) if held_out else {},
        "unsure_target": unsure,
        "cv_grades": grades(rows, out_of_fold[chosen] < 0, sure_cv[unsure] < 0),
        "held_out_grades": grades(held_out, held_margins < 0, held_margins < shift) if held_out else {},
        # Out of fold for the fitted questions, decided by the final fit for the held-out ones.
        "tradeoff": tradeoff(
            rows + held_out, np.concatenate([out_of_fold[chosen], held_margins]), np.arange(-2.0, 4.01, 0.5)
        ),
        "parameters": parameters,
    }


def _errors(shares: dict[str, dict[str, float]]) -> float:
    """Cross-validated errors, each corpus and side weighing alike (`flagged` by corpus): share
    of answerable questions flagged plus share of not-covered ones answered."""
    return sum(v["all"] if "answerable" in k else 1 - v["all"] for k, v in shares.items())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.03, help="share of answerable questions flagged when fitting")
    parser.add_argument("--l2", default="0.0001,0.001,0.01", help="regularisation strengths tried by cross-validation")
    parser.add_argument("--rows", type=Path, help="labelled features from an earlier --json, instead of computing them")
    parser.add_argument("--json", type=Path, help="write the labelled features, figures and parameters here")
    parser.add_argument("--cache", type=Path, help="an .npz file keeping the model's vectors between runs")
    parser.add_argument(
        "--near-topic", type=float, default=0.8, help="share of near-topic questions to leave unsure or not covered"
    )
    parser.add_argument(
        "--max-unsure", type=float, default=0.2, help="share of answerable questions that may be unsure"
    )
    args = parser.parse_args()
    rows = json.loads(args.rows.read_text(encoding="utf-8"))["rows"] if args.rows else None
    l2s = tuple(float(v) for v in args.l2.split(","))
    report = run(args.folds, args.target, l2s, rows, args.cache, args.near_topic, args.max_unsure)
    tables = [(f"l2={l2}: cross-validated", shares) for l2, shares in report["cv"].items()]
    tables += [
        (f"l2={report['l2']}: in-sample (fitted on everything)", report["in_sample"]),
        ("held out (decided by the parameters fitted on everything)", report["held_out"]),
    ]
    for title, shares in tables:
        print(f"\n{title} share flagged not covered")
        for name, values in shares.items():
            print(f"  {name:<52}" + "  ".join(f"{k} {v}" for k, v in values.items() if not k.startswith("n_")))
    grade_tables = [
        (f"cross-validated, unsure target {report['unsure_target']}", report["cv_grades"]),
        ("held out (decided by the parameters fitted on everything)", report["held_out_grades"]),
    ]
    for title, shares in grade_tables:
        print(f"\n{title}: share not covered / unsure")
        for name, values in shares.items():
            cells = [f"{k.split()[0]} {v[0]:.3f}/{v[1]:.3f}" for k, v in values.items() if not k.startswith("n_")]
            print(f"  {name:<52}" + "  ".join(cells))
    print("\nthe article's questions (cross-validated, and held out) flagged if the threshold moved by:")
    for row in report["tradeoff"]:
        print("  " + "  ".join(f"{k} {v:+.1f}" if k == "shift" else f"{k} {v:.3f}" for k, v in row.items()))
    print(f"\nchosen l2={report['l2']}; [retrieval] fitted on everything:")
    for name, value in report["parameters"].items():
        print(f"{name} = {value}")
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
