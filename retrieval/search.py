"""Hybrid retrieval over a published index version.

A question is answered from one immutable snapshot (SQLite + FAISS of one version), so a
rebuild that publishes mid-question can never mix versions; `refresh()` swaps snapshots
between questions. Lexical: BM25 (FTS5's formula) over the same jieba/OpenCC terms the index
stored, scored in numpy from the index's postings (`_Snapshot.bm25`; FTS5's bm25(), every term
quoted so no FTS or SQL syntax can be injected, for indexes built before them). Dense: FAISS
inner product over normalised vectors. The two are fused by `retrieval.fusion`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any

import numpy as np

from index import publish, store, vectors
from index.build import model_key
from index.embedder import Embedder, load_embedder
from index.text import HAN, clean, in_script, script_of, sentence_spans, terms
from retrieval import collapse, dates
from retrieval.bm25 import Postings
from retrieval.crosslingual import Translation, default_lexicon, pinyin_table, translate
from retrieval.decide import Evidence, Policy, features
from retrieval.fusion import fuse
from retrieval.highlight import sentence_scores
from retrieval.model import Answer, Hit, format_citation
from settings import Config

# Fixed SQL texts, so each is compiled once per connection and reused from sqlite3's statement
# cache: the ids travel as one JSON array parameter (`json_each`), not as a variable number
# of "?" placeholders (a new statement for every candidate count).
_ROW_SQL = """
select p.id, p.article_id, p.ordinal, p.section, p.paragraph, p.paragraph_end, p.text, p.terms,
       p.embedding, a.title, a.source, a.date, a.url, p.sentences
