"""Every answer of the bench's question sets, dumped and compared: how a refactor shows that
it changed nothing, or names what it changed.

    .venv/bin/python -m bench.answers dump OUT.jsonl        # the default article and CMRC trial
    .venv/bin/python -m bench.answers compare BEFORE.jsonl AFTER.jsonl [--show N]

A dump holds, per question of seed-dev, held-out, the "not covered" batches, the NEAR_TOPIC
and OFF_TOPIC lists, the conversations (through the one follow-up path, as the bot asks them)
and the CMRC trial: the answer as `python -m retrieval --json` prints it, with the decision's
features. `compare` counts, per set, the answers whose passages, highlights, grade or features
differ, and how often the highlighted sentence holds the gold string before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import quality
from bench.conversations import load as load_conversations
from index.build import build_index
from retrieval.conversation import answer_conversations
from retrieval.model import Answer
from retrieval.search import Retriever
from settings import load_config

K = 5


def _record(set_name: str, i: int, question: str, answer: Answer, **extra: Any) -> str:
    data = answer.to_dict() | {"features": {k: round(v, 6) for k, v in sorted(answer.features.items())}}
    return json.dumps({"set": set_name, "i": i, "q": question, "answer": data | extra}, ensure_ascii=False) + "\n"


def article_sets() -> dict[str, list[str]]:
    sets = {
        "seed-dev": [q["q"] for q in quality.seed_questions()],
        "heldout": [q["q"] for q in quality.seed_questions(quality.HELDOUT)],
        "NEAR_TOPIC": list(quality.NEAR_TOPIC),
        "OFF_TOPIC": list(quality.OFF_TOPIC),
    }
    for labelled in quality.DECISION_SETS:
        sets[labelled.path.name] = [q["q"] for q in quality.seed_questions(labelled.path)]
    return sets


def dump(target: Path) -> None:
    base = load_config()
    with tempfile.TemporaryDirectory() as tmp, target.open("w", encoding="utf-8") as out:
        work = Path(tmp)
        config = replace(base, index=replace(base.index, dir=work / "article-index"))
        build_index(config)
        retriever = Retriever.open(config.index.dir, config)
        for name, questions in article_sets().items():
            for i, (q, a) in enumerate(zip(questions, retriever.answer_many(questions, K), strict=True)):
                out.write(_record(name, i, q, a))
        conversations = load_conversations()
        answered = answer_conversations(
            retriever.answer_many, [((), [t["q"] for t in c["turns"]]) for c in conversations], K
        )
        for n, (conversation, turns) in enumerate(zip(conversations, answered, strict=True)):
            for i, (turn, (answer, rewritten)) in enumerate(zip(conversation["turns"], turns, strict=True)):
                out.write(_record("conversations", n * 10 + i, turn["q"], answer, searched=rewritten.text))
        retriever.close()
        corpus = work / "cmrc"
        corpus.mkdir()
        pairs = quality.write_cmrc_corpus(corpus)
        config = replace(base, corpus=replace(base.corpus, dir=corpus), index=replace(base.index, dir=work / "cmrc"))
        build_index(config)
        retriever = Retriever.open(config.index.dir, config)
        questions = [q for q, _ in pairs]
        for i, (q, a) in enumerate(zip(questions, retriever.answer_many(questions, K), strict=True)):
            out.write(_record("cmrc", i, q, a))
        retriever.close()


def _load(path: Path) -> dict[tuple[str, int], dict]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {(row["set"], row["i"]): row for row in rows}


def _gold() -> dict[tuple[str, int], list[str]]:
    """Gold strings per (set, question): the article's answerable sets and CMRC's answers."""
    gold: dict[tuple[str, int], list[str]] = {}
    files = [("seed-dev", quality.SEED), ("heldout", quality.HELDOUT)]
    files += [(s.path.name, s.path) for s in quality.DECISION_SETS if s.answered]
    for name, path in files:
        for i, q in enumerate(quality.seed_questions(path)):
            gold[(name, i)] = q.get("all") or q.get("any") or []
    answers = [[a["text"] for a in qa["answers"]] for _, _, par in quality.cmrc_paragraphs() for qa in par["qas"]]
    gold.update({("cmrc", i): texts for i, texts in enumerate(answers)})
    return gold


def _highlight_holds(answer: dict, gold: list[str]) -> bool | None:
    """Whether the first hit holding a gold string highlights a sentence holding one."""
    for hit in answer["results"]:
        if any(g in hit["text"] for g in gold):
            return any(g in hit["text"][hit["highlight_start"] : hit["highlight_end"]] for g in gold)
    return None


def _differences(before: dict, after: dict) -> list[str]:
    kinds = []
    if before.get("confidence", before["answered"]) != after.get("confidence", after["answered"]):
        kinds.append("grade")
    if [h["passage_id"] for h in before["results"]] != [h["passage_id"] for h in after["results"]]:
        kinds.append("passages")
    elif [(h["highlight_start"], h["highlight_end"]) for h in before["results"]] != [
        (h["highlight_start"], h["highlight_end"]) for h in after["results"]
    ]:
        kinds.append("highlight")
    if before.get("searched") != after.get("searched"):
        kinds.append("follow-up reading")
    if before["features"] != after["features"]:
        kinds.append("features")
    return kinds


def compare(before_path: Path, after_path: Path, show: int = 0) -> dict[str, Any]:
    before, after = _load(before_path), _load(after_path)
    gold = _gold()
    changed: dict[str, Counter] = defaultdict(Counter)
    highlights: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    examples: list[tuple[str, str, list[str]]] = []
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            changed[key[0]]["missing"] += 1
            continue
        kinds = _differences(old["answer"], new["answer"])
        changed[key[0]].update(kinds or ["same"])
        if kinds:
            examples.append((key[0], old["q"], kinds))
        if key in gold:
            held = [_highlight_holds(row["answer"], gold[key]) for row in (old, new)]
            if None not in held:
                counts = highlights[key[0]]
                counts[0] += held[0]  # type: ignore[operator]
                counts[1] += held[1]  # type: ignore[operator]
                counts[2] += 1
    for name in sorted(changed):
        print(f"{name:<32} " + ", ".join(f"{k} {v}" for k, v in sorted(changed[name].items())))
    print("\nhighlighted sentence holds the gold string, before -> after")
    for name, (old, new, n) in sorted(highlights.items()):
        print(f"  {name:<30} {old}/{n} -> {new}/{n}")
    for name, question, kinds in examples[:show]:
        print(f"{name}: {question} — {', '.join(kinds)}")
    return {"changed": {k: dict(v) for k, v in changed.items()}, "highlights": dict(highlights)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dump_parser = commands.add_parser("dump", help="answer every question set and write the answers")
    dump_parser.add_argument("out", type=Path)
    compare_parser = commands.add_parser("compare", help="what differs between two dumps")
    compare_parser.add_argument("before", type=Path)
    compare_parser.add_argument("after", type=Path)
    compare_parser.add_argument("--show", type=int, default=0, help="list this many changed questions")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out)
    else:
        compare(args.before, args.after, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
