"""What retrieval hands to its callers: `Hit`s and an `Answer` around them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from index.backends import PassageRow


def format_citation(source: str, date: str, title: str, section: str, paragraph: int, paragraph_end: int) -> str:
    """A short human citation, e.g. `《区块链日报》2021-06-10 · <title> · <section> · ¶12`."""
    head = (f"《{source}》" if source else "") + date
    para = f"¶{paragraph}" if paragraph_end == paragraph else f"¶{paragraph}–{paragraph_end}"
    return " · ".join(part for part in (head, title, section, para) if part)


def format_also(also: Sequence[Also]) -> str:
    """The other copies of a quoted passage, briefly: `新浪财经 2021-06-10, 金色财经 2021-06-11`."""
    return ", ".join(" ".join(p for p in (a.source or a.title, a.date) if p) or a.article_id for a in also)


@dataclass(frozen=True)
class Also:
    """Another copy of a hit's passage (the same text republished elsewhere, lightly edited)."""

    source: str
    date: str
    title: str
    url: str
    article_id: str
    passage_id: int


@dataclass(frozen=True)
class Hit:
    """One retrieved passage with everything needed to quote and cite it.

    `highlight_start`/`highlight_end` are offsets into `text` of the sentence that best
    answers the question. `dense` is the cosine similarity, `lexical` the BM25 score.
    """

    rank: int
    score: float
    text: str
    title: str
    article_id: str
    section: str
    paragraph: int
    paragraph_end: int
    citation: str
    url: str
    date: str
    source: str
    passage_id: int
    ordinal: int
    highlight_start: int
    highlight_end: int
    dense: float
    lexical: float
    # Copies of this passage in other articles (`retrieval.collapse`): the hit quotes the
    # earliest version, these are cited briefly.
    also: tuple[Also, ...] = ()

    @classmethod
    def of(
        cls,
        row: PassageRow,
        *,
        rank: int,
        score: float,
        dense: float,
        lexical: float,
        highlight: tuple[int, int],
        also: tuple[Also, ...] = (),
    ) -> Hit:
        """The hit quoting passage `row`: the one place a hit is made from a stored passage."""
        return cls(
            rank=rank,
            score=score,
            text=row.text,
            title=row.title,
            article_id=row.article_id,
            section=row.section,
            paragraph=row.paragraph,
            paragraph_end=row.paragraph_end,
            citation=format_citation(row.source, row.date, row.title, row.section, row.paragraph, row.paragraph_end),
            url=row.url,
            date=row.date,
            source=row.source,
            passage_id=row.id,
            ordinal=row.ordinal,
            highlight_start=highlight[0],
            highlight_end=highlight[1],
            dense=dense,
            lexical=lexical,
            also=also,
        )

    @property
    def sentence(self) -> str:
        return self.text[self.highlight_start : self.highlight_end]

    def to_dict(self) -> dict[str, Any]:
        # What `dataclasses.asdict` returns (fields in order, `also` as a tuple of dicts)
        # without its deep copy of every value: ~60 µs a hit, a fifth of a batch question.
        data = dict(vars(self))
        data["also"] = tuple(dict(vars(a)) for a in self.also)
        data["score"] = round(self.score, 4)
        data["dense"] = round(self.dense, 4)
        data["lexical"] = round(self.lexical, 4)
        return data


class Confidence(StrEnum):
    """How sure the bot is that its passages answer the question (`retrieval.decide`)."""

    SURE = "sure"  # quote them plainly
    UNSURE = "unsure"  # quote them, saying they may not answer it exactly
    NOT_COVERED = "not_covered"  # say the articles do not cover it; at most the closest passage


@dataclass(frozen=True)
class Answer:
    """The result for one question. When the corpus does not cover it (`Confidence.NOT_COVERED`)
    `hits` are still the closest passages, to be shown as weak matches at most."""

    question: str
    confidence: Confidence = Confidence.NOT_COVERED
    hits: tuple[Hit, ...] = ()
    version: str = ""
    # The "not covered" decision's inputs (`retrieval.decide.FEATURES`), for benchmarks and debugging.
    features: dict[str, float] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """The passages are quoted as an answer (sure or unsure)."""
        return self.confidence is not Confidence.NOT_COVERED

    @property
    def coverage(self) -> float:
        """The IDF-weighted share of what the question names that the best passage holds."""
        return self.features.get("coverage", 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answered": self.answered,
            "confidence": str(self.confidence),
            "results": [h.to_dict() for h in self.hits],
        }
