"""Choose the fusion form and its parameters by cross-validation over CMRC-2018, split by article.

    .venv/bin/python -m bench.fit_fusion [--folds 5] [--repeats 5] [--json out.json]

Every CMRC-2018 trial paragraph is an article of one index (as in `bench/quality.py`). For
each question the real retrieval pipeline (`Retriever.candidates`) yields the candidates
with their cosine and BM25 scores; every fusion form and parameter is then scored offline.
Articles (not questions) are split into folds, so no paragraph lends its questions to both
the choice and the test: for each fold the form + weight with the best hit@1 (ties: mean
reciprocal rank) on the other folds is chosen and scored on the fold's own questions. The
figure reported is the hit@1 of those choices on unseen questions, pooled, over `--repeats`
different splits. Forms compared:

- `zscore`, `minmax`: each side normalised over the candidate set, weighted sum;
- `zscore-all`: each side standardised against its distribution over every passage of the
  index (BM25 0 where no term matches) — measured here only, by brute force;
- `rrf` with k in `RRF_KS`: weighted reciprocal-rank fusion;
- `zscore+title`: z-score plus `title_weight` (in `TITLE_WEIGHTS`) times the share of the
  question's terms in the candidate's article title (`retrieval.fusion.title_match`); and the
  same with the configured dense weight kept, only the title weight chosen (the choice printed
  last, what `config.toml` holds: the article's own figures depend on the dense weight alone).

`--cache FILE.npz` keeps the model's vectors between runs (`bench.embed_cache`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.embed_cache import CachedEmbedder
from bench.quality import write_cmrc_corpus
from index import store
from index.build import build_index
from index.embedder import Embedder, load_embedder
from retrieval.fusion import fuse
from retrieval.search import Retriever
from settings import load_config

WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))
RRF_KS = (1, 5, 10, 20, 40, 60)
TITLE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


@dataclass
class Question:
    text: str
    article: str
    dense: np.ndarray
    lexical: np.ndarray
    gold: np.ndarray  # bool per candidate: a passage of the question's own paragraph
    dense_all: tuple[float, float]  # mean, std of the cosine over every passage
    lexical_all: tuple[float, float]  # mean, std of BM25 over every passage (0 = no match)
    title: np.ndarray  # `fusion.title_match` of each candidate's article title


def gather(index_dir: Path, pairs: list[tuple[str, str]], embedder: Embedder | None = None) -> list[Question]:
    """Candidates and whole-index score statistics of every question, through the retriever."""
    config = load_config()
    retriever = Retriever.open(index_dir, config, embedder)
    snap = retriever.reader
    matrix = np.concatenate([v for _, v in store.iter_embeddings(snap.db)])
    article_of = {r[0]: r[1] for r in snap.db.execute("select id, article_id from passages")}
    out = []
    for (text, article), found in zip(pairs, retriever.candidates([q for q, _ in pairs]), strict=True):
        if not found.ids:
            continue
        cosines = matrix @ found.query_vector
        bm25 = np.zeros(snap.count)
        scored = list(snap.lexical(list(found.question.terms), snap.count).values())
        bm25[: len(scored)] = scored
        gold = np.array([article_of[i] == article for i in found.ids])
        out.append(
            Question(
                text,
                article,
                found.dense,
                found.lexical,
                gold,
                (float(cosines.mean()), float(cosines.std())),
                (float(bm25.mean()), float(bm25.std())),
                found.title,
            )
        )
    retriever.close()
    return out


Config = tuple[str, float, float, float]


def forms() -> list[Config]:
    """(form, rrf k or 0, dense weight, title weight) for every configuration compared."""
    out = [(form, 0.0, w, 0.0) for form in ("zscore", "minmax", "zscore-all") for w in WEIGHTS]
    out += [("rrf", float(k), w, 0.0) for k in RRF_KS for w in WEIGHTS]
    out += [("zscore", 0.0, w, t) for t in TITLE_WEIGHTS if t for w in WEIGHTS]
    return out


def families(configs: list[Config]) -> dict[str, np.ndarray]:
    """Rows of each form compared, title weight 0 (`zscore+title`: every z-score row)."""
    out = {
        form: np.array([i for i, c in enumerate(configs) if c[0] == form and not c[3]])
        for form in dict.fromkeys(c[0] for c in configs)
    }
    out["zscore+title"] = np.array([i for i, c in enumerate(configs) if c[0] == "zscore"])
    # Only the title weight chosen, the dense weight kept as configured (within one article
    # the title changes nothing, so the article's own figures stay as they are).
    kept = load_config().retrieval.dense_weight
    out[f"zscore w={kept}+title"] = np.array([i for i, c in enumerate(configs) if c[0] == "zscore" and c[2] == kept])
    return out


def describe(config: Config) -> str:
    form, k, w, t = config
    return f"{form}{f' k={k:g}' if form == 'rrf' else ''} w={w}{f' title={t}' if t else ''}"


def fused(q: Question, form: str, rrf_k: float, weight: float, title: float = 0.0) -> np.ndarray:
    if title:
        return fuse(q.dense, q.lexical, weight, form, rrf_k=rrf_k) + title * q.title
    if form == "zscore-all":
        (dm, ds), (lm, ls) = q.dense_all, q.lexical_all
        dense = (q.dense - dm) / ds if ds > 1e-12 else np.zeros_like(q.dense)
        lexical = (q.lexical - lm) / ls if ls > 1e-12 else np.zeros_like(q.lexical)
        return weight * dense + (1 - weight) * lexical
    return fuse(q.dense, q.lexical, weight, form, rrf_k=rrf_k)


def gold_ranks(questions: list[Question], configs: list[tuple[str, float, float]]) -> np.ndarray:
    """(configs, questions): 0-based rank of the first gold passage, or a large number."""
    ranks = np.full((len(configs), len(questions)), 10_000, dtype=np.int64)
    for j, q in enumerate(questions):
        if not q.gold.any():
            continue
        for i, (form, k, w, t) in enumerate(configs):
            order = np.argsort(-fused(q, form, k, w, t), kind="stable")
            ranks[i, j] = int(np.flatnonzero(q.gold[order])[0])
    return ranks


def best(ranks: np.ndarray, columns: np.ndarray, rows: np.ndarray | None = None) -> int:
    """The config (row index) with the best hit@1 over `columns`, ties broken by MRR."""
    sub = ranks[:, columns] if rows is None else ranks[np.ix_(rows, columns)]
    hit1 = (sub == 0).mean(axis=1)
    mrr = (1.0 / (1 + sub)).mean(axis=1)
    choice = int(np.lexsort((-mrr, -hit1))[0])
    return choice if rows is None else int(rows[choice])


def cross_validate(questions: list[Question], ranks: np.ndarray, configs, folds: int, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    articles = sorted({q.article for q in questions})
    by_article = np.array([q.article for q in questions])
    form_rows = families(configs)
    selections: dict[str, list[float]] = {"any form": [], **{f: [] for f in form_rows}}
    chosen: list[str] = []
    for repeat in range(repeats):
        shuffled = articles[:]
        random.Random(repeat).shuffle(shuffled)
        fold_of = {a: i % folds for i, a in enumerate(shuffled)}
        fold = np.array([fold_of[a] for a in by_article])
        hits: dict[str, int] = dict.fromkeys(selections, 0)
        for f in range(folds):
            train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            pick = best(ranks, train)
            chosen.append(describe(configs[pick]))
            hits["any form"] += int((ranks[pick, test] == 0).sum())
            for form, rows in form_rows.items():
                hits[form] += int((ranks[best(ranks, train, rows), test] == 0).sum())
        for name in selections:
            selections[name].append(hits[name] / len(questions))
    return {
        "cv_hit@1": {name: {"mean": statistics.mean(v), "runs": v} for name, v in selections.items()},
        "chosen_per_fold": {c: chosen.count(c) for c in dict.fromkeys(chosen)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, help="an .npz file keeping the model's vectors between runs")
    parser.add_argument("--no-titles", action="store_true", help="paragraphs without their Wikipedia titles")
    args = parser.parse_args()
    base = load_config()
    embedder = CachedEmbedder(load_embedder(base.model), args.cache) if args.cache else None
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "cmrc"
        corpus.mkdir()
        pairs = write_cmrc_corpus(corpus, titles=not args.no_titles)
        config = replace(
            base, corpus=replace(base.corpus, dir=corpus), index=replace(base.index, dir=Path(tmp) / "index")
        )
        build_index(config, embedder=embedder)
        questions = gather(config.index.dir, pairs, embedder)
    if embedder:
        embedder.save()
    configs = forms()
    ranks = gold_ranks(questions, configs)
    report = cross_validate(questions, ranks, configs, args.folds, args.repeats)
    everything = np.arange(len(questions))
    report["questions"] = len(questions)
    report["articles"] = len({q.article for q in questions})
    report["in_sample"] = {}
    for form, rows in families(configs).items():
        i = best(ranks, everything, rows)
        report["in_sample"][form] = {
            "chosen": describe(configs[i]),
            "hit@1": float((ranks[i] == 0).mean()),
            "hit@3": float((ranks[i] < 3).mean()),
        }
    for name, w in (("lexical only", 0.0), ("dense only", 1.0), ("zscore w=0.5 (old default)", 0.5)):
        i = configs.index(("zscore", 0.0, w, 0.0))
        report["in_sample"][name] = {"hit@1": float((ranks[i] == 0).mean()), "hit@3": float((ranks[i] < 3).mean())}
    # What config.toml holds: the title weight, the dense weight kept (`families`).
    pick = best(ranks, everything, list(families(configs).values())[-1])
    form, rrf_k, weight, title = configs[pick]
    report["choice"] = {"fusion": form, "rrf_k": rrf_k, "dense_weight": weight, "title_weight": title}
    report["missed at rank 1 by the choice"] = [q.text for q, r in zip(questions, ranks[pick], strict=True) if r]
    print(json.dumps(report, indent=1, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
