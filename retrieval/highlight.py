"""Pick the sentence of a passage that answers the question.

A passage found by the whole question usually has one sentence that carries the answer.
Plain term overlap prefers the sentence that repeats the question's topic ("断卡行动…") over
the one holding the answer ("…打掉违法犯罪团伙170余个"), so two cues from classic question
answering refine it, both read from the analysed question (`retrieval.question`):

- focus: the words next to the question word (多少, 什么时候, how many, …) weigh more than
  the topic words far from it;
- answer kind: a question asking a count, an amount, a date or a span of time prefers a
  sentence with such an expression near a focus word.

A passage sharing no term with the question (often so for an English one) is left undecided
here; `by_embedding` picks its sentence closest to the question in the sentence model's space,
for a whole batch of questions in one model call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from retrieval.question import Question

_NEAR = 12  # characters between a focus word and an answer-kind expression


def _kind_bonus(lowered: str, question: Question) -> float:
    kind = question.kind
    if kind is None or not kind.crisp:
        return 0.0
    matches = [m.start() for m in kind.looks.finditer(lowered)]
    if not matches:
        return 0.0
    for term in question.focus.terms:
        start = lowered.find(term)
        while start >= 0:
            if any(abs(m - start) <= _NEAR + len(term) for m in matches):
                return 0.5
            start = lowered.find(term, start + 1)
    return 0.15


@lru_cache(maxsize=4096)
def _word(term: str) -> re.Pattern[str] | None:
    """How `term` is found in a normalised sentence: an English term as a whole word (this
    pattern), a Chinese one as a substring (None)."""
    return re.compile(rf"(?<![a-z0-9]){re.escape(term)}(?![a-z0-9])") if term.isascii() else None


def sentence_scores(question: Question, normalized: Sequence[str]) -> list[float]:
    """Overlap (focus- and IDF-weighted, in [0, 1]) plus an answer-kind bonus, per sentence.
    `normalized` holds `index.text.normalize` of each sentence (the index stores it)."""
    weights = question.focus.weights
    weight = {t: question.idf.get(t, 0.0) * weights.get(t, 1.0) for t in question.terms}
    total = sum(weight.values()) or 1.0
    checks = [(t, w, _word(t)) for t, w in weight.items()]
    scores = []
    for lowered in normalized:
        # Substring matching, not re-segmentation: jieba may cut the same word differently
        # in another context ("打掉" vs "共打/掉").
        overlap = sum(w for t, w, word in checks if (t in lowered if word is None else word.search(lowered))) / total
        scores.append(overlap + (_kind_bonus(lowered, question) if overlap > 0 else 0.0))
    return scores


@dataclass(frozen=True)
class Choice:
    """The sentence chosen in one passage (offsets into its text); `undecided` when no sentence
    shares a term with the question and the passage has several: `by_embedding` decides."""

    span: tuple[int, int]
    undecided: bool


def best_sentence(question: Question, spans: Sequence[tuple[int, int]], normalized: Sequence[str]) -> Choice:
    """The passage's sentence (`spans`, with their normalised texts) that best answers the question."""
    scores = sentence_scores(question, normalized)
    best = int(np.argmax(scores))
    return Choice(spans[best], len(spans) > 1 and scores[best] == 0.0)


@dataclass(frozen=True)
class Undecided:
    """A passage whose sentence only sentence embeddings can pick."""

    passage_id: int
    text: str
    spans: list[tuple[int, int]]
    query_vector: np.ndarray


def by_embedding(
    pending: Sequence[Undecided],
    sentence_vectors: Callable[[dict[int, tuple[str, list[tuple[int, int]]]]], dict[int, np.ndarray]],
) -> list[tuple[int, int]]:
    """Each pending passage's sentence closest to its question: `sentence_vectors` embeds, in
    one model call, the sentences of the passages not embedded before."""
    vectors = sentence_vectors({item.passage_id: (item.text, item.spans) for item in pending})
    return [item.spans[int(np.argmax(vectors[item.passage_id] @ item.query_vector))] for item in pending]
