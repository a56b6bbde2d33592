"""The SQLite side of an index version, through sqlite-utils.

Tables: `meta` (model, dimension, build facts), `articles` (path, content hash, metadata),
`passages` (text, position, segmented terms, the embedding, so FAISS can be rebuilt
without re-embedding, and the sentences highlighting chooses from as JSON
`[[start, end, normalised text], …]`, `index.text.sentence_spans`, computed once here instead of
for every hit of every question) and `passages_fts`, an FTS5 index over the segmented terms kept in
sync by triggers. Passage row ids are the FAISS ids and never get reused (AUTOINCREMENT),
so a stale id from an old version can only miss, never point at another passage.

`bm25_terms` / `bm25_docs` hold the same terms once more as compact postings (numpy arrays
in blobs), rewritten whole by `write_bm25` at every build: retrieval scores BM25 from them
in numpy, because FTS5's `bm25()` costs about a microsecond per matching row and a common
term matches most rows of a large index (see `index.backends.sqlite_faiss`).
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from corpus.model import Article, Passage
from index import dedup
from index.text import sentence_spans

# 2: `passages.sentences`. The next `index build` after an upgrade rebuilds an older index in
# full (`index.build`); until then the retriever reads it and splits sentences per question.
SCHEMA_VERSION = 2

_PASSAGES_SQL = """
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES articles(id),
    ordinal INTEGER NOT NULL,
    section TEXT NOT NULL,
    paragraph INTEGER NOT NULL,
    paragraph_end INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    terms TEXT NOT NULL,
    embedding BLOB NOT NULL,
    sentences TEXT NOT NULL
)
"""


# BM25 postings, one row per term: `docs` are ascending positions (uint32) into `bm25_docs.ids`
# (the passage ids in ascending order, int64), `weights` the term's BM25 weight in each of those
# passages (float32) and `top` the largest of them. Weights are final: N, the average length
# and every IDF are fixed within a version, and a build rewrites the postings whole.
_BM25_SQL = (
    """
CREATE TABLE IF NOT EXISTS bm25_terms (
    term TEXT PRIMARY KEY,
    df INTEGER NOT NULL,
    top REAL NOT NULL,
    docs BLOB NOT NULL,
    weights BLOB NOT NULL
)
""",
    "CREATE TABLE IF NOT EXISTS bm25_docs (id INTEGER PRIMARY KEY CHECK (id = 1), ids BLOB NOT NULL)",
)
# FTS5's bm25() parameters and IDF floor, so the weights are the ones FTS5 would compute.
BM25_K1 = 1.2
BM25_B = 0.75
BM25_MIN_IDF = 1e-6


def bm25_idf(passages: int, df: np.ndarray) -> np.ndarray:
    """FTS5's IDF, floored at 1e-6 (a term in over half of the passages)."""
    return np.maximum(np.log((passages - df + 0.5) / (df + 0.5)), BM25_MIN_IDF)


def _readonly_uri(path: Path) -> str:
    """A read-only SQLite URI; `as_uri` percent-encodes "?", "#" and "%" in directory names."""
    return f"{Path(path).resolve().as_uri()}?mode=ro"


