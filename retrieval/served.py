"""One served state of the index, and what retrieval derives from it once.

A reader (`index.backends.IndexReader`) is one state of the index: for SQLite + FAISS one
immutable version. Everything derived from it (the pinyin table English questions need, the
newest article date, per-passage facts read question after question) is kept beside it in a
`Served`, so that a new version simply gets a new `Served` and nothing is ever stale.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, Generic, TypeVar

import numpy as np

from index.backends import IndexReader, PassageRow
from retrieval import dates
from retrieval.crosslingual import default_lexicon, pinyin_table
from retrieval.question import Vocabulary

V = TypeVar("V")


class PerPassage(Generic[V]):
    """Passage id → a fact read once per reader. Safe because a passage id always names the
    same passage (ids are never reused) and a reader is one state of the index: a new
    version gets a new `Served`. Past `limit` passages it starts afresh (at 1M passages it
    would otherwise grow to the whole index). Thread-safe: a thread may read a fact another
    is reading too; both store the same value."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.values: dict[int, V] = {}

    def _store(self, found: dict[int, V]) -> None:
        if len(self.values) + len(found) > self.limit:
            self.values = {}  # threads holding the old dict keep reading it
        self.values.update(found)

    def many(self, ids: Sequence[int], read: Callable[[list[int]], dict[int, V]]) -> dict[int, V]:
        """The facts of the `ids` that name a passage, `read(ids)` for those not known yet."""
        values = self.values
        missing = [i for i in ids if i not in values]
        if not missing:
            return {i: values[i] for i in ids}
        found = read(missing)
        self._store(found)
        return {i: values[i] if i in values else found[i] for i in ids if i in values or i in found}

    def one(self, passage_id: int, make: Callable[[], V]) -> V:
        value = self.values.get(passage_id)
        if value is None:
            value = make()
            self._store({passage_id: value})
        return value


class Served:
    """A reader with what retrieval derives from it once: the pinyin table English questions
    need (~0.2 s per 16,000 terms, built on the first one), the newest article date, and the
    per-passage facts questions read again and again (`PerPassage`)."""

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader
        self._pinyin: dict[str, tuple[str, ...]] | None = None
        self._lock = threading.Lock()
        self._article_of: PerPassage[str] = PerPassage()
        self._date_rows: PerPassage[tuple[str, str]] = PerPassage()
        self._sentences: PerPassage[tuple[list[tuple[int, int]], list[str]]] = PerPassage()
        self._rows: PerPassage[PassageRow] = PerPassage(limit=20_000)  # ~3 kB each (text, vector)
        # ~2 kB a sentence, ~5 sentences a passage: at most ~40 MB.
        self._sentence_vectors: PerPassage[np.ndarray] = PerPassage(limit=4_096)

    def pinyin(self) -> dict[str, tuple[str, ...]]:
        table = self._pinyin
        if table is None:
            with self._lock:
                if self._pinyin is None:
                    self._pinyin = pinyin_table(self.reader.vocabulary())
                table = self._pinyin
        return table

    @functools.cached_property
    def _articles(self) -> list[dict[str, Any]]:
        return self.reader.articles()

    @functools.cached_property
    def reference_date(self) -> date | None:
        return dates.reference_date(a["date"] for a in self._articles if a["date"])

    @functools.cached_property
    def titles(self) -> dict[str, str]:
        """Article id → title (what `title_weight` compares with the question)."""
        return {a["id"]: a["title"] or "" for a in self._articles}

    def article_of(self, ids: Sequence[int]) -> dict[int, str]:
        return self._article_of.many(ids, self.reader.article_of)

    def date_rows(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Passage id → (text, its article's date): what `dates.adjust` reads."""

        def read(missing: list[int]) -> dict[int, tuple[str, str]]:
            return {i: (row.text, row.date) for i, row in self.reader.rows(missing).items()}

        return self._date_rows.many(ids, read)

    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        """The passages quoted: the same popular ones answer many questions."""
        return self._rows.many(ids, self.reader.rows)

    def sentences(self, row: PassageRow) -> tuple[list[tuple[int, int]], list[str]]:
        """The passage's stored sentence spans and their normalised texts (`PassageRow.sentences`)."""

        def decode() -> tuple[list[tuple[int, int]], list[str]]:
            found = json.loads(row.sentences)
            return [(s, e) for s, e, _ in found], [n for _, _, n in found]

        return self._sentences.one(row.id, decode)

    def sentence_vectors(
        self, passages: dict[int, tuple[str, list[tuple[int, int]]]], embed: Callable[[list[str]], np.ndarray]
    ) -> dict[int, np.ndarray]:
        """Each passage's sentence embeddings (one row per span), `embed`ding in one call the
        distinct sentences of those not embedded before: the same popular passages lack a
        shared term with question after question (English ones above all)."""

        def read(missing: list[int]) -> dict[int, np.ndarray]:
            sentences = list(dict.fromkeys(passages[i][0][s:e] for i in missing for s, e in passages[i][1]))
            row_of = {sentence: row for row, sentence in enumerate(sentences)}
            vectors = embed(sentences)
            return {i: vectors[[row_of[passages[i][0][s:e]] for s, e in passages[i][1]]] for i in missing}

        return self._sentence_vectors.many(list(passages), read)

    def vocabulary(self, max_chars: int) -> Vocabulary:
        """What `retrieval.question.Question.parse` reads a question against."""
        reader = self.reader
        return Vocabulary(
            passages=reader.count,
            script=reader.script,
            document_frequencies=reader.document_frequencies,
            pinyin=self.pinyin,
            lexicon=default_lexicon,
            reference_date=self.reference_date,
            max_chars=max_chars,
        )
