"""Pick the sentence of a passage that answers the question.

A passage found by the whole question usually has one sentence that carries the answer.
Plain term overlap prefers the sentence that repeats the question's topic ("断卡行动…") over
the one holding the answer ("…打掉违法犯罪团伙170余个"), so two cues from classic
question answering refine it:

- focus: the words next to the question word (多少, 什么时候, how many, …) weigh more than
  the topic words far from it;
- answer type: a quantity question prefers a sentence with a number near a focus word, a
  time question one with a date or time near a focus word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from index.text import STOP_WORDS, cut, normalize

_QUESTION_WORDS = frozenset(
    "多少 几 几个 几家 几名 什么 哪 哪些 哪个 哪里 哪儿 哪家 谁 何时 什么时候 为什么 为何 "
    "怎么 怎样 如何 吗 呢 是否 多久 多大 多长 what which who whom whose when where why how many much".split()
)
_QUANTITY = re.compile(r"多少|几(?:个|家|名|位|次|项|种|万|亿)?|how many|how much|数量|规模|比例")
_TIME = re.compile(r"什么时候|何时|哪天|哪一天|几月|几号|几点|日期|时间|期限|截止|when|what time|deadline|date")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*\s*(?:%|％)?|[一二三四五六七八九十百千万亿两]{1,6}(?=[个名家位次项种余多万亿%])")
_DATE = re.compile(r"\d{1,4}\s*(?:年|月|日|号|时|点|分)|[上中下]旬|昨天|今天|明天|此前|之前|截至|\d{4}-\d{2}-\d{2}")
_NEAR = 12  # characters between a focus word and an answer-type match


@dataclass(frozen=True)
class QuestionCues:
    weights: dict[str, float]
    focus: frozenset[str]
    answer_type: re.Pattern[str] | None


# A question word used as a determiner: the word after it names the kind of answer ("哪个国家",
# "什么职务", "which country"), which the answer itself instantiates.
_DETERMINERS = re.compile(r"哪(?:个|些|几个|几|家|位|种|类|一个|一家|一位|一种)?|什么|which|what")
# Measure words between the determiner and its noun ("哪一家公司", "哪几个省份").
_MEASURES = re.compile(r"[一几]?(?:个|家|位|种|类|项|座|所)")


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    """The jieba words of a normalised question, blanks dropped: what `question_cues` and
    `kind_nouns` both read a question's structure from."""
    return tuple(t.strip() for t in cut(text) if t.strip())


@lru_cache(maxsize=4096)
def kind_nouns(question: str) -> frozenset[str]:
    """Words of `question` that name the kind of answer it asks for: the content word right
    after a determining question word ("国家" in "在哪个国家", "country" in "which country").
    A passage naming Kazakhstan answers "which country" without the word "country"."""
    tokens = _tokens(normalize(question))
    found: set[str] = set()
    for i, token in enumerate(tokens[:-1]):
        if not _DETERMINERS.fullmatch(token):
            continue
        following = tokens[i + 1 :]
        if following and _MEASURES.fullmatch(following[0]) and len(following) > 1:
            following = following[1:]
        noun = following[0]
        content = noun.isalnum() and noun not in STOP_WORDS and noun not in _QUESTION_WORDS
        if content and not _QUANTITY.fullmatch(noun):
            found.add(noun)
    return frozenset(found)


@lru_cache(maxsize=4096)
def question_cues(question: str, query_terms: tuple[str, ...]) -> QuestionCues:
    """Focus weights for `query_terms` and the expected answer type of `question`."""
    text = normalize(question)
    tokens = _tokens(text)
    wh_positions = [i for i, t in enumerate(tokens) if t in _QUESTION_WORDS or _QUANTITY.fullmatch(t)]
    weights: dict[str, float] = {}
    focus: set[str] = set()
    for term in query_terms:
        positions = [i for i, t in enumerate(tokens) if term in t]
        if not positions or not wh_positions:
            weights[term] = 1.0
            continue
        content = [i for i, t in enumerate(tokens) if t not in STOP_WORDS and t not in _QUESTION_WORDS]
        # Distance counted in content words, so particles (了, 的, 是) do not push a word away.
        distance = min(sum(1 for c in content if min(p, w) < c < max(p, w)) for p in positions for w in wh_positions)
        weights[term] = 1.0 + 1.0 / (1.0 + distance)
        if distance == 0:
            focus.add(term)
    answer_type = None
    if _TIME.search(text):
        answer_type = _DATE
    elif _QUANTITY.search(text):
        answer_type = _NUMBER
    return QuestionCues(weights, frozenset(focus), answer_type)


def _type_bonus(sentence: str, lowered: str, cues: QuestionCues) -> float:
    if cues.answer_type is None:
        return 0.0
    matches = [m.start() for m in cues.answer_type.finditer(sentence)]
    if not matches:
        return 0.0
    for term in cues.focus:
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


def sentence_scores(
    question: str,
    sentences: Sequence[str],
    query_terms: Sequence[str],
    idf: dict[str, float],
    normalized: Sequence[str],
) -> list[float]:
    """Overlap (focus- and IDF-weighted, in [0, 1]) plus an answer-type bonus, per sentence.
    `normalized` holds `index.text.normalize` of each sentence (the index stores it)."""
    cues = question_cues(question, tuple(query_terms))
    weight = {t: idf.get(t, 0.0) * cues.weights.get(t, 1.0) for t in query_terms}
    total = sum(weight.values()) or 1.0
    checks = [(t, w, _word(t)) for t, w in weight.items()]
    scores = []
    for sentence, lowered in zip(sentences, normalized, strict=True):
        # Substring matching, not re-segmentation: jieba may cut the same word differently
        # in another context ("打掉" vs "共打/掉").
        overlap = sum(w for t, w, word in checks if (t in lowered if word is None else word.search(lowered))) / total
        scores.append(overlap + (_type_bonus(sentence, lowered, cues) if overlap > 0 else 0.0))
    return scores