def open_db(path: Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open a version's database. Readers open read-only and may share it across threads."""
    if readonly:
        conn = sqlite3.connect(_readonly_uri(path), uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
    else:
        conn = sqlite3.connect(str(path))
    return sqlite_utils.Database(conn)


def create_schema(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["articles"].create(
        {
            "id": str,
            "path": str,
            "title": str,
            "source": str,
            "author": str,
            "date": str,
            "url": str,
            "lang": str,
            "content_hash": str,
            "passages": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db.execute(_PASSAGES_SQL)
    db["passages"].create_index(["article_id", "ordinal"], if_not_exists=True)
    if "passages_fts" not in db.table_names():
        db["passages"].enable_fts(["terms"], create_triggers=True, tokenize="unicode61")
    # Per-term document frequencies for IDF weights (question coverage, highlighting).
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts_vocab USING fts5vocab(passages_fts, 'row')")
    # Copies: near-duplicate passages across articles, articles under other URLs (`index.dedup`).
    for sql in dedup.GROUP_TABLES_SQL:
        db.execute(sql)


def write_bm25(db: sqlite_utils.Database) -> None:
    """Rewrite the BM25 postings from `passages.terms` (a term is one space-separated item, as
    `index.text.terms` yields them for questions too; a passage's length is its number of terms).

    Whole, not incrementally: every weight depends on the passage count and average length.
    ~0.15 s per 6k passages, ~20 s per 1M."""
    conn = db.conn
    vocab: dict[str, int] = {}
    code = vocab.setdefault
    codes: array[int] = array("I")
    ids: array[int] = array("q")
    lengths: array[int] = array("I")
    for passage_id, text in conn.execute("select id, terms from passages order by id"):
        items = text.split()
        ids.append(passage_id)
        lengths.append(len(items))
        codes.extend([code(w, len(vocab)) for w in items])
    n = len(ids)
    length = np.frombuffer(lengths, dtype=np.uint32).astype(np.float64)
    # One sort of (term code, position) pairs groups each term's postings in passage order;
    # runs of equal pairs are the term frequencies.
    pairs = (np.frombuffer(codes, dtype=np.uint32).astype(np.uint64) << np.uint64(32)) | np.repeat(
        np.arange(n, dtype=np.uint64), np.frombuffer(lengths, dtype=np.uint32)
    )
    pairs.sort()
    starts = np.flatnonzero(np.concatenate([[True], pairs[1:] != pairs[:-1]]))[: len(pairs)]
    tf = np.diff(np.append(starts, len(pairs))).astype(np.float64)
    pairs = pairs[starts]
    docs = (pairs & np.uint64(0xFFFFFFFF)).astype("<u4")
    term_codes = (pairs >> np.uint64(32)).astype(np.int64)
    del pairs, starts
    firsts = np.flatnonzero(np.concatenate([[True], term_codes[1:] != term_codes[:-1]]))[: len(term_codes)]
    ends = np.append(firsts[1:], len(term_codes))[: len(firsts)]
    dfs = ends - firsts
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / max(float(length.mean()) if n else 1.0, 1e-9))
    idf = np.repeat(bm25_idf(n, dfs.astype(np.float64)), dfs)
    weights = (idf * tf * (BM25_K1 + 1.0) / (tf + norm[docs])).astype("<f4")
    del tf, idf
    words = list(vocab)
    with conn:
        for sql in _BM25_SQL:  # a database from before the postings existed
            conn.execute(sql)
        conn.execute("delete from bm25_terms")
        conn.execute("delete from bm25_docs")
        conn.executemany(
            "insert into bm25_terms (term, df, top, docs, weights) values (?, ?, ?, ?, ?)",
            (
                (words[term_codes[s]], e - s, float(weights[s:e].max()), docs[s:e].tobytes(), weights[s:e].tobytes())
                for s, e in zip(firsts.tolist(), ends.tolist(), strict=True)
            ),
        )
        conn.execute("insert into bm25_docs (id, ids) values (1, ?)", [np.asarray(ids, dtype="<i8").tobytes()])


def get_meta(db: sqlite_utils.Database) -> dict[str, Any]:
    if "meta" not in db.table_names():
        return {}
    return {row["key"]: json.loads(row["value"]) for row in db["meta"].rows}


def set_meta(db: sqlite_utils.Database, values: dict[str, Any]) -> None:
    db["meta"].upsert_all(({"key": k, "value": json.dumps(v)} for k, v in values.items()), pk="key")


def article_hashes(db: sqlite_utils.Database) -> dict[str, str]:
    if "articles" not in db.table_names():
        return {}
    return {row["id"]: row["content_hash"] for row in db.query("select id, content_hash from articles")}


def delete_article(db: sqlite_utils.Database, article_id: str) -> None:
    db.execute("delete from passages where article_id = ?", [article_id])
    db.execute("delete from articles where id = ?", [article_id])


def insert_article(
    db: sqlite_utils.Database, article: Article, passages: list[Passage], terms: list[str], vectors: np.ndarray
) -> None:
    db["articles"].insert(
        {
            "id": article.id,
            "path": article.path,
            "title": article.title,
            "source": article.source,
            "author": article.author,
            "date": article.date,
            "url": article.url,
            "lang": article.lang,
            "content_hash": article.content_hash,
            "passages": len(passages),
        },
        replace=True,
    )
    db["passages"].insert_all(
        {
            "article_id": p.article_id,
            "ordinal": p.ordinal,
            "section": p.section,
            "paragraph": p.paragraph,
            "paragraph_end": p.paragraph_end,
            "text": p.text,
            "start": p.start,
            "end": p.end,
            "terms": t,
            "embedding": np.asarray(v, dtype=np.float32).tobytes(),
            "sentences": json.dumps(sentence_spans(p.text), ensure_ascii=False),
        }
        for p, t, v in zip(passages, terms, vectors, strict=True)
    )


def iter_embeddings(db: sqlite_utils.Database, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) in batches, for (re)building FAISS without the model."""
    last = -1
    while True:
        rows = list(
            db.execute("select id, embedding from passages where id > ? order by id limit ?", [last, batch]).fetchall()
        )
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        yield ids, vectors
        last = int(ids[-1])


def passage_count(db: sqlite_utils.Database) -> int:
    return db["passages"].count if "passages" in db.table_names() else 0


def continue_ids(db: sqlite_utils.Database, previous: Path) -> None:
    """Start a fresh database's passage ids after `previous`'s (a full rebuild or a model
    change), so an id never names two different passages across versions."""
    src = open_db(previous, readonly=True)
    try:
        row = src.execute("select seq from sqlite_sequence where name = 'passages'").fetchone()
    except sqlite3.DatabaseError:
        row = None  # not a database of ours: nothing to continue from
    finally:
        src.close()
    if row:
        db.execute("delete from sqlite_sequence where name = 'passages'")
        db.execute("insert into sqlite_sequence(name, seq) values ('passages', ?)", [int(row[0])])


def copy_database(source: Path, target: Path) -> None:
    """Copy a published database for an incremental build (SQLite backup: consistent, fast)."""
    src = sqlite3.connect(_readonly_uri(source), uri=True)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def integrity_problems(db: sqlite_utils.Database, faiss_ids: Iterable[int]) -> list[str]:
    """Consistency checks used by tests and `index check`: SQLite integrity, FTS, FAISS ids, BM25
    postings and the copy groups."""
    problems = []
    result = db.execute("pragma integrity_check").fetchone()[0]
    if result != "ok":
        problems.append(f"sqlite integrity_check: {result}")
    ids = {r[0] for r in db.execute("select id from passages")}
    fts_ids = {r[0] for r in db.execute("select rowid from passages_fts")}
    if ids != fts_ids:
        problems.append(f"FTS rows differ from passages ({len(fts_ids)} vs {len(ids)})")
    faiss_set = set(int(i) for i in faiss_ids)
    if faiss_set != ids:
        problems.append(f"FAISS ids differ from passage ids ({len(faiss_set)} vs {len(ids)})")
    if "bm25_docs" in db.table_names():
        row = db.execute("select ids from bm25_docs where id = 1").fetchone()
        bm25_ids = np.frombuffer(row[0], dtype="<i8").tolist() if row else []
        if bm25_ids != sorted(ids):
            problems.append(f"BM25 postings cover other passages ({len(bm25_ids)} vs {len(ids)})")
    orphans = db.execute("select count(*) from passages where article_id not in (select id from articles)").fetchone()
    if orphans[0]:
        problems.append(f"{orphans[0]} passages without an article")
    if "passage_groups" in db.table_names():
        problems.extend(dedup.integrity_problems(db.conn))
    return problems
