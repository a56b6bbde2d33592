"""Whether the articles answer a question: the "not covered" decision (policy only).

A passage on the question's subject is not yet an answer. A question near the articles'
topic ("火币有多少用户？", "比特大陆的市值是多少？", "Who is the CEO of OKEx?") finds a
paragraph that shares its words and reaches the cosine of a real answer, but that paragraph
lacks what the question asks for. So the decision weighs evidence that carries over from one
corpus to another, each feature in [0, 1] and larger when the question looks answered:

- `dense`: cosine of the best passage; `margin`: how far it stands above the other candidates;
- `coverage`: IDF-weighted share of the question's terms in the best passage;
- `rare` / `salient`: share of the question's two rarest terms in the best passage, rarest in
  the index (IDF) / in general Chinese (jieba's dictionary frequencies: "市值", "创始人" are
  specific wherever they are asked, "需要" is not); `specific`: how rare in general the rarest
  term the passage shares with the question is (a name, not "明天");
- `known`: share of what the question names (weighted by general rarity) that the articles
  use at all; for an English question, its words the dictionary translates into words no
  article uses count as unknown;
- `number`: for a question asking a count, an amount, a date or a span of time (a crisp
  `retrieval.question.AnswerKind`), whether the best passage holds such an expression next to
  the question's rarer words (`type_evidence`: 1 near, 0.5 elsewhere, 0 none); 1 for a
  question asking none of these;
- `typed` / `typed_rare`: the answer-kind evidence (any kind, loose cues too) times `coverage` / `rare`: both at once,
  which a sum cannot require (a passage full of the question's words made up for lacking the
  answer: fitted by cross-validation, these two lowered the answerable questions flagged);
- `gap`: 1 minus how specific (in general Chinese) the most specific thing the question names
  is that the best passage lacks ("厅长" in "青海省工信厅厅长是谁？", "CEO"): a maximum, not a
  share, so one missing role word is not made up for by five topic words present. Numbers
  (written "五月二十五日" or "5月25日") are left out; an English word counts through its
  translations;
- `focused`: the kind of answer asked next to the question's focus words in the passage (0
  when they are absent): the date beside "发布" does not say when a rule "实施".

Words that name the kind of answer (the wh-word, "期限", "职务", and the word after a
determining question word: "国家" in "在哪个国家") are the question's form, not what it is
about: the answer itself satisfies them, so no feature asks the passage to repeat them.

They are combined linearly with non-negative weights (more evidence never makes a question
less answered): answered when `sum(w * f) >= threshold`. Weights and threshold live in
`config.toml` `[retrieval]`, fitted by cross-validation (`bench/fit_decide.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from index.text import general_idf, normalize
from retrieval.model import Confidence
from retrieval.question import AnswerKind, Question, is_question_word, kind_spans
from settings import RetrievalConfig

FEATURES = (
    "dense",
    "coverage",
    "rare",
    "salient",
    "specific",
    "known",
    "number",
    "margin",
    "typed",
    "typed_rare",
    "gap",
    "focused",
)
# How many of the question's rarest terms `rare` looks at.
_RARE_TERMS = 2
# A kind-of-answer expression counts for the question when it is this close (in characters)
# to one of the question's terms in the passage.
_NEAR = 24


def type_evidence(kind: AnswerKind | None, passage: str, question_terms: Sequence[str]) -> float:
    """1 when the passage holds an expression of kind `kind` within `_NEAR` characters of one
    of `question_terms` (or no kind is asked for), 0.5 when it holds one elsewhere, else 0."""
    if kind is None:
        return 1.0
    text = normalize(passage)
    return _nearness(text, kind_spans(kind, text), question_terms)


def _nearness(text: str, spans: Sequence[tuple[int, int]], question_terms: Sequence[str]) -> float:
    """`type_evidence` given the expressions' `spans` in `text`."""
    if not spans:
        return 0.0
    for term in question_terms:
        start = text.find(term)
        while start >= 0:
            end = start + len(term)
            if any(s - _NEAR <= end and start <= e + _NEAR for s, e in spans):
                return 1.0
            start = text.find(term, start + 1)
    return 0.5


# Numbers and dates, written differently in question and passage ("五月二十五日", "5月25日").
_NUMERIC = re.compile(r"\d|[一二三四五六七八九十百千万亿两〇零]{2,}|[一二三四五六七八九十]+[年月日号]")

