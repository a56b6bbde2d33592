"""Hybrid retrieval over the live index, whatever backend stores it (`index.backends`).

A question is answered from one `IndexReader` (for SQLite + FAISS, one immutable version), so
a build that publishes mid-question can never mix versions; `refresh()` swaps readers between
questions. Lexical: BM25 over the same jieba/OpenCC terms the index stored; dense: cosine over
normalised vectors; the two are fused by `retrieval.fusion`. This module knows no SQL, FAISS or
Milvus: only ranking policy.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from datetime import date
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from index.backends import IndexReader, PassageRow, open_backend
from index.embedder import Embedder, load_embedder
from index.text import HAN, clean, in_script, terms
from retrieval import collapse, dates
from retrieval.crosslingual import Translation, default_lexicon, pinyin_table, translate
from retrieval.decide import Evidence, Policy, features
from retrieval.fusion import fuse, title_matches
from retrieval.highlight import sentence_scores
from retrieval.model import Answer, Hit, format_citation
from settings import Config, with_overrides

log = logging.getLogger(__name__)
V = TypeVar("V")


@dataclass
class _PendingHighlight:
    """A hit whose best sentence needs sentence embeddings; `answer_many` embeds those of the
    whole batch in one model call."""

    answer: int  # index of the answer in the batch
    position: int  # index of the hit in its answer
    passage_id: int
    text: str
    spans: list[tuple[int, int]]
    qvec: np.ndarray


class _PerPassage(Generic[V]):
    """Passage id → a fact read once per reader. Safe because a passage id always names the
    same passage (ids are never reused) and a reader is one state of the index: a new
    version gets a new `_Served`. Past `limit` passages it starts afresh (at 1M passages it
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


class _Served:
    """A reader with what retrieval derives from it once: the pinyin table English questions
    need (~0.2 s per 16,000 terms, built on the first one), the newest article date, and the
    per-passage facts questions read again and again (`_PerPassage`)."""

    def __init__(self, reader: IndexReader) -> None:
        self.reader = reader
        self._pinyin: dict[str, tuple[str, ...]] | None = None
        self._lock = threading.Lock()
        self._article_of: _PerPassage[str] = _PerPassage()
        self._date_rows: _PerPassage[tuple[str, str]] = _PerPassage()
        self._sentences: _PerPassage[tuple[list[tuple[int, int]], list[str]]] = _PerPassage()
        self._rows: _PerPassage[PassageRow] = _PerPassage(limit=20_000)  # ~3 kB each (text, vector)
        # ~2 kB a sentence, ~5 sentences a passage: at most ~40 MB.
        self._sentence_vectors: _PerPassage[np.ndarray] = _PerPassage(limit=4_096)

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


class Retriever:
    """Load once, ask many times. Thread-safe: the bot calls it from worker threads."""

    def __init__(self, index_dir: Path, config: Config, embedder: Embedder | None = None) -> None:
        self.config = with_overrides(config, index_dir=Path(index_dir))
        self.backend = open_backend(self.config)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._stamp = self.backend.stamp()
        self._served = _Served(self.backend.open_reader())

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
            self._served = _Served(reader)
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

    def search(self, question: str, k: int | None = None) -> list[Hit]:
        return list(self.answer(question, k).hits)

    def answer(self, question: str, k: int | None = None) -> Answer:
        return self.answer_many([question], k)[0]

    def answer_many(self, questions: Sequence[str], k: int | None = None) -> list[Answer]:
        """Answer a batch: one model call embeds every question, one FAISS search finds the
        nearest passages of all of them, and at most one more model call embeds the sentences
        of every hit that shares no term with its question (see `_best_sentences`); a model
        call costs about as much for one text as for dozens."""
        return self._answer_batch(questions, self.clamp_k(k), again=True)

    def _answer_batch(self, questions: Sequence[str], k: int, again: bool) -> list[Answer]:
        """`answer_many`; with `again`, a question a live store changed under while it was
        answered (`_answer_one` returns None) is asked once more, from the store's new state."""
        served = self._served
        reader = served.reader
        cleaned = [self._prepare(reader, q) for q in questions]
        todo = [i for i, q in enumerate(cleaned) if q]
        answers = [Answer(question=q, answered=False, version=reader.version) for q in questions]
        if not todo or reader.count == 0:
            return answers
        query_vectors = self.embedder.encode_queries([cleaned[i] for i in todo])
        sims, ids = reader.dense(query_vectors, min(self.config.retrieval.candidates, reader.count))
        pending: list[_PendingHighlight] = []
        changed: list[int] = []
        for row, i in enumerate(todo):
            answer, spans = self._answer_one(
                served, questions[i], cleaned[i], query_vectors[row], (sims[row], ids[row]), k, settled=again
            )
            if answer is None:
                changed.append(i)
                continue
            answers[i] = answer
            pending += [
                _PendingHighlight(i, position, hit.passage_id, hit.text, s, query_vectors[row])
                for position, s in spans
                for hit in [answers[i].hits[position]]
            ]
        if pending:
            self._highlight_by_embedding(served, answers, pending)
        if changed:
            again_answers = self._answer_batch([questions[i] for i in changed], k, again=False)
            for i, answer in zip(changed, again_answers, strict=True):
                answers[i] = answer
        return answers

    def _highlight_by_embedding(
        self, served: _Served, answers: list[Answer], pending: Sequence[_PendingHighlight]
    ) -> None:
        """Set each pending hit's highlight to its sentence closest to the question, embedding
        in one model call the sentences of the batch's passages not embedded before."""
        vectors = served.sentence_vectors(
            {item.passage_id: (item.text, item.spans) for item in pending}, self.embedder.encode_documents
        )
        for item in pending:
            sims = vectors[item.passage_id] @ item.qvec
            start, end = item.spans[int(np.argmax(sims))]
            answer = answers[item.answer]
            hits = list(answer.hits)
            hits[item.position] = dataclass_replace(hits[item.position], highlight_start=start, highlight_end=end)
            answers[item.answer] = dataclass_replace(answer, hits=tuple(hits))

    def _answer_one(
        self,
        served: _Served,
        original: str,
        question: str,
        qvec: np.ndarray,
        nearest: tuple[np.ndarray, np.ndarray],
        k: int,
        settled: bool = False,
    ) -> tuple[Answer | None, list[tuple[int, list[tuple[int, int]]]]]:
        """The answer, and (hit position, sentence spans) of hits whose best sentence only
        sentence embeddings can pick (`answer_many` embeds them for the whole batch).
        `nearest`: this question's row of the batch's FAISS search (similarities, ids).
        With `settled`, None when the store changed while the question was answered (see
        below), so that it is asked again rather than answered from half of each state."""
        cfg = self.config.retrieval
        snap = served.reader
        query_terms, translation = self._question_terms(served, question)
        foreign = not HAN.search(question)
        candidate_ids, dense_scores, lexical_scores = self._candidates(snap, query_terms, qvec, nearest)
        if not candidate_ids:
            return Answer(question=original, answered=False, version=snap.version), []
        dfs = snap.document_frequencies(query_terms)
        idf = self._idf(snap.count, dfs)
        fused = fuse(dense_scores, lexical_scores, cfg.dense_weight, cfg.fusion, rrf_k=cfg.rrf_k)
        if cfg.title_weight:
            fused = fused + cfg.title_weight * self.title_scores(served, candidate_ids, query_terms, idf)
        # Dates and periods the question names, "latest"/"first" (`retrieval.dates`).
        fused = dates.adjust(question, served.reference_date, candidate_ids, fused, served.date_rows)
        # Republished copies collapse into one distinct result each (`retrieval.collapse`):
        # `order` holds the positions of the members that earned the ranks, `chosen` the
        # versions quoted (the earliest, unless a later copy holds more of the question).
        ranked = [candidate_ids[position] for position in np.argsort(-fused, kind="stable").tolist()]
        picks = collapse.distinct(snap.copies, ranked, k)
        position_of = {passage_id: position for position, passage_id in enumerate(candidate_ids)}
        rows = served.rows([i for p in picks for i in p.candidates()])
        # A live store (Milvus) may replace an article between the searches and this read:
        # a found passage deleted since, or an old and a new version of one paragraph both
        # found (one search before the swap, one after). A version of the SQLite backend never
        # changes, so neither happens there.
        kept = [p for p in picks if all(i in rows for i in p.candidates())]
        quoted = [p.quote({i: rows[i].terms for i in p.candidates()}, query_terms) for p in kept]
        chosen = [rows[passage_id] for passage_id, _ in quoted]
        if settled and (len(kept) < len(picks) or len({(r.article_id, r.ordinal) for r in chosen}) < len(chosen)):
            return None, []
        picks = kept
        if not picks:
            return Answer(question=original, answered=False, version=snap.version), []
        order = [position_of[p.ranked_id] for p in picks]
        highlights, undecided = self._best_sentences(served, question, chosen, query_terms, idf)
        hits = []
        for rank, (position, row, (start, end), (_, also)) in enumerate(
            zip(order, chosen, highlights, quoted, strict=True), start=1
        ):
            hits.append(
                Hit(
                    rank=rank,
                    score=float(fused[position]),
                    text=row.text,
                    title=row.title,
                    article_id=row.article_id,
                    section=row.section,
                    paragraph=row.paragraph,
                    paragraph_end=row.paragraph_end,
                    citation=format_citation(
                        row.source, row.date, row.title, row.section, row.paragraph, row.paragraph_end
                    ),
                    url=row.url,
                    date=row.date,
                    source=row.source,
                    passage_id=row.id,
                    ordinal=row.ordinal,
                    highlight_start=start,
                    highlight_end=end,
                    dense=float(dense_scores[position]),
                    lexical=float(lexical_scores[position]),
                    also=also,
                )
            )
        top = chosen[0]
        # An English question's own words are absent from Chinese articles by nature, not for
        # lack of an answer: only the terms the index knows (translations, "OTC") are evidence.
        evidence = [t for t in query_terms if dfs[t] > 0] if foreign else query_terms
        coverage = self._coverage(top.terms, evidence, idf)
        signals = features(
            Evidence(
                question=question,
                terms=query_terms,
                df=dfs,
                idf=idf,
                passage=top.text,
                passage_terms=top.terms,
                dense=dense_scores,
                top_dense=float(dense_scores[order[0]]),
                translation=translation,
            )
        )
        answer = Answer(
            question=original,
            answered=self._is_answered(signals),
            hits=tuple(hits),
            version=snap.version,
            coverage=coverage,
            features=signals,
        )
        return answer, undecided

    def _candidates(
        self, snap: IndexReader, query_terms: Sequence[str], qvec: np.ndarray, nearest: tuple[np.ndarray, np.ndarray]
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(passage ids, cosines, BM25 scores) of the best `candidates` passages of each side,
        FAISS's (`nearest`: similarities, ids) first; BM25 is 0 where no term matched. What
        fusion ranks (and what `bench/fit_fusion.py` fits it on)."""
        lexical = snap.lexical(query_terms, self.config.retrieval.candidates)
        sims, ids = nearest
        dense = {i: s for i, s in zip(ids.tolist(), sims.tolist(), strict=True) if i >= 0}
        candidate_ids = list(dict.fromkeys([*dense, *lexical]))
        # FAISS ids are this version's passages and come with their cosine: only lexical-only
        # candidates need their embedding read (~0.5 ms per 100 at 1M passages).
        dense.update(snap.cosines([i for i in candidate_ids if i not in dense], qvec))
        candidate_ids = [i for i in candidate_ids if i in dense]
        dense_scores = np.array([dense[i] for i in candidate_ids])
        lexical_scores = np.array([lexical.get(i, 0.0) for i in candidate_ids])
        return candidate_ids, dense_scores, lexical_scores

    @staticmethod
    def title_scores(
        served: _Served, candidate_ids: Sequence[int], query_terms: Sequence[str], idf: dict[str, float]
    ) -> np.ndarray:
        """`fusion.title_match` of each candidate's article title (what `title_weight` weighs)."""
        article_of = served.article_of(candidate_ids)
        articles = [article_of.get(i, "") for i in candidate_ids]
        distinct = list(dict.fromkeys(articles))
        titles = served.titles
        match = dict(zip(distinct, title_matches(query_terms, idf, [titles.get(a, "") for a in distinct]), strict=True))
        return np.array([match[a] for a in articles])

    def query_terms(self, question: str) -> list[str]:
        """The index terms BM25, coverage and highlighting use for `question`."""
        served = self._served
        return self._question_terms(served, self._prepare(served.reader, question))[0]

    def _prepare(self, snap: IndexReader, question: str) -> str:
        """The question as it is searched: cleaned, truncated, in the articles' own script."""
        return in_script(clean(question)[: self.config.retrieval.max_query_chars], snap.script)

    @staticmethod
    def _question_terms(served: _Served, question: str) -> tuple[list[str], Translation | None]:
        """The question's index terms, and for an English question its translation (its words
        as the articles' Chinese terms, which it adds to the terms)."""
        query_terms = terms(question)
        translation = None
        if not HAN.search(question):
            translation = translate(question, default_lexicon(), served.pinyin(), served.reader.document_frequencies)
            query_terms += translation.terms
        return list(dict.fromkeys(query_terms)), translation

    # ---------- scoring helpers ----------
    @staticmethod
    def _idf(passages: int, dfs: dict[str, int]) -> dict[str, float]:
        n = max(passages, 1)
        return {t: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for t, df in dfs.items()}

    @staticmethod
    def _coverage(passage_terms: str, query_terms: Sequence[str], idf: dict[str, float]) -> float:
        """IDF-weighted share of the question's terms that occur in the passage."""
        if not query_terms:
            return 0.0
        present = set(passage_terms.split())
        total = sum(idf[t] for t in query_terms)
        return sum(idf[t] for t in query_terms if t in present) / total if total else 0.0

    def _is_answered(self, signals: dict[str, float]) -> bool:
        """Whether the best passages really answer the question (`retrieval.decide`)."""
        return Policy.from_config(self.config.retrieval).answered(signals)

    def _best_sentences(
        self,
        served: _Served,
        question: str,
        rows: Sequence[PassageRow],
        query_terms: Sequence[str],
        idf: dict[str, float],
    ) -> tuple[list[tuple[int, int]], list[tuple[int, list[tuple[int, int]]]]]:
        """For each passage, the sentence that best answers the question (offsets into its
        text), and the passages this could not decide: (position, sentence spans).

        Term overlap with answer cues decides when the question shares words with the passage
        (`retrieval.highlight`). Passages sharing no term with it (e.g. for an English
        question) are decided by sentence embeddings, which `answer_many` computes for the
        whole batch in one model call; until then they hold the first sentence. The sentences
        and their normalised text come from the index (`index.text.sentence_spans`).
        """
        results: list[tuple[int, int]] = []
        undecided: list[tuple[int, list[tuple[int, int]]]] = []
        for i, row in enumerate(rows):
            spans, normalized = served.sentences(row)
            scores = sentence_scores(question, [row.text[s:e] for s, e in spans], query_terms, idf, normalized)
            best = int(np.argmax(scores))
            results.append(spans[best])
            if len(spans) > 1 and scores[best] == 0.0:
                undecided.append((i, spans))
        return results, undecided

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
