"""The embedded backend: one immutable SQLite + FAISS version per build (`index.publish`).

A reader answers from one published version, so a build that publishes mid-question can
never mix versions; the retriever swaps readers between questions. Lexical search is BM25
(FTS5's formula) scored in numpy from the postings `index.store.write_bm25` stores
(`index.bm25`); dense search is FAISS inner product over normalised vectors.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index import overview, publish, store, vectors
from index.backends.base import (
    CopyRow,
    IndexBackend,
    IndexReader,
    PassageRow,
    Progress,
    RebuildRequiredError,
    require_model,
)
from index.bm25 import Postings
from index.build import BuildReport, build_index
from index.embedder import Embedder

# Fixed SQL texts, so each is compiled once per connection and reused from sqlite3's statement
# cache: the ids travel as one JSON array parameter (`json_each`), not as a variable number
# of "?" placeholders (a new statement for every candidate count).
_ROW_SQL = """
select p.id, p.article_id, p.ordinal, p.section, p.paragraph, p.paragraph_end, p.text, p.terms,
       p.embedding, a.title, a.source, a.date, a.url, p.sentences
from passages p join articles a on a.id = p.article_id
where p.id in (select value from json_each(?))
"""
# Every passage's article, grouped (a scan of the (article_id, ordinal) index, not of the rows).
_ARTICLE_MAP_SQL = "select article_id, group_concat(id, ' ') from passages group by article_id"
# Fusion needs only the embeddings of the candidates; full rows are read for the top k. (No
# join with articles: a build deletes a passage with its article, and `index check` verifies
# it; the join cost a random B-tree lookup per candidate.)
_EMBEDDING_SQL = "select id, embedding from passages where id in (select value from json_each(?))"
_BM25_DF_SQL = "select term, df from bm25_terms where term in (select value from json_each(?))"
_BM25_POSTINGS_SQL = "select term, top, docs, weights from bm25_terms where term in (select value from json_each(?))"
_NEIGHBOURS_SQL = "select id from passages where article_id = ? and ordinal between ? and ? order by ordinal"
_ARTICLES_SQL = "select id, path, title, source, author, date, url, lang, passages from articles order by date, id"
# The whole group of every asked passage that has one, and the asked passages whose article has
# other URLs (group 0), with what a citation needs.
_COPIES_SQL = """
select g.group_id, p.id, p.article_id, a.source, a.date, a.title, a.url
from passage_groups g join passages p on p.id = g.passage_id join articles a on a.id = p.article_id
where g.group_id in (select group_id from passage_groups where passage_id in (select value from json_each(?1)))
union all
select 0, p.id, p.article_id, a.source, a.date, a.title, a.url
from passages p join articles a on a.id = p.article_id
where p.id in (select value from json_each(?1))
  and not exists (select 1 from passage_groups g where g.passage_id = p.id)
  and exists (select 1 from article_aliases al where al.article_id = p.article_id)
"""
# Passages with copies: their group (0 for a passage alone whose article has aliases).
_COPIED_SQL = """
select passage_id, group_id from passage_groups
union all
select p.id, 0 from passages p
where p.article_id in (select article_id from article_aliases)
  and not exists (select 1 from passage_groups g where g.passage_id = p.id)
