"""The retriever: questions in, quoted and cited `Answer`s out, over the live index.

A batch of questions is answered from one `IndexReader` (for SQLite + FAISS, one immutable
version), so a build that publishes mid-question can never mix versions; `refresh()` swaps
readers between questions. Each question is parsed once (`retrieval.question`), ranked
(`retrieval.rank`), its sentences chosen (`retrieval.highlight`) and judged covered or not
(`retrieval.decide`); this module only runs those stages, batching the model calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any

import numpy as np

from index.backends import IndexReader, PassageRow, open_backend
from index.embedder import Embedder, load_embedder
from retrieval import highlight, rank
from retrieval.crosslingual import default_lexicon
from retrieval.decide import Evidence, Policy, features
from retrieval.model import Answer, Hit
from retrieval.question import Question
from retrieval.served import Served
from settings import Config, with_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    """A hit whose sentence only sentence embeddings can pick (`highlight.by_embedding`)."""

    answer: int  # index of the answer in the batch
    position: int  # index of the hit in its answer
    passage: highlight.Undecided


class Retriever:
    """Load once, ask many times. Thread-safe: the bot calls it from worker threads."""

    def __init__(self, index_dir: Path, config: Config, embedder: Embedder | None = None) -> None:
        self.config = with_overrides(config, index_dir=Path(index_dir))
        self.backend = open_backend(self.config)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._stamp = self.backend.stamp()
        self._served = Served(self.backend.open_reader())
        self._policy = Policy.from_config(self.config.retrieval)

    @classmethod
    def open(cls, index_dir: Path | str, config: Config, embedder: Embedder | None = None) -> Retriever:
        """Open the live index; raises `IndexMissingError` or `RebuildRequiredError`."""
        return cls(Path(index_dir), config, embedder)

    # ---------- lifecycle ----------
    @property
    def reader(self) -> IndexReader:
        """The index state questions are answered from now."""
        return self._served.reader

    @property
    def version(self) -> str:
        return self.reader.version

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.reader.meta)

    def refresh(self) -> bool:
        """Switch to a newly published version, if any. Returns True when it switched.

        Questions already running keep the reader they started with.
        """
        stamp = self.backend.stamp()
        if stamp == self._stamp:
            return False
        with self._swap_lock:
            if stamp == self._stamp:
                return False
            try:
                reader = self.backend.open_reader()
            except Exception:
                # Keep serving the old version; report this publish once, not on every call.
                self._stamp = stamp
                raise
            self._stamp = stamp
            if reader.version == self.reader.version:
                reader.close()
                return False
            # The old reader is left to the garbage collector: a question in flight may
            # still be reading it.
            self._served = Served(reader)
            return True

    def close(self) -> None:
        self.reader.close()
        self.backend.close()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = load_embedder(self.config.model)
        return self._embedder

    def warm_up(self, background: bool = True) -> None:
        """Load the model and dictionaries now rather than on the first question. What only
        English questions need (CC-CEDICT, this version's pinyin table: ~1 s) loads in a
        background thread unless `background` is False; an English question asked meanwhile
        waits for it."""
        self.answer("预热", k=1)
        if not background:
            self.answer("warm up", k=1)
            return
        served = self._served

        def english() -> None:
            try:
                default_lexicon()
                served.pinyin()
            except Exception as exc:  # e.g. the retriever was closed meanwhile: the next question retries
                log.debug("English warm-up stopped: %s", exc)

        threading.Thread(target=english, name="warm-up-english", daemon=True).start()

    # ---------- questions ----------
    def clamp_k(self, k: int | None) -> int:
        if k is None:
            return self.config.retrieval.k
        return max(1, min(int(k), self.config.retrieval.max_k))

    def question(self, text: str) -> Question:
        """`text` as retrieval reads it against the live index (its terms, kind, focus…)."""
        served = self._served
        return self._parse(served, text)

    def _parse(self, served: Served, text: str) -> Question:
        return Question.parse(text, served.vocabulary(self.config.retrieval.max_query_chars))

    def search(self, question: str, k: int | None = None) -> list[Hit]:
        return list(self.answer(question, k).hits)

    def answer(self, question: str, k: int | None = None) -> Answer:
        return self.answer_many([question], k)[0]

    def answer_many(self, questions: Sequence[str], k: int | None = None) -> list[Answer]:
        """Answer a batch: one model call embeds every question, one FAISS search finds the
        nearest passages of all of them, and at most one more model call embeds the sentences
        of every hit that shares no term with its question (`highlight.by_embedding`); a
        model call costs about as much for one text as for dozens."""
        return self._answer_batch(questions, self.clamp_k(k), again=True)

    def candidates(self, questions: Sequence[str]) -> list[rank.Candidates]:
        """What fusion ranks for each question (for fitting its parameters: `bench/fit_fusion.py`)."""
        served = self._served
        parsed = [self._parse(served, q) for q in questions]
        vectors, nearest = self._nearest(served.reader, parsed)
        return [
            rank.candidates(
                served, q, vectors[row], (nearest[0][row], nearest[1][row]), self.config.retrieval.candidates
            )
            for row, q in enumerate(parsed)
        ]

    def _nearest(
        self, reader: IndexReader, questions: Sequence[Question]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The questions' embeddings and their FAISS neighbours (similarities, ids), in one call each."""
        vectors = self.embedder.encode_queries([q.text for q in questions])
        return vectors, reader.dense(vectors, min(self.config.retrieval.candidates, reader.count))

    def _answer_batch(self, questions: Sequence[str], k: int, again: bool) -> list[Answer]:
        """`answer_many`; with `again`, a question a live store changed under while it was
        answered is asked once more, from the store's new state."""
        served = self._served
        reader = served.reader
        parsed = [self._parse(served, q) for q in questions]
        todo = [i for i, q in enumerate(parsed) if q.text]
        answers = [Answer(question=q, version=reader.version) for q in questions]
        if not todo or reader.count == 0:
            return answers
        vectors, (sims, ids) = self._nearest(reader, [parsed[i] for i in todo])
        pending: list[_Pending] = []
        changed: list[int] = []
        for row, i in enumerate(todo):
            found = rank.candidates(
                served, parsed[i], vectors[row], (sims[row], ids[row]), self.config.retrieval.candidates
            )
            answer, undecided = self._answer_one(served, found, k, settled=again)
            if answer is None:
                changed.append(i)
                continue
            answers[i] = answer
            pending += [_Pending(i, position, passage) for position, passage in undecided]
        if pending:
            spans = highlight.by_embedding(
                [item.passage for item in pending],
                lambda passages: served.sentence_vectors(passages, self.embedder.encode_documents),
            )
            for item, (start, end) in zip(pending, spans, strict=True):
                answer = answers[item.answer]
                hits = list(answer.hits)
                hits[item.position] = dataclass_replace(hits[item.position], highlight_start=start, highlight_end=end)
                answers[item.answer] = dataclass_replace(answer, hits=tuple(hits))
        if changed:
            again_answers = self._answer_batch([questions[i] for i in changed], k, again=False)
            for i, answer in zip(changed, again_answers, strict=True):
                answers[i] = answer
        return answers

    def _answer_one(
        self, served: Served, found: rank.Candidates, k: int, settled: bool
    ) -> tuple[Answer | None, list[tuple[int, highlight.Undecided]]]:
        """The answer, and the hits (by position) whose sentence only sentence embeddings can
        pick. With `settled`, None when the store changed while the question was answered, so
        that it is asked again rather than answered from half of each state."""
        question = found.question
        unanswered = Answer(question=question.asked, version=served.reader.version)
        if not found.ids:
            return unanswered, []
        scores = rank.fused_scores(served, found, self.config.retrieval)
        results, changed = rank.ranked(served, found, scores, k)
        if settled and changed:
            return None, []
        if not results:
            return unanswered, []
        hits: list[Hit] = []
        undecided: list[tuple[int, highlight.Undecided]] = []
        for position, result in enumerate(results):
            row = result.row
            spans, normalized = served.sentences(row)
            choice = highlight.best_sentence(question, spans, normalized)
            if choice.undecided:
                undecided.append((position, highlight.Undecided(row.id, row.text, spans, found.query_vector)))
            hits.append(
                Hit.of(
                    row,
                    rank=position + 1,
                    score=float(scores[result.position]),
                    dense=float(found.dense[result.position]),
                    lexical=float(found.lexical[result.position]),
                    highlight=choice.span,
                    also=result.also,
                )
            )
        top = results[0]
        signals = features(
            Evidence(
                question=question,
                passage=top.row.text,
                passage_terms=top.row.terms,
                dense=found.dense,
                top_dense=float(found.dense[top.position]),
            )
        )
        answer = Answer(
            question=question.asked,
            confidence=self._policy.confidence(signals),
            hits=tuple(hits),
            version=served.reader.version,
            features=signals,
        )
        return answer, undecided

    # ---------- browsing (bot buttons, /sources, /about) ----------
    def passages(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        return self.reader.rows(ids)

    def context(self, passage_id: int, before: int = 1, after: int = 1) -> list[PassageRow]:
        """The passage with its neighbours in the same article, in reading order."""
        snap = self.reader
        row = snap.rows([passage_id]).get(passage_id)
        if row is None:
            return []
        ids = snap.neighbours(row.article_id, row.ordinal, before, after)
        rows = snap.rows(ids)
        return [rows[i] for i in ids if i in rows]

    def articles(self) -> list[dict[str, Any]]:
        return self.reader.articles()
