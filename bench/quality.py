"""Retrieval quality: hit@k on the seed dev questions and on the CMRC-2018 trial set,
dense-only vs lexical-only vs hybrid, plus how often questions are flagged unanswered.

    .venv/bin/python -m bench.quality [--json out.json] [--weights 0.3,0.5,0.7]

seed-dev: a hit is a retrieved passage containing every `all` string (or any `any` string).
article-heldout (bench/data/article-heldout.jsonl): more questions on the same article,
written by us in English and traditional Chinese without looking at retrieval results, judged
the same way; never used to choose a parameter, only to check that a change generalises.
CMRC: every paragraph is an article; a hit is a passage of the question's own paragraph.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from index.backends import open_backend
from index.build import build_index
from retrieval.fusion import METHODS
from retrieval.model import Confidence
from retrieval.search import Retriever
from settings import PROJECT_ROOT, Config, load_config

DATA = PROJECT_ROOT / "bench" / "data"
SEED = DATA / "seed-dev.jsonl"
HELDOUT = DATA / "article-heldout.jsonl"
CMRC = DATA / "cmrc2018_trial.json"
# Written to fit and check the "not covered" decision (bench/fit_decide.py), in batches: per
# batch, answerable questions on the article and questions near its topic that it does not
# answer. Each batch was written blind after the one before; a held-out batch is measured
# here and by fit_decide, never fitted on.
FITTED_BATCHES = (1, 2, 3, 4, 5)
HELD_OUT_BATCHES = (6, 7)


@dataclass(frozen=True)
class DecisionSet:
    """One file of labelled questions for the "not covered" decision."""

    path: Path
    answered: bool  # the article answers its questions
    fitted: bool  # fit_decide fits on it (else held out)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def key(self) -> str:
        """How reports name it: "answerable: <file>" or "not covered: <file>"."""
        return f"{'answerable' if self.answered else 'not covered'}: {self.path.name}"


DECISION_SETS = tuple(
    DecisionSet(DATA / f"{stem}{'' if batch == 1 else f'-{batch}'}.jsonl", answered, batch in FITTED_BATCHES)
    for batch in (*FITTED_BATCHES, *HELD_OUT_BATCHES)
    for stem, answered in (("article-answerable", True), ("near-topic", False))
)

# Generic questions the articles do not cover (not the hidden test set: ordinary chit-chat
# and other topics), to measure the `answered` flag from the other side.
OFF_TOPIC = [
    "今天北京天气怎么样？",
    "红烧肉怎么做？",
    "你好",
    "谢谢！",
    "What's the weather like in Paris tomorrow?",
    "How do I bake sourdough bread?",
    "Who won the 2018 World Cup?",
    "推荐一部好看的电影",
    "如何学习Python编程？",
    "Hello, how are you?",
    "明天上海会下雨吗",
    "How many calories are in an apple?",
    "世界上最高的山是哪座？",
    "What is the capital of Australia?",
    "股市今天涨了吗？",
    "周末去哪里玩比较好？",
]


# Questions near the article's subject that it does not answer (crypto, mining, exchanges,
# but not what the article reports): the hard side of the "not covered" decision. Older than
# bench/data/near-topic.jsonl and never used to fit the decision.
NEAR_TOPIC = [
    "What is the price of bitcoin today?",
    "How do I buy Ethereum?",
    "Who is the CEO of Binance?",
    "When was bitcoin invented?",
    "Is Dogecoin a good investment?",
    "What is the interest rate of the Federal Reserve?",
    "How much electricity does Bitcoin mining use worldwide?",
    "Did the United States ban crypto mining?",
    "Who founded Huobi?",
    "What is a blockchain?",
    "How many bitcoins are there?",
    "Where is Bitmain headquartered?",
    "比特币现在多少钱？",
    "以太坊是什么？",
    "币安的CEO是谁？",
    "美国禁止挖矿了吗？",
    "火币是谁创办的？",
    "今天是几号？",
    "北京今天天气怎么样？",
]


def seed_questions(path: Path = SEED) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def seed_hit(text: str, q: dict) -> bool:
    if "all" in q:
        return all(s in text for s in q["all"])
    return any(s in text for s in q.get("any", []))


def cmrc_paragraphs() -> list[tuple[str, str, dict]]:
    """(paragraph id, title, paragraph with its questions) of the CMRC trial set."""
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    return [(par["id"], doc.get("title", par["id"]), par) for doc in data for par in doc["paragraphs"]]


def write_cmrc_corpus(
    target: Path, exclude: frozenset[int] = frozenset(), *, titles: bool = True
) -> list[tuple[str, str]]:
    """One article per CMRC paragraph (but the paragraphs numbered in `exclude`), with its
    Wikipedia title unless `titles` is False (passages without titles, as many news feeds give
    them); returns (question, article id) pairs."""
    pairs = []
    for n, (pid, title, par) in enumerate(cmrc_paragraphs()):
        if n in exclude:
            continue
        name = f"{pid}.md"
        head = f'title: "{title.replace(chr(34), chr(39))}"\n' if titles else ""
        (target / name).write_text(f"---\n{head}source: CMRC-2018\n---\n{par['context']}\n", "utf-8")
        pairs.extend((qa["question"], name) for qa in par["qas"])
    return pairs


def evaluate(retriever: Retriever, questions: list[str], is_hit, ks=(1, 3, 5)) -> dict:  # type: ignore[no-untyped-def]
    answers = retriever.answer_many(questions, max(ks))
    result = {}
    for k in ks:
        result[f"hit@{k}"] = sum(any(is_hit(i, h) for h in a.hits[:k]) for i, a in enumerate(answers)) / len(answers)
    result["unanswered"] = sum(not a.answered for a in answers) / len(answers)
    return result


def by_language(retriever: Retriever, questions: list[dict]) -> dict:
    """hit@1 and hit@3 per question language (zh, en, zh-Hant)."""
    out = {}
    for lang in sorted({q["lang"] for q in questions}):
        subset = [q for q in questions if q["lang"] == lang]
        sub = evaluate(retriever, [q["q"] for q in subset], lambda j, h, subset=subset: seed_hit(h.text, subset[j]))
        out[f"hit@1_{lang}"] = sub["hit@1"]
        out[f"hit@3_{lang}"] = sub["hit@3"]
    return out


def flagged_by_language(retriever: Retriever, questions: list[dict]) -> dict[str, float]:
    """Share of `questions` flagged "not covered" ("all", and per language) and answered
    "unsure" ("unsure", and "unsure <lang>")."""
    answers = retriever.answer_many([q["q"] for q in questions], 3)

    def shares(subset: list) -> tuple[float, float]:  # type: ignore[type-arg]
        not_covered = sum(a.confidence == Confidence.NOT_COVERED for a in subset) / len(subset)
        return not_covered, sum(a.confidence == Confidence.UNSURE for a in subset) / len(subset)

    out: dict[str, float] = {"n": len(answers)}
    out["all"], out["unsure"] = shares(answers)
    for lang in sorted({q["lang"] for q in questions}):
        out[lang], out[f"unsure {lang}"] = shares(
            [a for a, q in zip(answers, questions, strict=True) if q["lang"] == lang]
        )
    return out


def _listed(questions: list[str]) -> list[dict]:
    return [{"q": q, "lang": "en" if q.isascii() else "zh"} for q in questions]


def not_covered(retriever: Retriever) -> dict[str, dict[str, float]]:
    """The "not covered" flag on the article: answerable sets (should be rare) and near-topic
    and off-topic sets (should be set)."""
    return {
        "answerable: seed-dev": flagged_by_language(retriever, seed_questions()),
        "answerable: held-out": flagged_by_language(retriever, seed_questions(HELDOUT)),
        **{labelled.key: flagged_by_language(retriever, seed_questions(labelled.path)) for labelled in DECISION_SETS},
        "not covered: NEAR_TOPIC": flagged_by_language(retriever, _listed(NEAR_TOPIC)),
        "not covered: OFF_TOPIC": flagged_by_language(retriever, _listed(OFF_TOPIC)),
    }


def with_weight(config: Config, weight: float) -> Config:
    """The config with this dense weight; one side alone (0 or 1) also without title evidence."""
    title = config.retrieval.title_weight if 0.0 < weight < 1.0 else 0.0
    return replace(config, retrieval=replace(config.retrieval, dense_weight=weight, title_weight=title))


def run(weights: tuple[float, ...] = (), fusion: str | None = None, cv: bool = True) -> dict:
    base = load_config()
    if fusion:
        base = replace(base, retrieval=replace(base.retrieval, fusion=fusion))
    hybrid = base.retrieval.dense_weight
    modes = {"dense": 1.0, "lexical": 0.0, "hybrid": hybrid}
    for w in weights:
        modes[f"w={w}"] = w
    report: dict = {"fusion": base.retrieval.fusion, "hybrid_weight": hybrid, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # seed-dev on the default corpus
        seed_cfg = replace(base, index=replace(base.index, dir=tmp_path / "seed-index"))
        t = time.perf_counter()
        build_index(seed_cfg)
        report["seed_build_s"] = round(time.perf_counter() - t, 2)
        seed = seed_questions()
        heldout = seed_questions(HELDOUT)
        seed_rows, heldout_rows = {}, {}
        for name, w in modes.items():
            r = Retriever.open(seed_cfg.index.dir, with_weight(seed_cfg, w))
            res = evaluate(r, [q["q"] for q in seed], lambda i, h: seed_hit(h.text, seed[i]))
            res.update(by_language(r, seed))
            off = r.answer_many(OFF_TOPIC, 3)
            res["offtopic_answered"] = sum(a.answered for a in off) / len(off)
            near = r.answer_many(NEAR_TOPIC, 3)
            res["neartopic_answered"] = sum(a.answered for a in near) / len(near)
            seed_rows[name] = res
            held = evaluate(r, [q["q"] for q in heldout], lambda i, h: seed_hit(h.text, heldout[i]))
            held.update(by_language(r, heldout))
            heldout_rows[name] = held
            if name == "hybrid":
                report["not_covered"] = not_covered(r)
            r.close()
        report["sets"]["seed-dev"] = seed_rows
        report["sets"]["article-heldout"] = heldout_rows
        # CMRC trial; and the same paragraphs without their titles (as many news feeds give
        # passages): fusion must not rank below its best single signal there either.
        for name, titles in (("cmrc-trial", True), ("cmrc-trial-no-titles", False)):
            corpus = tmp_path / name
            corpus.mkdir()
            pairs = write_cmrc_corpus(corpus, titles=titles)
            cfg = replace(
                base, corpus=replace(base.corpus, dir=corpus), index=replace(base.index, dir=tmp_path / f"{name}-index")
            )
            t = time.perf_counter()
            build_index(cfg)
            if titles:
                cmrc_cfg = cfg
                report["cmrc_build_s"] = round(time.perf_counter() - t, 2)
            rows = {}
            for mode, w in modes.items():
                r = Retriever.open(cfg.index.dir, with_weight(cfg, w))
                rows[mode] = evaluate(r, [q for q, _ in pairs], lambda i, h, pairs=pairs: h.article_id == pairs[i][1])
                r.close()
            report["sets"][name] = rows
        cmrc_rows = report["sets"]["cmrc-trial"]
        report["not_covered"]["answerable: CMRC own paragraph"] = {"all": cmrc_rows["hybrid"]["unanswered"]}
        report["backends"] = backends_agree(
            {
                "seed-dev": (seed_cfg, [q["q"] for q in seed], lambda i, h: seed_hit(h.text, seed[i])),
                "article-heldout": (seed_cfg, [q["q"] for q in heldout], lambda i, h: seed_hit(h.text, heldout[i])),
                "cmrc-trial": (cmrc_cfg, [q for q, _ in pairs], lambda i, h: h.article_id == pairs[i][1]),
            },
            tmp_path,
        )
        from bench import conversations  # bench/conversations.py: follow-ups in context vs alone (imports this module)

        r = Retriever.open(seed_cfg.index.dir, seed_cfg)
        report["conversations"] = conversations.run(r)
        r.close()
    if cv:
        from bench import fit_decide

        report["not_covered_cv"] = fit_decide.run()["cv_chosen"]
    return report


def backends_agree(sets: dict, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    """Hybrid hit@k of each set on both backends: the faiss indexes built above, then the same
    catalogs synced into Milvus Lite (`[index] backend = "milvus"`: no re-embedding)."""
    out: dict = {}
    for name, (config, questions, is_hit) in sets.items():
        row = {}
        for kind in ("faiss", "milvus"):
            collection = "quality_" + config.index.dir.name.replace("-", "_")  # one per catalog
            index = replace(
                config.index, backend=kind, milvus_uri=str(tmp_path / "milvus.db"), milvus_collection=collection
            )
            on = replace(config, index=index)
            with open_backend(on) as backend:
                backend.build()
            r = Retriever.open(on.index.dir, on)
            row[kind] = evaluate(r, questions, is_hit)
            r.close()
        row["hit@1 difference"] = abs(row["milvus"]["hit@1"] - row["faiss"]["hit@1"])
        out[name] = row
    return out


def print_table(report: dict) -> None:
    print(f"fusion={report['fusion']} hybrid dense_weight={report['hybrid_weight']}")
    for set_name, rows in report["sets"].items():
        print(f"\n{set_name}")
        cols = sorted({c for row in rows.values() for c in row})
        print(f"{'mode':<10}" + "".join(f"{c:>18}" for c in cols))
        for mode, row in rows.items():
            print(f"{mode:<10}" + "".join(f"{row.get(c, float('nan')):>18.3f}" for c in cols))
    if "backends" in report:
        print("\nhybrid hit@1 by backend: faiss | Milvus Lite (target: within 0.01)")
        for set_name, row in report["backends"].items():
            print(f"  {set_name:<18} {row['faiss']['hit@1']:.3f} | {row['milvus']['hit@1']:.3f}")
    if "conversations" in report:
        from bench import conversations

        conversations.print_report(report["conversations"])


def print_not_covered(report: dict) -> None:
    print("\nshare flagged not covered (hybrid); language: zh, zh-Hant, en")
    for name, shares in report.get("not_covered", {}).items():
        print(f"  {name:<48}" + "  ".join(f"{k} {v:.3f}" if k != "n" else f"n {v}" for k, v in shares.items()))
    if "not_covered_cv" in report:
        print("cross-validated (bench/fit_decide.py: folds of articles held out):")
        for name, shares in report["not_covered_cv"].items():
            print(f"  {name:<48}" + "  ".join(f"{k} {v}" for k, v in shares.items() if not k.startswith("n_")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--weights", default="", help="extra dense weights to compare, e.g. 0.3,0.7")
    parser.add_argument("--fusion", choices=METHODS)
    parser.add_argument("--no-cv", action="store_true", help="skip the decision's cross-validation (~4 min)")
    args = parser.parse_args()
    weights = tuple(float(w) for w in args.weights.split(",") if w)
    report = run(weights, args.fusion, cv=not args.no_cv)
    print_table(report)
    print_not_covered(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
