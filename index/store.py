"""The SQLite side of an index version, through sqlite-utils.

Tables: `meta` (model, dimension, build facts), `articles` (path, content hash, metadata),
`passages` (text, position, segmented terms and the embedding, so FAISS can be rebuilt
without re-embedding) and `passages_fts`, an FTS5 index over the segmented terms kept in
sync by triggers. Passage row ids are the FAISS ids and never get reused (AUTOINCREMENT),
so a stale id from an old version can only miss, never point at another passage.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from corpus.model import Article, Passage

SCHEMA_VERSION = 1

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
    embedding BLOB NOT NULL
)
"""


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
    """Consistency checks used by tests and `index check`: SQLite integrity, FTS and FAISS ids."""
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
    orphans = db.execute("select count(*) from passages where article_id not in (select id from articles)").fetchone()
    if orphans[0]:
        problems.append(f"{orphans[0]} passages without an article")
    return problems
