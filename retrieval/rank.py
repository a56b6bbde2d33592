"""Rank passages for one question: candidates from both sides, fused, dated, collapsed.

Lexical: BM25 over the same jieba/OpenCC terms the index stored; dense: cosine over
normalised vectors. The best `candidates` of each side are fused (`retrieval.fusion`), the
article titles and the dates the question names add their evidence (`retrieval.dates`), and
republished copies collapse into one distinct result each (`retrieval.collapse`). This module
knows no SQL, FAISS or Milvus: only ranking policy over an `IndexReader`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index.backends import PassageRow
from index.text import normalize
from retrieval import collapse, dates
from retrieval.fusion import fuse, title_matches
from retrieval.model import Also
from retrieval.question import Question, is_question_word
from retrieval.served import Served
from settings import RetrievalConfig


@dataclass(frozen=True)
class Candidates:
    """The passages fusion ranks for a question: ids, their cosine and BM25 scores (BM25 0
    where no term matched), and their article title's share of the question (`title_match`)."""

    question: Question
    query_vector: np.ndarray
    ids: list[int]
    dense: np.ndarray
    lexical: np.ndarray
    title: np.ndarray


def candidates(
    served: Served, question: Question, query_vector: np.ndarray, nearest: tuple[np.ndarray, np.ndarray], limit: int
) -> Candidates:
    """The best `limit` passages of each side, FAISS's (`nearest`: similarities, ids) first."""
    reader = served.reader
    lexical = reader.lexical(list(question.terms), limit)
    sims, ids = nearest
    dense = {i: s for i, s in zip(ids.tolist(), sims.tolist(), strict=True) if i >= 0}
    candidate_ids = list(dict.fromkeys([*dense, *lexical]))
    # FAISS ids are this version's passages and come with their cosine: only lexical-only
    # candidates need their embedding read (~0.5 ms per 100 at 1M passages).
    dense.update(reader.cosines([i for i in candidate_ids if i not in dense], query_vector))
    candidate_ids = [i for i in candidate_ids if i in dense]
    return Candidates(
        question=question,
        query_vector=query_vector,
        ids=candidate_ids,
        dense=np.array([dense[i] for i in candidate_ids]),
        lexical=np.array([lexical.get(i, 0.0) for i in candidate_ids]),
        title=_title_scores(served, candidate_ids, question),
    )


def _title_scores(served: Served, candidate_ids: Sequence[int], question: Question) -> np.ndarray:
    """`fusion.title_match` of each candidate's article title (what `title_weight` weighs)."""
    if not candidate_ids:
        return np.zeros(0)
    article_of = served.article_of(candidate_ids)
    articles = [article_of.get(i, "") for i in candidate_ids]
    distinct = list(dict.fromkeys(articles))
    titles = served.titles
    matches = title_matches(list(question.terms), question.idf, [titles.get(a, "") for a in distinct])
    match = dict(zip(distinct, matches, strict=True))
    return np.array([match[a] for a in articles])


def fused_scores(served: Served, found: Candidates, config: RetrievalConfig) -> np.ndarray:
    """One score per candidate: the fused cosine and BM25, plus title evidence, the
    preferences for the dates the question names, and for a question asking what a term means,
    the passages that define it."""
    fused = fuse(found.dense, found.lexical, config.dense_weight, config.fusion, rrf_k=config.rrf_k)
    if config.title_weight:
        fused = fused + config.title_weight * found.title
    fused = dates.adjust(found.question.dates, served.reference_date, found.ids, fused, served.date_rows)
    return _prefer_definitions(served, found, fused)


# Definition bonus, in fused-score units (z-scores), for candidates within `_MARGIN` of the best
# among the best `_RELEVANT` (as for dates: it never lifts an unrelated passage).
DEFINITION_BONUS = 1.0
_MARGIN = 2.0
_RELEVANT = 30
# After the defined term: a closing quote, then "即", "是指", "指", "（…）"…; or "所谓" before it.
_DEFINES = r"[”\"」』’']?\s*(?:即|是指|指的是|指|意思是|意为|也就是|[（(]|,? which means|\s+means|\s+stands for)"


def _prefer_definitions(served: Served, found: Candidates, fused: np.ndarray) -> np.ndarray:
    """For a question asking what a term means, a bonus to the relevant passages that define one
    of its terms ("OTC即Over-the-Counter，指…"): the paragraph that explains a word, not the one
    that uses it most."""
    question = found.question
    if question.kind is None or question.kind.name != "definition" or not len(fused):
        return fused
    topic = [t for t in question.terms if question.df.get(t, 0) > 0 and not is_question_word(t)]
    if not topic:
        return fused
    pattern = re.compile(
        "|".join(rf"{re.escape(t)}{_DEFINES}|所谓[“\"「]?{re.escape(t)}" for t in sorted(topic, key=len, reverse=True))
    )
    relevant = np.argsort(-fused, kind="stable")[:_RELEVANT]
    relevant = relevant[fused[relevant] >= fused.max() - _MARGIN]
    texts = served.date_rows([found.ids[i] for i in relevant])
    bonus = np.zeros_like(fused)
    for position in relevant:
        text, _ = texts.get(found.ids[position], ("", ""))
        if pattern.search(normalize(text)):
            bonus[position] = DEFINITION_BONUS
    return fused + bonus


@dataclass(frozen=True)
class Ranked:
    """One distinct result: the passage quoted, where its rank came from (`position` in the
    candidates), and the other copies it stands for."""

    row: PassageRow
    position: int
    also: tuple[Also, ...]


def ranked(served: Served, found: Candidates, scores: np.ndarray, k: int) -> tuple[list[Ranked], bool]:
    """The `k` best distinct results, and whether the store changed under the question.

    A live store (Milvus) may replace an article between the searches and this read: a found
    passage deleted since, or an old and a new version of one paragraph both found (one search
    before the swap, one after). A version of the SQLite backend never changes, so neither
    happens there. Results whose passages are gone are left out."""
    reader = served.reader
    order = [found.ids[position] for position in np.argsort(-scores, kind="stable").tolist()]
    # `picks` hold the members that earned the ranks; `quote` chooses the version quoted (the
    # earliest, unless a later copy holds more of the question).
    picks = collapse.distinct(reader.copies, order, k)
    position_of = {passage_id: position for position, passage_id in enumerate(found.ids)}
    rows = served.rows([i for p in picks for i in p.candidates()])
    kept = [p for p in picks if all(i in rows for i in p.candidates())]
    quoted = [p.quote({i: rows[i].terms for i in p.candidates()}, list(found.question.terms)) for p in kept]
    results = [
        Ranked(rows[passage_id], position_of[p.ranked_id], also)
        for p, (passage_id, also) in zip(kept, quoted, strict=True)
    ]
    paragraphs = {(r.row.article_id, r.row.ordinal) for r in results}
    changed = len(kept) < len(picks) or len(paragraphs) < len(results)
    return results, changed