# Nouns that name the kind of answer ("停产期限是什么时候", "担任什么职务"): the answer
# itself satisfies them, so a passage need not repeat them.
_ANSWER_NOUNS = frozenset("时间 日期 时候 期限 原因 理由 数量 人数 名字 名称 职务 职位 身份 地点 位置 角色".split())
# Classes whose members an answer names without the class word: "杭州" answers "哪个城市",
# "公安部" "哪个部门". After a determining question word any other noun is asked for by name
# and its answer says it ("哪家酒店" → "…酒店"), so a passage lacking it lacks the answer.
_CLASS_NOUNS = frozenset(
    "国家 城市 省 省份 省区 地区 地方 州 县 市 城 区 国 人 人物 人士 领导 官员 专家 公司 企业 机构 部门 单位 组织 部委 "
    "country countries city cities province provinces state states region regions place places person people "
    "company companies firm firms organisation organization organisations organizations agency agencies "
    "department departments official officials".split()
)


@dataclass(frozen=True)
class Evidence:
    """What the retriever knows about a question once it has ranked the passages."""

    question: Question
    passage: str  # text of the best passage
    passage_terms: str  # its index term string
    dense: np.ndarray  # cosine of every candidate passage
    top_dense: float  # cosine of the best passage


def _lacking_weight(term: str, held: Callable[[str], bool]) -> float:
    """How specific a question term the passage lacks is (`general_idf`). A word jieba only
    guessed ("矿圈币", "会为": the segmenter's unknown-word model gluing neighbours) is as
    specific as its dictionary words of two or more characters the passage lacks, or, with
    none, as its commonest character."""
    weight = general_idf(term)
    if weight < 1.0 or term.isascii():
        return weight
    pieces = [term[i:j] for i in range(len(term)) for j in range(i + 2, len(term) + 1) if (i, j) != (0, len(term))]
    words = [w for w in pieces if general_idf(w) < 1.0]
    if words:
        return max((general_idf(w) for w in words if not held(w)), default=0.0)
    return min(general_idf(c) for c in term)


def _share(wanted: Iterable[str], present: set[str], weight: Mapping[str, float]) -> float:
    total = sum(weight[t] for t in wanted)
    return sum(weight[t] for t in wanted if t in present) / total if total else 1.0