from passages p join articles a on a.id = p.article_id
where p.id in (select value from json_each(?))
"""
# An index built before `passages.sentences` (schema 1): its sentences are split per question.
_ROW_SQL_V1 = _ROW_SQL.replace("p.sentences", "null")
# Fusion needs only the embeddings of the candidates; full rows are read for the top k. (No
# join with articles: a build deletes a passage with its article, and `index check` verifies
# it; the join cost a random B-tree lookup per candidate.)
_EMBEDDING_SQL = "select id, embedding from passages where id in (select value from json_each(?))"


# The BM25 postings written by `index.store.write_bm25` (see `_Snapshot.bm25`).
_BM25_DF_SQL = "select term, df from bm25_terms where term in (select value from json_each(?))"
_BM25_POSTINGS_SQL = "select term, top, docs, weights from bm25_terms where term in (select value from json_each(?))"

log = logging.getLogger(__name__)


@dataclass
class _PendingHighlight:
    """A hit whose best sentence needs sentence embeddings; `answer_many` embeds those of the
    whole batch in one model call."""

    answer: int  # index of the answer in the batch
    position: int  # index of the hit in its answer
    text: str
    spans: list[tuple[int, int]]
    qvec: np.ndarray


class ModelMismatchError(Exception):
    """The index was built with another model than the config names."""


@dataclass(frozen=True)
class PassageRow:
    id: int
    article_id: str
    ordinal: int
    section: str
    paragraph: int
    paragraph_end: int
    text: str
    terms: str
    embedding: np.ndarray
    title: str
    source: str
    date: str
    url: str
    sentences: str | None = None  # JSON [[start, end, normalised text], …]; None: not stored


class _Snapshot:
    """One open index version: read-only SQLite connection + FAISS index."""

    # Postings a question scores in full, rarest terms first; the commoner terms beyond it
    # only rescore the best candidates (`Postings.scores`). At 1M passages one common term
    # has ~300k postings; numpy scores ~50k postings per millisecond.
    bm25_budget = 100_000

    def __init__(self, version: publish.Version, ef_search: int) -> None:
        self.version = version
        self.db = store.open_db(version.db_path, readonly=True)
        self.meta = store.get_meta(self.db)
        self.row_sql = _ROW_SQL if "sentences" in self.db["passages"].columns_dict else _ROW_SQL_V1
        self.faiss = vectors.read_faiss(version.faiss_path, ef_search)
        self.count = int(self.faiss.ntotal)
        self.lock = threading.Lock()
        self._df_cache: dict[str, int] = {}
        self.postings = self._load_postings()
        self._pinyin: dict[str, tuple[str, ...]] | None = None
        self._pinyin_lock = threading.Lock()

    def _load_postings(self) -> Postings | None:
        """The BM25 postings, or None for an index built before they existed (FTS5 then)."""
        try:
            row = self.db.execute("select ids from bm25_docs where id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else Postings(np.frombuffer(row[0], dtype="<i8"))

    def close(self) -> None:
        self.db.close()

    @functools.cached_property
    def script(self) -> str:
        """Whether this version's passages are mostly simplified or traditional Chinese, from
        an evenly spread sample of up to 200 of them (`index.text.script_of`)."""
        with self.lock:
            top = self.db.execute("select max(id) from passages").fetchone()[0] or 0
            step = max(1, top // 200)
            ids = _id_array(range(step, top + 1, step))
            texts = [
                r[0]
                for r in self.db.execute(
                    "select text from passages where id in (select value from json_each(?))", [ids]
                )
            ]
        return script_of(texts)

    def pinyin(self) -> dict[str, tuple[str, ...]]:
        """Toneless pinyin → Chinese terms of this version (`retrieval.crosslingual`), built on
        the first English question (~0.2 s per 16,000 terms)."""
        table = self._pinyin
        if table is None:
            with self._pinyin_lock:
                if self._pinyin is None:
                    sql = (
                        "select term from bm25_terms"
                        if self.postings is not None
                        else "select term from passages_fts_vocab"
                    )
                    with self.lock:
                        vocabulary = [r[0] for r in self.db.execute(sql)]
                    self._pinyin = pinyin_table(vocabulary)
                table = self._pinyin
        return table

    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        if not ids:
            return {}
        with self.lock:
            rows = self.db.execute(self.row_sql, [_id_array(ids)]).fetchall()
        out = {}
        for r in rows:
            out[r[0]] = PassageRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], np.frombuffer(r[8], dtype=np.float32), *r[9:]
            )
        return out

    def dense(self, qvecs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search for one query vector or a batch of them (`answer_many` makes one call
        per batch, not one per question): (similarities, ids), each of shape (queries, n).

        FAISS would open an OpenMP team of every core even for one query; on a busy machine
        the team's barrier then waits for descheduled threads (6x slower measured here). One
        thread instead, for this call only: the OpenMP setting is per calling thread.
        """
        import faiss

        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.faiss.search(np.atleast_2d(qvecs).astype(np.float32), n)
        finally:
            faiss.omp_set_num_threads(previous)

    def cosines(self, ids: Sequence[int], qvec: np.ndarray) -> dict[int, float]:
        """Passage id → cosine with `qvec`, from the stored embeddings of the ids that name a
        passage (one read, one matrix product)."""
        if not ids:
            return {}
        with self.lock:
            rows = self.db.execute(_EMBEDDING_SQL, [_id_array(ids)]).fetchall()
        if not rows:
            return {}
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return dict(zip([r[0] for r in rows], (matrix @ qvec).tolist(), strict=True))

    def bm25(self, query_terms: Sequence[str], limit: int) -> dict[int, float]:
        """Passage id → BM25 (higher is better) of the best `limit` passages matching any term.

        FTS5's formula over our own postings: FTS5 calls its bm25() once per matching row
        (~1 µs each), and a common term matches most of a large index (~45 ms median per
        question at 1M passages). Terms are scored rarest first up to `bm25_budget` postings;
        the commoner ones, which weigh least, only rescore the candidates.
        """
        if not query_terms or limit <= 0:
            return {}
        postings = self.postings
        if postings is None:
            return self._fts_bm25(query_terms, limit)
        essential, rest = self.bm25_plan(query_terms)
        if not essential:
            return {}
        with self.lock:
            rows = self.db.execute(_BM25_POSTINGS_SQL, [json.dumps(essential + rest)]).fetchall()
        lists = {
            term: (top, np.frombuffer(docs, dtype="<u4"), np.frombuffer(weights, dtype="<f4"))
            for term, top, docs, weights in rows
        }
        scored = [lists[t] for t in essential if t in lists]
        rescored = [lists[t] for t in rest if t in lists]
        if not scored:
            return {}
        while True:
            positions, scores, exact = postings.scores(scored, rescored, limit)
            if exact or not rescored:
                break
            # Not exact: score the next rarest term in full too, within 4x the budget.
            if sum(len(docs) for _, docs, _ in scored) + len(rescored[0][1]) > 4 * self.bm25_budget:
                break
            scored.append(rescored.pop(0))
        return dict(zip(postings.ids[positions].tolist(), scores.tolist(), strict=True))

    def bm25_plan(self, query_terms: Sequence[str]) -> tuple[list[str], list[str]]:
        """(essential, rest) for `bm25`: the question's indexed terms, rarest first, split where
        their postings add up to more than `bm25_budget` (the rarest term is always essential).
        The rest leaves out terms in over half the passages: they weigh ~1e-6 (FTS5's IDF
        floor) and are not worth reading."""
        dfs = self.document_frequencies(query_terms)
        present = sorted((t for t in dict.fromkeys(query_terms) if dfs[t] > 0), key=lambda t: dfs[t])
        essential: list[str] = []
        spent = 0
        for term in present:
            if essential and spent + dfs[term] > self.bm25_budget:
                break
            essential.append(term)
            spent += dfs[term]
        passages = len(self.postings.ids) if self.postings is not None else self.count
        return essential, [t for t in present[len(essential) :] if 2 * dfs[t] < passages]

    def _fts_bm25(self, query_terms: Sequence[str], limit: int) -> dict[int, float]:
        """FTS5's own bm25() (indexes without BM25 postings)."""
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in query_terms)
        sql = (
            "select rowid, bm25(passages_fts) from passages_fts where passages_fts match ? "
            "order by bm25(passages_fts) limit ?"
        )
        with self.lock:
            rows = self.db.execute(sql, [match, limit]).fetchall()
        return {int(r[0]): -float(r[1]) for r in rows}

    def document_frequencies(self, query_terms: Sequence[str]) -> dict[str, int]:
        """Passages holding each term: from the BM25 postings (one index lookup) when the index
        has them; fts5vocab instead walks a term's whole posting list to count it."""
        cache = self._df_cache  # a local reference: another thread may swap in a fresh dict
        missing = [t for t in query_terms if t not in cache]
        found: dict[str, int] = {}
        if missing:
            with self.lock:
                if self.postings is not None:
                    rows = self.db.execute(_BM25_DF_SQL, [json.dumps(missing)]).fetchall()
                else:
                    rows = self.db.execute(
                        f"select term, doc from passages_fts_vocab where term in ({','.join('?' * len(missing))})",
                        missing,
                    ).fetchall()
            found = {t: 0 for t in missing} | {r[0]: int(r[1]) for r in rows}
            if len(cache) > 50_000:
                self._df_cache = {}
            self._df_cache.update(found)
        return {t: found[t] if t in found else cache.get(t, 0) for t in query_terms}

    def neighbours(self, article_id: str, ordinal: int, before: int, after: int) -> list[int]:
        with self.lock:
            rows = self.db.execute(
                "select id from passages where article_id = ? and ordinal between ? and ? order by ordinal",
                [article_id, ordinal - before, ordinal + after],
            ).fetchall()
        return [r[0] for r in rows]


