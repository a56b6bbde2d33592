"""Synthetic benchmark data: a news-like corpus stitched from CMRC-2018 trial sentences, and
random unit vectors for FAISS at sizes no corpus here reaches.

    .venv/bin/python -m bench.synth DIR [--passages 6000] [--seed 2018]

Articles: YAML front matter (title from a CMRC document, source, date), an occasional
`##` section heading, paragraphs of 1-5 sentences drawn with a fixed seed. Sentences are
reused (the trial set has ~3,000), so the corpus is deterministic for a given seed and size.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMRC = ROOT / "bench" / "data" / "cmrc2018_trial.json"
_SENTENCE_END = re.compile(r"(?<=[。！？])")
# Paragraphs stay below the splitter's max_chars (360), so one paragraph is about one passage.
_MAX_PARAGRAPH = 330


def material() -> tuple[list[str], list[str]]:
    """The CMRC-2018 trial's titles and its sentences of six characters or more: what synthetic
    articles are written from."""
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    titles = [str(doc.get("title") or doc["paragraphs"][0]["id"]) for doc in data]
    sentences = [
        s.strip()
        for doc in data
        for par in doc["paragraphs"]
        for s in _SENTENCE_END.split(par["context"])
        if len(s.strip()) >= 6
    ]
    return titles, sentences


def _paragraph(rng: random.Random, sentences: list[str]) -> str:
    text = ""
    for _ in range(rng.randint(1, 5)):
        sentence = rng.choice(sentences)
        if text and len(text) + len(sentence) > _MAX_PARAGRAPH:
            break
        text += sentence[:_MAX_PARAGRAPH]
    return text


def article_text(rng: random.Random, titles: list[str], sentences: list[str], number: int, paragraphs: int) -> str:
    day = date(2020, 1, 1) + timedelta(days=number % 1500)
    lines = [
        "---",
        f"title: {json.dumps(rng.choice(titles) + f' ({number})', ensure_ascii=False)}",
        "source: 合成新闻",
        f"date: {day.isoformat()}",
        "lang: zh",
        "---",
        "",
    ]
    for i in range(paragraphs):
        if i and rng.random() < 0.12:
            lines += [f"## {rng.choice(titles)}", ""]
        lines += [_paragraph(rng, sentences), ""]
    return "\n".join(lines)


def make_corpus(target: Path, n_passages: int = 6000, seed: int = 2018, per_article: int = 12) -> int:
    """Write articles of ~`per_article` paragraphs until the splitter cuts >= `n_passages`
    passages from them; returns the article count."""
    from corpus import read_article, split_article

    titles, sentences = material()
    rng = random.Random(seed)
    target.mkdir(parents=True, exist_ok=True)
    passages = number = 0
    while passages < n_passages:
        paragraphs = rng.randint(per_article // 2, per_article * 3 // 2)
        path = target / f"a{number:05d}.md"
        path.write_text(article_text(rng, titles, sentences, number, paragraphs), encoding="utf-8")
        passages += len(split_article(read_article(path, target)))
        number += 1
    return number


def add_article(target: Path, seed: int = 7, paragraphs: int = 12) -> Path:
    """One more article (for the incremental rebuild benchmark)."""
    titles, sentences = material()
    path = target / "zz-added.md"
    path.write_text(article_text(random.Random(seed), titles, sentences, 99_999, paragraphs), encoding="utf-8")
    return path


def corpus_passages(corpus_dir: Path, max_chars: int = 360, min_chars: int = 24) -> list[str]:
    """The passage texts a build of `corpus_dir` embeds (same reader and splitter)."""
    from corpus import load_corpus, split_article

    articles, _ = load_corpus(corpus_dir)
    return [p.text for a in articles for p in split_article(a, max_chars, min_chars)]


def random_unit_vectors(n: int, dim: int = 512, seed: int = 0, clusters: int = 0):  # type: ignore[no-untyped-def]
    """`n` L2-normalised float32 rows. With `clusters`, points scatter around that many random
    centres (closer to real embeddings, which are far from uniform on the sphere)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        out = np.empty((n, dim), dtype=np.float32)
        step = 100_000
        for start in range(0, n, step):
            m = min(step, n - start)
            out[start : start + m] = centres[rng.integers(0, clusters, m)]
            out[start : start + m] += 0.9 * rng.standard_normal((m, dim), dtype=np.float32)
    else:
        out = rng.standard_normal((n, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--passages", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=2018)
    args = parser.parse_args()
    files = make_corpus(args.dir, args.passages, args.seed)
    print(f"{files} articles, {len(corpus_passages(args.dir))} passages in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
