"""Score fusion: put BM25 and cosine on one scale and combine them.

Raw BM25 is unbounded and cosine lives in [-1, 1]. Three forms, chosen (with the dense
weight) by cross-validation over CMRC-2018 split by article (`bench/fit_fusion.py`):

- `zscore` / `minmax`: each side normalised over the candidate set, then a weighted sum, so
  `dense_weight` means the same thing for every question. A side with no spread (e.g. no
  query term matched, as for an English question over Chinese text) contributes nothing,
  so the other side decides alone.
- `rrf`: reciprocal-rank fusion, `w / (rrf_k + dense rank) + (1 - w) / (rrf_k + BM25 rank)`;
  only the order within each side counts, not the shape of its score distribution. A
  candidate no query term matched gets nothing from the BM25 side.

Title evidence (`title_match`) is added on top, `title_weight` times the share of the
question's terms that the candidate's article title holds: a paragraph often leaves out the
subject its title names (the comic, the school, the species the question asks about), and
among many articles that tells them apart; within one article it changes nothing. Its weight
is chosen by the same cross-validation.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from index.text import normalize, terms

METHODS = ("zscore", "minmax", "rrf")


def normalise(scores: np.ndarray, method: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    if method == "minmax":
        low, high = float(scores.min()), float(scores.max())
        return np.zeros_like(scores) if high - low < 1e-12 else (scores - low) / (high - low)
    if method == "zscore":
        std = float(scores.std())
        return np.zeros_like(scores) if std < 1e-12 else (scores - scores.mean()) / std
    raise ValueError(f"unknown normalisation {method!r}")


def reciprocal_ranks(scores: np.ndarray, rrf_k: float) -> np.ndarray:
    """1 / (rrf_k + rank) per candidate, rank 1 = highest score; equal scores share the best
    of their ranks, so a side with no spread favours no candidate."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.searchsorted(np.sort(-scores), -scores, side="left") + 1.0
    return 1.0 / (rrf_k + ranks)


def fuse(
    dense: np.ndarray, lexical: np.ndarray, dense_weight: float, method: str = "zscore", rrf_k: float = 60.0
) -> np.ndarray:
    """Fused scores for aligned candidate arrays (higher is better)."""
    if method == "rrf":
        lexical = np.asarray(lexical, dtype=np.float64)
        lexical_part = np.where(lexical > 0.0, reciprocal_ranks(lexical, rrf_k), 0.0)
        return dense_weight * reciprocal_ranks(dense, rrf_k) + (1.0 - dense_weight) * lexical_part
    return dense_weight * normalise(dense, method) + (1.0 - dense_weight) * normalise(lexical, method)


def title_match(question_terms: Sequence[str], idf: Mapping[str, float], title: str) -> float:
    """IDF-weighted share of `question_terms` that `title` holds, in [0, 1]: a rare term (a
    name) counts for much, a common one for little. The same for every passage of an article,
    so it only ranks articles against each other. Chinese terms also count as substrings (the
    segmenter may cut a short title differently from a question)."""
    return title_matches(question_terms, idf, [title])[0]


def title_matches(question_terms: Sequence[str], idf: Mapping[str, float], titles: Sequence[str]) -> list[float]:
    """`title_match` of each of `titles` (distinct, as a question's candidates have them). Each
    term is looked for once in all the titles' normalised texts joined, not once per title:
    a question's ~150 candidate articles cost ~50 µs, not ~1 ms."""
    total = sum(idf[t] for t in question_terms)
    if not total or not titles:
        return [0.0] * len(titles)
    texts = [_normalized(title) for title in titles]
    # "\x00" never occurs in a term, so a match never straddles two titles.
    joined = "\x00".join(texts)
    starts = list(itertools.accumulate((len(text) + 1 for text in texts[:-1]), initial=0))
    held: dict[int, set[str]] = {}
    for term in question_terms:
        at = joined.find(term)
        while at >= 0:
            position = bisect.bisect_right(starts, at) - 1
            # An English term counts only as a whole word of the title (a term of its own;
            # every term of a title is a substring of its normalised text).
            if not term.isascii() or term in _words(titles[position]):
                held.setdefault(position, set()).add(term)
            at = joined.find(term, at + 1)
    scores = [0.0] * len(titles)
    for position, found in held.items():
        scores[position] = sum(idf[t] for t in question_terms if t in found) / total
    return scores


# A title's normalised text and its terms are the same for every question: computed once. The
# terms (jieba, ~0.5 ms a title) only for a title an English term occurs in.
@functools.lru_cache(maxsize=100_000)
def _normalized(title: str) -> str:
    return normalize(title)


@functools.lru_cache(maxsize=100_000)
def _words(title: str) -> frozenset[str]:
    return frozenset(terms(title))