class Retriever:
    """Load once, ask many times. Thread-safe: the bot calls it from worker threads."""

    def __init__(self, index_dir: Path, config: Config, embedder: Embedder | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.config = config
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._stamp = publish.pointer_stamp(self.index_dir)
        self._snapshot = self._open_snapshot()

    @classmethod
    def open(cls, index_dir: Path | str, config: Config, embedder: Embedder | None = None) -> Retriever:
        """Open the live version; raises `IndexMissingError` or `ModelMismatchError`."""
        return cls(Path(index_dir), config, embedder)

    # ---------- lifecycle ----------
    def _open_snapshot(self) -> _Snapshot:
        ef_search = self.config.index.hnsw_ef_search
        snapshot = publish.open_current(self.index_dir, lambda version: _Snapshot(version, ef_search))
        built_with = snapshot.meta.get("model_key")
        if built_with != model_key(self.config):
            snapshot.close()
            built_name = str(built_with or "?").split("|")[0]
            raise ModelMismatchError(
                f"the index in {self.index_dir} was built with model {built_name!r} but the config names "
                f"{self.config.model.name!r}: rebuild it with `python -m index build`"
            )
        return snapshot

    @property
    def version(self) -> str:
        return self._snapshot.version.name

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._snapshot.meta)

    def refresh(self) -> bool:
        """Switch to a newly published version, if any. Returns True when it switched.

        Questions already running keep the snapshot they started with.
        """
        stamp = publish.pointer_stamp(self.index_dir)
        if stamp == self._stamp:
            return False
        with self._swap_lock:
            if stamp == self._stamp:
                return False
            current = publish.current_version(self.index_dir)
            if current is None or current.name == self._snapshot.version.name:
                self._stamp = stamp
                return False
            try:
                self._snapshot = self._open_snapshot()
            except ModelMismatchError:
                # Keep serving the old version; report this publish once, not on every call.
                self._stamp = stamp
                raise
            self._stamp = stamp
            # The old snapshot is left to the garbage collector: a question in flight may
            # still be reading it.
            return True

    def close(self) -> None:
        self._snapshot.close()

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
        snapshot = self._snapshot

        def english() -> None:
            try:
                default_lexicon()
                snapshot.pinyin()
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
        k = self.clamp_k(k)
        snapshot = self._snapshot
        cleaned = [self._prepare(snapshot, q) for q in questions]
        todo = [i for i, q in enumerate(cleaned) if q]
        answers = [Answer(question=q, answered=False, version=snapshot.version.name) for q in questions]
        if not todo or snapshot.count == 0:
            return answers
        query_vectors = self.embedder.encode_queries([cleaned[i] for i in todo])
        sims, ids = snapshot.dense(query_vectors, min(self.config.retrieval.candidates, snapshot.count))
        pending: list[_PendingHighlight] = []
        for row, i in enumerate(todo):
            answers[i], spans = self._answer_one(
                snapshot, questions[i], cleaned[i], query_vectors[row], (sims[row], ids[row]), k
            )
            pending += [
                _PendingHighlight(i, position, answers[i].hits[position].text, s, query_vectors[row])
                for position, s in spans
            ]
        if pending:
            self._highlight_by_embedding(answers, pending)
        return answers

    def _highlight_by_embedding(self, answers: list[Answer], pending: Sequence[_PendingHighlight]) -> None:
        """Set each pending hit's highlight to its sentence closest to the question, embedding
        the batch's distinct sentences in one model call (popular passages recur)."""
        sentences = list(dict.fromkeys(item.text[s:e] for item in pending for s, e in item.spans))
        row_of = {sentence: row for row, sentence in enumerate(sentences)}
        vectors = self.embedder.encode_documents(sentences)
        for item in pending:
            sims = vectors[[row_of[item.text[s:e]] for s, e in item.spans]] @ item.qvec
            start, end = item.spans[int(np.argmax(sims))]
            answer = answers[item.answer]
            hits = list(answer.hits)
            hits[item.position] = dataclass_replace(hits[item.position], highlight_start=start, highlight_end=end)
            answers[item.answer] = dataclass_replace(answer, hits=tuple(hits))

    def _answer_one(
        self,
        snap: _Snapshot,
        original: str,
        question: str,
        qvec: np.ndarray,
        nearest: tuple[np.ndarray, np.ndarray],
        k: int,
    ) -> tuple[Answer, list[tuple[int, list[tuple[int, int]]]]]:
        """The answer, and (hit position, sentence spans) of hits whose best sentence only
        sentence embeddings can pick (`answer_many` embeds them for the whole batch).
        `nearest`: this question's row of the batch's FAISS search (similarities, ids)."""
        cfg = self.config.retrieval
        query_terms, translation = self._question_terms(snap, question)
        foreign = not HAN.search(question)
        candidate_ids, dense_scores, lexical_scores = self._candidates(snap, query_terms, qvec, nearest)
        if not candidate_ids:
            return Answer(question=original, answered=False, version=snap.version.name), []
        fused = fuse(dense_scores, lexical_scores, cfg.dense_weight, cfg.fusion, rrf_k=cfg.rrf_k)
        with snap.lock:  # dates and periods the question names, "latest"/"first" (`retrieval.dates`)
            fused = dates.adjust(snap.db.conn, snap.version.name, question, candidate_ids, fused)
        # Republished copies collapse into one distinct result each (`retrieval.collapse`):
        # `order` holds the positions of the members that earned the ranks, `chosen` the
        # versions quoted (the earliest, unless a later copy holds more of the question).
        ranked = [candidate_ids[position] for position in np.argsort(-fused, kind="stable")]
        with snap.lock:
            picks = collapse.distinct(snap.db.conn, ranked, k)
        position_of = {passage_id: position for position, passage_id in enumerate(candidate_ids)}
        order = [position_of[p.ranked_id] for p in picks]
        dfs = snap.document_frequencies(query_terms)
        idf = self._idf(snap.count, dfs)
        rows = snap.rows([i for p in picks for i in p.candidates()])
        quoted = [p.quote({i: rows[i].terms for i in p.candidates()}, query_terms) for p in picks]
        chosen = [rows[passage_id] for passage_id, _ in quoted]
        highlights, undecided = self._best_sentences(question, chosen, query_terms, idf)
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
            version=snap.version.name,
            coverage=coverage,
            features=signals,
        )
        return answer, undecided

    def _candidates(
        self, snap: _Snapshot, query_terms: Sequence[str], qvec: np.ndarray, nearest: tuple[np.ndarray, np.ndarray]
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(passage ids, cosines, BM25 scores) of the best `candidates` passages of each side,
        FAISS's (`nearest`: similarities, ids) first; BM25 is 0 where no term matched. What
        fusion ranks (and what `bench/fit_fusion.py` fits it on)."""
        lexical = snap.bm25(query_terms, self.config.retrieval.candidates)
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

    def query_terms(self, question: str) -> list[str]:
        """The index terms BM25, coverage and highlighting use for `question`."""
        snapshot = self._snapshot
        return self._query_terms(snapshot, self._prepare(snapshot, question))

    def _prepare(self, snap: _Snapshot, question: str) -> str:
        """The question as it is searched: cleaned, truncated, in the articles' own script."""
        return in_script(clean(question)[: self.config.retrieval.max_query_chars], snap.script)

    @staticmethod
    def _query_terms(snap: _Snapshot, question: str) -> list[str]:
        return Retriever._question_terms(snap, question)[0]

    @staticmethod
    def _question_terms(snap: _Snapshot, question: str) -> tuple[list[str], Translation | None]:
        """The question's index terms, and for an English question its translation (its words
        as the articles' Chinese terms, which it adds to the terms)."""
        query_terms = terms(question)
        translation = None
        if not HAN.search(question):
            translation = translate(question, default_lexicon(), snap.pinyin(), snap.document_frequencies)
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
            found = json.loads(row.sentences) if row.sentences is not None else sentence_spans(row.text)
            spans = [(s, e) for s, e, _ in found]
            scores = sentence_scores(
                question, [row.text[s:e] for s, e in spans], query_terms, idf, [n for _, _, n in found]
            )
            best = int(np.argmax(scores))
            results.append(spans[best])
            if len(spans) > 1 and scores[best] == 0.0:
                undecided.append((i, spans))
        return results, undecided

    # ---------- browsing (bot buttons, /sources, /about) ----------
    def passages(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        return self._snapshot.rows(ids)

    def context(self, passage_id: int, before: int = 1, after: int = 1) -> list[PassageRow]:
        """The passage with its neighbours in the same article, in reading order."""
        snap = self._snapshot
        row = snap.rows([passage_id]).get(passage_id)
        if row is None:
            return []
        ids = snap.neighbours(row.article_id, row.ordinal, before, after)
        rows = snap.rows(ids)
        return [rows[i] for i in ids if i in rows]

    def articles(self) -> list[dict[str, Any]]:
        snap = self._snapshot
        with snap.lock:
            return list(
                snap.db.query(
                    "select id, path, title, source, author, date, url, lang, passages from articles order by date, id"
                )
            )


def _id_array(ids: Sequence[int]) -> str:
    """Ids as one JSON array parameter for `json_each`."""
    return "[" + ",".join(str(int(i)) for i in ids) + "]"