def features(evidence: Evidence) -> dict[str, float]:
    """The decision's features (`FEATURES`), each in [0, 1]."""
    question = evidence.question
    translation, df, idf = question.translation, question.df, question.idf
    # Words naming the kind of answer ("国家" in "在哪个国家"), like the answer nouns, are
    # satisfied by the answer itself; an English one also through its translations.
    kinds = {noun for noun in question.kind_nouns if noun in _CLASS_NOUNS}
    kind_phrases = {p for p, _ in translation.phrases if set(p.split()) <= kinds} if translation else set()
    if translation:
        kinds |= {t for phrase, group in translation.phrases if phrase in kind_phrases for t in group}
    own = [t for t in question.terms if not is_question_word(t) and t not in _ANSWER_NOUNS and t not in kinds]
    if translation:
        # An English question's own words are absent from Chinese articles by nature: its
        # evidence is the index terms it reached; what it names, its content words.
        terms = [t for t in own if df[t] > 0]
        named = [w for w in translation.words if w not in kinds]
        unknown = [(w, specificity) for w, specificity in translation.unknown if w not in kinds]
        absent = {w for w, _ in unknown}
    else:
        terms = named = own
        absent = {t for t in own if df[t] == 0}
    text = normalize(evidence.passage)
    index_terms = set(evidence.passage_terms.split())

    def held(term: str) -> bool:
        # Chinese also as a substring: the segmenter may cut a word differently in context.
        return term in index_terms or (not term.isascii() and term in text)

    present = {t for t in terms if held(t)}
    rarest = sorted(terms, key=lambda t: (-idf[t], -len(t)))[:_RARE_TERMS]
    # The question's focus (the words next to its question word) that the best passage
    # holds; an English word through its translations (one the dictionary cannot translate is
    # no evidence either way).
    focus_held: list[str] = []
    focus = [t for t in question.focus.terms if t in own]
    for word in focus:
        reached = [word] if df.get(word, 0) > 0 else []
        if translation:
            reached += [t for phrase, group in translation.phrases if word in phrase.split() for t in group]
            if not reached and word not in absent:
                continue
        focus_held += [t for t in reached if held(t)]
    general = {t: general_idf(t) for t in {*named, *own, *(translation.terms if translation else ())}}
    # The most specific thing the question names that the best passage lacks: a missing
    # "厅长" or "CEO" is not made up for by five topic words present (a share would be).
    if translation:
        lacking = [
            min(general[t] for t in group)
            for phrase, group in translation.phrases
            if group and not any(held(t) for t in group) and phrase not in kind_phrases
        ]
        lacking += [1.0 for t in own if t.isascii() and df[t] > 0 and not held(t)]
        lacking += [specificity for _, specificity in unknown]
    else:
        lacking = [_lacking_weight(t, held) for t in own if not held(t) and not _NUMERIC.search(t)]
    # The rarer half of the shared terms; ties in question order (a set's order varies with
    # the interpreter's hash seed, and so did the decision).
    anchors = sorted((t for t in terms if t in present), key=lambda t: -idf[t])[: max(1, len(present) // 2)]
    salient = sorted(terms, key=lambda t: (-general[t], -len(t)))[:_RARE_TERMS]
    kind = question.kind
    # The passage's expressions of that kind. An expression the question itself holds ("第五轮"
    # in "第五轮收网抓了多少人") is what it asks about, not its answer.
    spans = [(s, e) for s, e in kind_spans(kind, text) if text[s:e] not in question.normalized] if kind else []
    typed = _nearness(text, spans, anchors) if kind else 1.0
    # The kind of answer next to what is asked about ("实施" in "什么时候正式实施"), not only
    # next to the topic: a publication date is no answer to when a rule takes effect. With the
    # focus absent from the passage, nothing there answers it (cross-validation preferred
    # this to counting an expression as "elsewhere", 0.5).
    if focus_held:
        focused = _nearness(text, spans, focus_held) if kind else 1.0
    else:
        focused = (0.0 if kind else 1.0) if focus else typed
    dense = evidence.dense
    spread = float(dense.std()) if dense.size > 1 else 0.0
    # The best cosine as a z-score among the candidates'; four standard deviations count as full.
    margin = (evidence.top_dense - float(dense.mean())) / spread if spread > 0 else 0.0
    coverage = _share(terms, present, idf) if terms else 0.0
    rare = _share(rarest, present, idf) if terms else 0.0
    return {
        "dense": max(0.0, min(1.0, evidence.top_dense)),
        "coverage": coverage,
        "rare": rare,
        "salient": _share(salient, present, general) if terms else 0.0,
        "specific": max((general[t] for t in present), default=0.0),
        "known": 1.0 - _share(named, absent, general) if named else 0.0,
        "number": typed if kind is not None and kind.crisp else 1.0,
        "margin": max(0.0, min(1.0, margin / 4.0)),
        # Both at once: the kind of answer asked next to the question's words, and those words
        # (all of them; its rarest) in the passage. A sum alone lets a passage full of the
        # question's words make up for lacking the answer, and the reverse.
        "typed": typed * coverage,
        "typed_rare": typed * rare,
        "gap": 1.0 - max(lacking, default=0.0),
        "focused": focused,
    }


@dataclass(frozen=True)
class Policy:
    """Non-negative weights per feature and the two thresholds their sum is held against:
    below `threshold` the articles do not cover the question; from `sure` up the passages are
    quoted as its answer; in between they are quoted as the closest there is."""

    weights: Mapping[str, float]
    threshold: float
    sure: float

    @classmethod
    def from_config(cls, config: RetrievalConfig) -> Policy:
        """`[retrieval] evidence_<feature>` weights, `evidence_threshold` and `sure_threshold`."""
        weights = {name: getattr(config, f"evidence_{name}") for name in FEATURES}
        return cls(weights, config.evidence_threshold, max(config.sure_threshold, config.evidence_threshold))

    def score(self, values: Mapping[str, float]) -> float:
        return sum(self.weights[name] * values[name] for name in FEATURES)

    def confidence(self, values: Mapping[str, float]) -> Confidence:
        score = self.score(values)
        if score < self.threshold:
            return Confidence.NOT_COVERED
        return Confidence.SURE if score >= self.sure else Confidence.UNSURE
