"""Incremental index build: corpus → passages → embeddings → SQLite + FAISS → publish.

Incremental by content hash: a build starts from a copy of the live database, keeps the
rows (and embeddings) of unchanged articles, replaces changed ones, drops deleted ones, and
embeds only new passages. A changed model or splitter re-embeds everything. When nothing
changed, nothing is published and the model is never loaded.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corpus import Article, Skipped, scan_corpus, split_article
from index import dedup, publish, store, vectors
from index.embedder import Embedder, load_embedder, loads_on_first_use
from index.text import BackgroundSegmenter, segment_for_index
from index.usem3_torch import default_threads
from settings import Config

log = logging.getLogger(__name__)

SPLITTER_VERSION = 1
# Characters of passage text embedded per call (a token budget, roughly: ~1 token per Chinese
# character): large enough to keep the model busy, small enough for a smooth progress bar and
# bounded memory. The model packs each call into its own token-budget micro-batches.
EMBED_CHARS = 60_000

Progress = Callable[[int, int], None]


class BuildError(Exception):
    """The build cannot run (e.g. no corpus directory); the message is for the operator.

    `skipped` names the corpus files that could not be read, when it got that far.
    """

    def __init__(self, message: str, skipped: tuple[Skipped, ...] = ()) -> None:
        super().__init__(message)
        self.skipped = skipped


@dataclass(frozen=True)
class BuildReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: tuple[Skipped, ...] = ()
    passages: int = 0
    embedded: int = 0
    seconds: float = 0.0
    version: str | None = None
    model: str = ""
    faiss: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def published(self) -> bool:
        return self.version is not None

    def summary(self) -> str:
        state = f"published {self.version}" if self.published else "nothing changed, live index kept"
        return (
            f"articles: {self.added} added, {self.updated} updated, {self.removed} removed, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped; {self.passages} passages "
            f"({self.embedded} embedded); {self.seconds:.1f}s; {state}" + "".join(f"; {n}" for n in self.notes)
        )


def model_key(config: Config) -> str:
    """What must match for stored embeddings to be reusable."""
    return f"{config.model.name}|{config.model.document_prompt}"


def faiss_key(config: Config, kind: str) -> dict[str, Any]:
    """The settings a FAISS index of `kind` is built with: when they change, a build with no
    article changes still rebuilds and publishes the vectors index (no re-embedding)."""
    if kind == "hnsw":
        return {"kind": kind, "hnsw_m": config.index.hnsw_m}
    if kind == "ivf":
        return {"kind": kind, "ivf_nprobe": config.index.ivf_nprobe}
    return {"kind": kind}


def splitter_key(config: Config) -> dict[str, int]:
    return {"version": SPLITTER_VERSION, "max_chars": config.corpus.max_chars, "min_chars": config.corpus.min_chars}


def build_index(
    config: Config,
    *,
    full: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
    after_publish: Callable[[publish.Version], None] | None = None,
) -> BuildReport:
    """Build and publish a new index version from `config.corpus.dir` into `config.index.dir`.

    `after_publish(live version)` runs while the build lock is still held, after publishing
    and also when nothing changed (another store mirroring the catalog, e.g. Milvus, then
    catches up even after a killed run; `index.backends.milvus`)."""
    started = time.perf_counter()
    corpus_dir = Path(config.corpus.dir)
    if not corpus_dir.is_dir():
        raise BuildError(f"corpus directory not found: {corpus_dir}")
    index_dir = Path(config.index.dir)
    with publish.build_lock(index_dir, config.index.lock_timeout, on_wait):
        publish.clean_old_versions(index_dir, config.index.keep_versions)
        live = publish.current_version(index_dir)
        old_hashes: dict[str, str] = {}
        reuse = False
        if live is not None and not full:
            db = store.open_db(live.db_path, readonly=True)
            try:
                meta = store.get_meta(db)
                reuse = (
                    meta.get("schema") == store.SCHEMA_VERSION
                    and meta.get("model_key") == model_key(config)
                    and meta.get("splitter") == splitter_key(config)
                )
                if reuse:
                    old_hashes = store.article_hashes(db)
            except sqlite3.DatabaseError as exc:  # a damaged live version: rebuild, don't crash
                log.warning("live index %s is unreadable (%s); rebuilding it from scratch", live.name, exc)
                reuse, old_hashes = False, {}
            finally:
                db.close()
        # Files whose bytes match the live index are not even parsed.
        scan = scan_corpus(corpus_dir, old_hashes)
        skipped = scan.skipped
        if not scan.articles and not scan.unchanged:
            raise BuildError(f"no readable .md, .txt or .html articles in {corpus_dir}", tuple(skipped))
        changed = scan.articles
        present = {a.id for a in changed} | set(scan.unchanged)
        removed = [aid for aid in old_hashes if aid not in present]
        added = sum(1 for a in changed if a.id not in old_hashes)
        counts = {
            "added": added,
            "updated": len(changed) - added,
            "removed": len(removed),
            "unchanged": len(scan.unchanged),
            "skipped": tuple(skipped),
        }
        notes: tuple[str, ...] = ()
        if reuse and live is not None and not changed and not removed:
            db = store.open_db(live.db_path, readonly=True)
            try:
                total = store.passage_count(db)
                meta = store.get_meta(db)
            finally:
                db.close()
            if meta.get("faiss_key") == faiss_key(config, vectors.choose_kind(config.index, total)):
                if after_publish is not None:
                    after_publish(live)
                return BuildReport(
                    **counts,
                    passages=total,
                    seconds=time.perf_counter() - started,
                    model=config.model.name,
                    faiss=str(meta.get("faiss", "")),
                )
            # Same articles, other [index] FAISS settings: rebuild the vectors index only.
            notes = ("FAISS index rebuilt for the current [index] settings",)
        name, staging = publish.new_version_dir(index_dir)
        db_path = staging / publish.DB_FILE
        if reuse and live is not None:
            store.copy_database(live.db_path, db_path)
        db = store.open_db(db_path)
        try:
            # The staging database is private until `publish` fsyncs it; without this every
            # sqlite-utils insert commits (and fsyncs) on its own: ~10 ms per article.
            db.execute("PRAGMA synchronous = OFF")
            store.create_schema(db)
            if not reuse and live is not None:
                store.continue_ids(db, live.db_path)
            embedded, dim = _write_articles(db, config, changed, removed, embedder, progress)
            grouped = dedup.update_groups(db)  # near-duplicate groups of the new and removed passages only
            if grouped.groups_touched:
                notes = (*notes, f"{grouped.groups_touched} copy group(s) updated")
            dedup.record_aliases(db, changed)
            store.write_bm25(db)
            if dim is None:
                dim = int(store.get_meta(db).get("dim", 0)) or (embedder.dim if embedder else 0)
            total = store.passage_count(db)
            kind = vectors.choose_kind(config.index, total)
            faiss_index = vectors.build_faiss(store.iter_embeddings(db), dim, kind, config.index)
            vectors.write_faiss(faiss_index, staging / publish.FAISS_FILE)
            store.set_meta(
                db,
                {
                    "schema": store.SCHEMA_VERSION,
                    "model": config.model.name,
                    "model_key": model_key(config),
                    "query_prompt": config.model.query_prompt,
                    "dim": dim,
                    "splitter": splitter_key(config),
                    "faiss": kind,
                    "faiss_key": faiss_key(config, kind),
                    "version": name,
                    "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "articles": db["articles"].count,
                    "passages": total,
                },
            )
            db.conn.commit()
            db.execute("pragma optimize")
        finally:
            db.close()
        version = publish.publish(index_dir, name, staging)
        publish.clean_old_versions(index_dir, config.index.keep_versions)
        if after_publish is not None:
            after_publish(version)
        return BuildReport(
            **counts,
            passages=total,
            embedded=embedded,
            seconds=time.perf_counter() - started,
            version=version.name,
            model=config.model.name,
            faiss=kind,
            notes=notes,
        )


def _write_articles(
    db: store.sqlite_utils.Database,
    config: Config,
    changed: list[Article],
    removed: list[str],
    embedder: Embedder | None,
    progress: Progress | None,
) -> tuple[int, int | None]:
    """Delete removed/changed articles, embed and insert the changed ones. Returns (embedded, dim)."""
    with db.conn:
        for article_id in removed:
            store.delete_article(db, article_id)
        for article in changed:
            store.delete_article(db, article.id)
    plans = [(a, split_article(a, config.corpus.max_chars, config.corpus.min_chars)) for a in changed]
    total = sum(len(p) for _, p in plans)
    # Articles without passages (e.g. headings only) are still recorded below, or every
    # later build would see them as new and publish again.
    matrix = np.zeros((0, 0), dtype=np.float32)
    to_segment = [f"{p.section} {p.text}" for _, passages in plans for p in passages]
    model = (embedder or load_embedder(config.model)) if total else None
    segmenter = None
    if model is not None and loads_on_first_use(model) and default_threads() > 1:
        # Loading the model is seconds of single-threaded imports: jieba (its dictionary, then
        # the passages) runs meanwhile in a child process on another core.
        segmenter = BackgroundSegmenter(to_segment)
    try:
        if model is not None:
            if progress:
                progress(0, total)
            # Embed across article boundaries in chunks of about EMBED_CHARS characters (few big
            # calls are faster than many small ones), then insert article by article.
            texts = [p.text for _, passages in plans for p in passages]
            chunks: list[np.ndarray] = []
            start = 0
            while start < total:
                end, chars = start, 0
                while end < total and (end == start or chars + len(texts[end]) <= EMBED_CHARS):
                    chars += len(texts[end])
                    end += 1
                chunks.append(model.encode_documents(texts[start:end]))
                start = end
                if progress:
                    progress(start, total)
            matrix = np.concatenate(chunks)
        all_terms = segmenter.result() if segmenter else [segment_for_index(t) for t in to_segment]
    finally:
        if segmenter:
            segmenter.close()
    offset = 0
    with db.conn:
        for article, passages in plans:
            n = len(passages)
            store.insert_article(db, article, passages, all_terms[offset : offset + n], matrix[offset : offset + n])
            offset += n
    return total, (int(matrix.shape[1]) if total else None)
