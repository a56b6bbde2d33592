"""Hybrid retrieval over a published index version.

A question is answered from one immutable snapshot (SQLite + FAISS of one version), so a
rebuild that publishes mid-question can never mix versions; `refresh()` swaps snapshots
between questions. Lexical: FTS5 bm25 over the same jieba/OpenCC terms the index stored,
every term quoted (no FTS or SQL syntax can be injected). Dense: FAISS inner product over
normalised vectors. The two are fused by `retrieval.fusion`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpus.splitter import split_sentences, strip_span
from index import publish, store, vectors
from index.build import model_key
from index.embedder import Embedder, load_embedder
from index.text import clean, terms
from retrieval.fusion import fuse
from retrieval.highlight import sentence_scores
from retrieval.model import Answer, Hit, format_citation
from settings import Config

# Fixed SQL texts, so each is compiled once per connection and reused from sqlite3's statement
# cache: the ids travel as one JSON array parameter (`json_each`), not as a variable number
# of "?" placeholders (a new statement for every candidate count).
_ROW_SQL = """
select p.id, p.article_id, p.ordinal, p.section, p.paragraph, p.paragraph_end, p.text, p.terms,
       p.embedding, a.title, a.source, a.date, a.url
from passages p join articles a on a.id = p.article_id
where p.id in (select value from json_each(?))
"""
# Fusion needs only the embeddings of the candidates; full rows are read for the top k.
_EMBEDDING_SQL = """
select p.id, p.embedding
from passages p join articles a on a.id = p.article_id
where p.id in (select value from json_each(?))
"""


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


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


class _Snapshot:
    """One open index version: read-only SQLite connection + FAISS index."""

    def __init__(self, version: publish.Version, ef_search: int) -> None:
        self.version = version
        self.db = store.open_db(version.db_path, readonly=True)
        self.meta = store.get_meta(self.db)
        self.faiss = vectors.read_faiss(version.faiss_path, ef_search)
        self.count = int(self.faiss.ntotal)
        self.lock = threading.Lock()
        self._df_cache: dict[str, int] = {}

    def close(self) -> None:
        self.db.close()

    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        if not ids:
            return {}
        with self.lock:
            rows = self.db.execute(_ROW_SQL, [_id_array(ids)]).fetchall()
        out = {}
        for r in rows:
            out[r[0]] = PassageRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], np.frombuffer(r[8], dtype=np.float32), *r[9:]
            )
        return out

    def dense(self, qvec: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search for one query vector: (similarities, ids), each of shape (1, n).

        FAISS would open an OpenMP team of every core even for one query; on a busy machine
        the team's barrier then waits for descheduled threads (6x slower measured here). One
        thread instead, for this call only: the OpenMP setting is per calling thread.
        """
        import faiss

        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.faiss.search(qvec.reshape(1, -1).astype(np.float32), n)
        finally:
            faiss.omp_set_num_threads(previous)

    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Passage id → embedding, for the ids that name a passage (of an existing article)."""
        if not ids:
            return {}
        with self.lock:
            rows = self.db.execute(_EMBEDDING_SQL, [_id_array(ids)]).fetchall()
        return {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows}

    def bm25(self, query_terms: Sequence[str], limit: int) -> dict[int, float]:
        """Passage id → BM25 (higher is better) for passages matching any term."""
        if not query_terms:
            return {}
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in query_terms)
        sql = (
            "select rowid, bm25(passages_fts) from passages_fts where passages_fts match ? "
            "order by bm25(passages_fts) limit ?"
        )
        with self.lock:
            rows = self.db.execute(sql, [match, limit]).fetchall()
        return {int(r[0]): -float(r[1]) for r in rows}

    def document_frequencies(self, query_terms: Sequence[str]) -> dict[str, int]:
        cache = self._df_cache  # a local reference: another thread may swap in a fresh dict
        missing = [t for t in query_terms if t not in cache]
        found: dict[str, int] = {}
        if missing:
            with self.lock:
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
        version = publish.require_current(self.index_dir)
        snapshot = _Snapshot(version, self.config.index.hnsw_ef_search)
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

    def warm_up(self) -> None:
        """Load the model and dictionaries now rather than on the first question."""
        self.answer("预热 warm up", k=1)

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
        """Answer a batch: one model call embeds every question."""
        k = self.clamp_k(k)
        snapshot = self._snapshot
        cleaned = [clean(q)[: self.config.retrieval.max_query_chars] for q in questions]
        todo = [i for i, q in enumerate(cleaned) if q]
        answers = [Answer(question=q, answered=False, version=snapshot.version.name) for q in questions]
        if not todo or snapshot.count == 0:
            return answers
        query_vectors = self.embedder.encode_queries([cleaned[i] for i in todo])
        for row, i in enumerate(todo):
            answers[i] = self._answer_one(snapshot, questions[i], cleaned[i], query_vectors[row], k)
        return answers

    def _answer_one(self, snap: _Snapshot, original: str, question: str, qvec: np.ndarray, k: int) -> Answer:
        cfg = self.config.retrieval
        query_terms = list(dict.fromkeys(terms(question)))
        lexical = snap.bm25(query_terms, cfg.candidates)
        n_dense = min(cfg.candidates, snap.count)
        sims, ids = snap.dense(qvec, n_dense)
        dense = {int(i): float(s) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0}
        candidate_ids = list(dict.fromkeys([*dense, *lexical]))
        embeddings = snap.embeddings(candidate_ids)
        candidate_ids = [i for i in candidate_ids if i in embeddings]
        if not candidate_ids:
            return Answer(question=original, answered=False, version=snap.version.name)
        dense_scores = np.array(
            [dense[i] if i in dense else float(embeddings[i] @ qvec) for i in candidate_ids]
        )
        lexical_scores = np.array([lexical.get(i, 0.0) for i in candidate_ids])
        fused = fuse(dense_scores, lexical_scores, cfg.dense_weight, cfg.fusion)
        order = np.argsort(-fused, kind="stable")[:k]
        idf = self._idf(snap, query_terms)
        rows = snap.rows([candidate_ids[position] for position in order])
        chosen = [rows[candidate_ids[position]] for position in order]
        highlights = self._best_sentences(question, chosen, query_terms, idf, qvec)
        hits = []
        for rank, (position, row, (start, end)) in enumerate(zip(order, chosen, highlights, strict=True), start=1):
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
                )
            )
        top = rows[candidate_ids[order[0]]]
        coverage = self._coverage(top.terms, query_terms, idf)
        answered = self._is_answered(float(dense_scores[order[0]]), coverage, question)
        return Answer(
            question=original, answered=answered, hits=tuple(hits), version=snap.version.name, coverage=coverage
        )

    # ---------- scoring helpers ----------
    @staticmethod
    def _idf(snap: _Snapshot, query_terms: Sequence[str]) -> dict[str, float]:
        n = max(snap.count, 1)
        dfs = snap.document_frequencies(query_terms)
        return {t: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for t, df in dfs.items()}

    @staticmethod
    def _coverage(passage_terms: str, query_terms: Sequence[str], idf: dict[str, float]) -> float:
        """IDF-weighted share of the question's terms that occur in the passage."""
        if not query_terms:
            return 0.0
        present = set(passage_terms.split())
        total = sum(idf[t] for t in query_terms)
        return sum(idf[t] for t in query_terms if t in present) / total if total else 0.0

    def _is_answered(self, top_dense: float, coverage: float, question: str) -> bool:
        """Whether the best passage really covers the question (thresholds chosen on dev data).

        A Chinese question about the articles shares words with the passage that answers it,
        so lexical coverage can vouch for a modest cosine; a question in another language can
        only be judged by the (cross-lingual) cosine.
        """
        cfg = self.config.retrieval
        if not _CJK.search(question):
            return top_dense >= cfg.min_dense
        return (
            top_dense >= cfg.min_dense + 0.15
            or (coverage >= cfg.min_lexical_coverage and top_dense >= cfg.min_dense / 2)
            or (coverage >= cfg.min_lexical_coverage / 2 and top_dense >= cfg.min_dense)
        )

    def _best_sentences(
        self,
        question: str,
        rows: Sequence[PassageRow],
        query_terms: Sequence[str],
        idf: dict[str, float],
        qvec: np.ndarray,
    ) -> list[tuple[int, int]]:
        """For each passage, the sentence that best answers the question (offsets into its text).

        Term overlap with answer cues decides when the question shares words with the passage
        (`retrieval.highlight`). Passages sharing no term with it (e.g. for an English
        question) are decided by sentence embeddings, all embedded in one model call.
        """
        results: list[tuple[int, int]] = []
        pending: list[tuple[int, list[tuple[int, int]]]] = []
        for i, row in enumerate(rows):
            spans = [strip_span(row.text, s, e) for s, e in split_sentences(row.text)]
            spans = [(s, e) for s, e in spans if e > s] or [(0, len(row.text))]
            scores = sentence_scores(question, [row.text[s:e] for s, e in spans], query_terms, idf)
            best = int(np.argmax(scores))
            results.append(spans[best])
            if len(spans) > 1 and scores[best] == 0.0:
                pending.append((i, spans))
        if pending:
            texts = [rows[i].text[s:e] for i, spans in pending for s, e in spans]
            sims = self.embedder.encode_documents(texts) @ qvec
            offset = 0
            for i, spans in pending:
                results[i] = spans[int(np.argmax(sims[offset : offset + len(spans)]))]
                offset += len(spans)
        return results

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