"""
COPY_CACHE = 50_000  # copy groups (with their rows) a reader keeps
_ALIASES_SQL = (
    "select article_id, source, date, url from article_aliases where article_id in (select value from json_each(?))"
)


class SqliteFaissReader(IndexReader):
    """One open index version: a read-only SQLite connection (shared by threads under `lock`)
    and its FAISS index."""

    backend = "faiss"
    # Postings a question scores in full, rarest terms first; the commoner terms beyond it
    # only rescore the best candidates (`Postings.scores`). At 1M passages one common term
    # has ~300k postings; numpy scores ~50k postings per millisecond.
    bm25_budget = 100_000

    def __init__(self, version: publish.Version, ef_search: int) -> None:
        self.version = version.name
        self.path = version.path
        self.db = store.open_db(version.db_path, readonly=True)
        self.lock = threading.Lock()
        try:
            self.meta = store.get_meta(self.db)
            if self.meta.get("schema") != store.SCHEMA_VERSION:
                raise RebuildRequiredError(
                    f"the index {version.name} was built by an older version of this program: "
                    "rebuild it with `python -m index build`"
                )
            row = self.db.execute("select ids from bm25_docs where id = 1").fetchone()
            self.postings = Postings(np.frombuffer(row[0] if row else b"", dtype="<i8"))
            self.faiss = vectors.read_faiss(version.faiss_path, ef_search)
            vectors.enable_reconstruct(self.faiss)
            vectors.use_blas_for_batches()
        except BaseException:
            self.db.close()
            raise
        self.count = int(self.faiss.ntotal)
        self._df_cache: dict[str, int] = {}
        # (article ids, passage ids ascending, each one's article index), on first need
        self._article_map: tuple[list[str], np.ndarray, np.ndarray] | None = None
        self._article_map_lock = threading.Lock()
        self._copy_rows: dict[tuple[int, int], list[CopyRow]] = {}

    def close(self) -> None:
        # Under the lock: closing the connection while another thread runs a statement on it
        # crashes the process (a warm-up thread may still be reading when the bot stops).
        with self.lock:
            self.db.close()

    def _ids_query(self, sql: str, ids: Sequence[int] | Sequence[str]) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(sql, [json.dumps(list(ids))]).fetchall()

    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        if not ids:
            return {}
        out = {}
        for r in self._ids_query(_ROW_SQL, [int(i) for i in ids]):
            out[r[0]] = PassageRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], np.frombuffer(r[8], dtype=np.float32), *r[9:]
            )
        return out

    def dense(self, qvecs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search for a batch of query vectors (one call per batch, not per question),
        rescored exactly: each row holds the found passages' cosines as `cosines` computes them,
        nearest first, ties by id.

        FAISS would open an OpenMP team of every core even for one query; on a busy machine
        the team's barrier then waits for descheduled threads (6x slower measured here). One
        thread instead, for this call only: the OpenMP setting is per calling thread. On one
        thread a batch is fastest through BLAS (`vectors.use_blas_for_batches`), whose sums
        differ from the one-query kernel's in the last bit; the rescoring makes a question's
        similarities, and so its answer, the same alone and in any batch.
        """
        import faiss

        queries = np.atleast_2d(qvecs).astype(np.float32)
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            _, ids = self.faiss.search(queries, max(1, min(n, self.count)))
        finally:
            faiss.omp_set_num_threads(previous)
        sims = np.full(ids.shape, -np.inf, dtype=np.float32)
        for row, (query, found) in enumerate(zip(queries, ids, strict=True)):
            held = np.sort(found[found >= 0])  # the same matrix, so the same sums, in any batch
            if not len(held):
                continue
            exact = self.faiss.reconstruct_batch(held) @ query
            order = np.lexsort((held, -exact))
            sims[row, : len(held)], ids[row, : len(held)] = exact[order], held[order]
            ids[row, len(held) :] = -1
        return sims, ids

    def article_of(self, ids: Sequence[int]) -> dict[int, str]:
        """From an in-memory map of the version (immutable): a question asks for ~200
        candidates' articles, a random row lookup each in SQLite (~2 ms at 1M passages)."""
        if not ids:
            return {}
        names, all_ids, codes = self._article_map or self._load_article_map()
        asked = np.asarray(ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(all_ids, asked), max(len(all_ids) - 1, 0))
        found = all_ids[at] == asked if len(all_ids) else np.zeros(len(asked), dtype=bool)
        return {i: names[c] for i, c in zip(asked[found].tolist(), codes[at[found]].tolist(), strict=True)}

    def _load_article_map(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Built once per reader from the (article_id, ordinal) index: ~1 s and ~25 MB at 1M
        passages (the retriever's warm-up pays it), ~10 ms at 6k."""
        with self._article_map_lock:
            if self._article_map is None:
                with self.lock:
                    groups = self.db.execute(_ARTICLE_MAP_SQL).fetchall()
                counts = np.fromiter((g[1].count(" ") + 1 for g in groups), dtype=np.int64, count=len(groups))
                ids = np.array(" ".join(g[1] for g in groups).split(), dtype=np.int64)
                codes = np.repeat(np.arange(len(groups), dtype=np.int32), counts)
                by_id = np.argsort(ids)
                self._article_map = ([g[0] for g in groups], ids[by_id], codes[by_id])
            return self._article_map

    def cosines(self, ids: Sequence[int], qvec: np.ndarray) -> dict[int, float]:
        """From the vectors FAISS holds (the same float32 as SQLite's, in memory): reading
        ~100 embeddings from SQLite rows cost ~1.5 ms at 1M passages, FAISS ~0.3 ms."""
        if not ids:
            return {}
        asked = np.asarray(ids, dtype=np.int64)
        try:
            matrix = self.faiss.reconstruct_batch(asked)
        except RuntimeError:  # an id this version does not hold (FAISS refuses the batch)
            rows = self._ids_query(_EMBEDDING_SQL, asked.tolist())
            if not rows:
                return {}
            asked = np.array([r[0] for r in rows], dtype=np.int64)
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return dict(zip(asked.tolist(), (matrix @ qvec).tolist(), strict=True))

    def lexical(self, terms: Sequence[str], limit: int) -> dict[int, float]:
        """FTS5's BM25 over our own postings: FTS5 calls its bm25() once per matching row
        (~1 µs each), and a common term matches most of a large index (~45 ms median per
        question at 1M passages). Terms are scored rarest first up to `bm25_budget` postings;
        the commoner ones, which weigh least, only rescore the candidates."""
        if not terms or limit <= 0:
            return {}
        essential, rest = self.bm25_plan(terms)
        if not essential:
            return {}
        lists = {
            term: (top, np.frombuffer(docs, dtype="<u4"), np.frombuffer(weights, dtype="<f4"))
            for term, top, docs, weights in self._ids_query(_BM25_POSTINGS_SQL, essential + rest)
        }
        scored = [lists[t] for t in essential if t in lists]
        rescored = [lists[t] for t in rest if t in lists]
        if not scored:
            return {}
        postings = self.postings
        while True:
            positions, scores, exact = postings.scores(scored, rescored, limit)
            if exact or not rescored:
                break
            # Not exact: score the next rarest term in full too, within 4x the budget.
            if sum(len(docs) for _, docs, _ in scored) + len(rescored[0][1]) > 4 * self.bm25_budget:
                break
            scored.append(rescored.pop(0))
        return dict(zip(postings.ids[positions].tolist(), scores.tolist(), strict=True))

    def bm25_plan(self, terms: Sequence[str]) -> tuple[list[str], list[str]]:
        """(essential, rest): the indexed terms, rarest first, split where their postings add up
        to more than `bm25_budget` (the rarest term is always essential). The rest leaves out
        terms in over half the passages: they weigh ~1e-6 (FTS5's IDF floor)."""
        dfs = self.document_frequencies(terms)
        present = sorted((t for t in dict.fromkeys(terms) if dfs[t] > 0), key=lambda t: dfs[t])
        essential: list[str] = []
        spent = 0
        for term in present:
            if essential and spent + dfs[term] > self.bm25_budget:
                break
            essential.append(term)
            spent += dfs[term]
        passages = len(self.postings.ids)
        return essential, [t for t in present[len(essential) :] if 2 * dfs[t] < passages]

    def document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        cache = self._df_cache  # a local reference: another thread may swap in a fresh dict
        missing = list(dict.fromkeys(t for t in terms if t not in cache))
        found: dict[str, int] = {}
        if missing:
            found = {t: 0 for t in missing} | {r[0]: int(r[1]) for r in self._ids_query(_BM25_DF_SQL, missing)}
            if len(cache) > 50_000:
                self._df_cache = {}
            self._df_cache.update(found)
        return {t: found[t] if t in found else cache.get(t, 0) for t in terms}

    def neighbours(self, article_id: str, ordinal: int, before: int, after: int) -> list[int]:
        with self.lock:
            rows = self.db.execute(_NEIGHBOURS_SQL, [article_id, ordinal - before, ordinal + after]).fetchall()
        return [r[0] for r in rows]

    def articles(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db.query(_ARTICLES_SQL))

    def vocabulary(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.db.execute("select term from bm25_terms")]

    @functools.cached_property
    def _copy_keys(self) -> dict[int, tuple[int, int]]:
        """Passage id → its key in `_copy_rows` for the passages that have `copies`: in a copy
        group (its group), or alone with an aliased article (itself). Most candidates have
        none, and then no query is needed."""
        with self.lock:
            return {
                passage_id: (group_id, 0) if group_id else (0, passage_id)
                for passage_id, group_id in self.db.execute(_COPIED_SQL)
            }

    def copies(self, ids: Sequence[int]) -> list[CopyRow]:
        keys = self._copy_keys
        wanted = {keys[i]: int(i) for i in ids if i in keys}  # one passage asks for each group
        if not wanted:
            return []
        known = self._copy_rows  # a local reference: another thread may swap in a fresh dict
        missing = [i for key, i in wanted.items() if key not in known]
        found: dict[tuple[int, int], list[CopyRow]] = {}
        if missing:
            rows = self._ids_query(_COPIES_SQL, missing)
            aliases: dict[str, list[tuple[str, str, str]]] = {}
            for article_id, *alias in self._ids_query(_ALIASES_SQL, sorted({r[2] for r in rows})):
                aliases.setdefault(article_id, []).append(tuple(alias))  # type: ignore[arg-type]
            for r in rows:
                key = (r[0], 0) if r[0] else (0, r[1])
                found.setdefault(key, []).append(CopyRow(*r, aliases=tuple(aliases.get(r[2], ()))))
            if len(known) + len(found) > COPY_CACHE:
                self._copy_rows = {}
            self._copy_rows.update(found)
        return [row for key in wanted for row in (known[key] if key in known else found.get(key, ()))]

    def duplicate_groups(self) -> int:
        with self.lock:
            return overview.duplicate_groups(self.db.conn)

    def sample_texts(self, limit: int) -> list[str]:
        with self.lock:
            top = self.db.execute("select max(id) from passages").fetchone()[0] or 0
            step = max(1, top // limit)
            ids = json.dumps(list(range(step, top + 1, step)))
            sql = "select text from passages where id in (select value from json_each(?))"
            return [r[0] for r in self.db.execute(sql, [ids])]


class SqliteFaissBackend(IndexBackend):
    """Versions of SQLite + FAISS files under `[index] dir`, published atomically."""

    name = "faiss"

    @property
    def index_dir(self) -> Path:
        return Path(self.config.index.dir)

    def stamp(self) -> Hashable:
        return publish.pointer_stamp(self.index_dir)

    def open_reader(self) -> SqliteFaissReader:
        ef_search = self.config.index.hnsw_ef_search
        reader = publish.open_current(self.index_dir, lambda version: SqliteFaissReader(version, ef_search))
        try:
            require_model(reader.meta, self.config, str(self.index_dir))
        except RebuildRequiredError:
            reader.close()
            raise
        return reader

    def build(
        self,
        *,
        full: bool = False,
        embedder: Embedder | None = None,
        progress: Progress | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> BuildReport:
        return build_index(self.config, full=full, embedder=embedder, progress=progress, on_wait=on_wait)

    def check(self) -> tuple[str, list[str]]:
        version = publish.require_current(self.index_dir)
        db = store.open_db(version.db_path, readonly=True)
        try:
            return version.name, store.integrity_problems(db, vectors.faiss_ids(vectors.read_faiss(version.faiss_path)))
        finally:
            db.close()

    def describe(self) -> dict[str, Any]:
        version = publish.require_current(self.index_dir)
        db = store.open_db(version.db_path, readonly=True)
        try:
            return {"backend": self.name, "location": str(self.index_dir), "meta": store.get_meta(db)}
        finally:
            db.close()
