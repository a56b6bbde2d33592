"""Bring Milvus up to date with a published catalog version (SQLite, `index.build`).

Runs inside the build lock (`build_index(after_publish=…)`), so one sync at a time. Readers
never see an article missing or half replaced, because a passage is visible only while its
`tag` (the catalog version that wrote it) equals its article row's `tag`:

1. a marker ("sync" and one "sync:<article id>" row per article to touch) is written first;
2. the document frequencies of every term the touched passages (old and new) hold are set
   from the catalog (before the passages go, so a killed run loses no term);
3. per changed or added article: its new passages are upserted (invisible: new tag), then its
   article row (the flip: now only they are visible), then its passages of any other tag are
   deleted; a removed article's row goes first, then its passages;
4. the copy groups are diffed against the catalog, "live" is written, the marker deleted.

Changed means: the catalog's content hash differs from the one in Milvus, or the article is
named in a marker a killed sync left behind. A model or dimension change (or `fresh`, or a
live generation another catalog filled) fills a new generation of collections instead and
switches "live" and the aliases to it; the previous generation is dropped by the next sync
(readers still open on it keep working until then).

Only the catalog that owns the collections syncs (`milvus_owner`): it claims them first, and
checks it still owns them before it deletes anything and before it switches "live".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlite_utils

from index import publish, store
from index.backends import milvus_owner
from index.backends import milvus_store as ms
from index.backends.milvus_owner import Owner
from index.backends.milvus_store import DUMMY, Names

log = logging.getLogger(__name__)

SYNC_BATCH = 500  # passages per upsert: ~1 MB of 512-d vectors per call
PASSAGE_COLUMNS = "id, article_id, ordinal, section, paragraph, paragraph_end, text, terms, embedding, sentences"
MARKER = "sync"


@dataclass(frozen=True)
class SyncReport:
    version: str
    written: int = 0  # articles written (added, changed or repaired)
    removed: int = 0
    passages: int = 0  # passages written
    fresh: bool = False
    seconds: float = 0.0

    def note(self) -> str:
        if not self.written and not self.removed and not self.fresh:
            return "milvus: up to date"
        fresh = " into new collections" if self.fresh else ""
        return (
            f"milvus: {self.written} articles synced{fresh}, {self.removed} removed "
            f"({self.passages} passages, {self.seconds:.1f}s)"
        )


def sync(
    client: Any, prefix: str, version: publish.Version, owner: Owner, *, where: str, fresh: bool = False
) -> SyncReport:
    """Make Milvus under `prefix` show catalog `version` of `owner`; see the module docstring.
    `where` names the Milvus (redacted) in a refusal."""
    db = store.open_db(version.db_path, readonly=True)
    try:
        return _Sync(client, prefix, version, db, owner, where).run(fresh)
    finally:
        db.close()


def marker(client: Any, names: Names) -> tuple[dict[str, Any] | None, list[str]]:
    """(header, pending article ids) of a sync in progress or killed; (None, []) when none."""
    if not client.has_collection(names.meta):
        return None, []
    header = ms.get_meta(client, names, MARKER)
    rows = ms.query_all(client, names.meta, ["key"], f'key like "{MARKER}:%"')
    return header, [row["key"][len(MARKER) + 1 :] for row in rows]


class _Sync:
    def __init__(
        self,
        client: Any,
        prefix: str,
        version: publish.Version,
        db: sqlite_utils.Database,
        owner: Owner,
        where: str,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.version = version
        self.db = db
        self.tag = version.name
        self.owner = owner
        self.where = where

    def _require_owner(self) -> None:
        milvus_owner.require(self.client, Names(self.prefix), self.owner, self.where)

    def run(self, fresh: bool) -> SyncReport:
        started = time.perf_counter()
        client, catalog_meta = self.client, store.get_meta(self.db)
        dim = int(catalog_meta.get("dim") or 0)
        meta_names = Names(self.prefix)
        milvus_owner.claim(client, meta_names, self.owner, self.where)
        live = ms.get_meta(client, meta_names, "live")
        header, pending = marker(client, meta_names)
        live_generation = live["generation"] if live else None
        if header is not None and header.get("generation") != live_generation:
            pending = []  # a killed fill of new collections: dropped below, nothing to repair
        reuse = (
            not fresh
            and live is not None
            and live.get("owner") == self.owner.id  # never another catalog's ids beside ours
            and live["catalog"].get("model_key") == catalog_meta.get("model_key")
            and int(live["catalog"].get("dim") or 0) == dim
            and ms.generation_complete(client, Names(self.prefix, live_generation))
        )
        existing = ms.generations(client, self.prefix)
        for generation in existing:  # a killed fresh fill, or the one replaced by the last switch
            if generation != live_generation:
                ms.drop_generation(client, Names(self.prefix, generation))
        if reuse:
            names = Names(self.prefix, live_generation)
            ms.ensure_loaded(client, [names.of(kind) for kind in ms.KINDS])
            in_milvus = {r["id"]: r["hash"] for r in ms.query_all(client, names.articles, ["id", "hash"])}
        else:
            names = Names(self.prefix, max([*existing, live_generation or 0]) + 1)
            ms.create_generation(client, names, dim)
            in_milvus, pending = {}, []
            log.info("milvus: filling new collections %s", names.passages)
        self.names = names

        catalog = {r["id"]: r for r in self.db.query("select * from articles")}
        repair = set(pending)
        changed = [a for a, row in catalog.items() if in_milvus.get(a) != row["content_hash"] or a in repair]
        removed = sorted({a for a in in_milvus if a not in catalog} | {a for a in repair if a not in catalog})
        touched = changed + removed
        if touched:
            ms.upsert(client, meta_names.meta, [{"key": f"{MARKER}:{a}", "value": "{}", "v": DUMMY} for a in touched])
            ms.put_meta(client, meta_names, {MARKER: {"version": self.tag, "generation": names.generation}})
        self._terms(changed, removed, everything=not reuse)
        written = self._articles(changed, catalog)
        if removed:
            self._require_owner()
            ms.delete_in(client, names.articles, "id", removed)
            ms.delete_in(client, names.passages, "article_id", removed)
        regrouped = self._groups()
        if reuse and not touched and not regrouped and live is not None and live["version"] == self.tag:
            return SyncReport(self.tag, seconds=time.perf_counter() - started)  # up to date: stamp unchanged
        # Sealed segments get their indexes; Milvus Lite searches unflushed rows by brute force
        # (BM25 over 300 passages: ~170 ms a query unflushed, ~7 ms flushed). A server seals by
        # itself and may refuse frequent flushes (its flush rate limit): then it just waits.
        from pymilvus.exceptions import MilvusException

        for kind in ms.KINDS:
            try:
                with ms.quiet():
                    client.flush(names.of(kind))
            except MilvusException as exc:
                log.debug("milvus: flush of %s skipped: %s", names.of(kind), exc)
        groups = self.db.execute("select count(distinct group_id) from passage_groups").fetchone()[0]
        max_id = self.db.execute("select max(id) from passages").fetchone()[0] or 0
        self._require_owner()
        live = {
            "version": self.tag,
            "generation": names.generation,
            "owner": self.owner.id,
            "catalog": catalog_meta,
            "passages": store.passage_count(self.db),
            "articles": len(catalog),
            "groups": int(groups),
            "max_id": int(max_id),
            "synced_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        }
        ms.put_meta(client, meta_names, {"live": live})
        ms.point_aliases(client, names)
        if touched:
            client.delete(meta_names.meta, filter=f"key == {ms.quote(MARKER)}")
            client.delete(meta_names.meta, filter=f'key like "{MARKER}:%"')
        report = SyncReport(self.tag, len(changed), len(removed), written, not reuse, time.perf_counter() - started)
        log.info("%s", report.note())
        return report

    def _catalog_rows(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for part in ms.chunks(list(values)):
            rows += self.db.execute(sql, [json.dumps(list(part), ensure_ascii=False)]).fetchall()
        return rows

    def _terms(self, changed: list[str], removed: list[str], *, everything: bool) -> None:
        """P_terms from the catalog's document frequencies: every term for a fresh generation,
        else those of the touched articles' passages, old (in Milvus) and new (in the catalog)."""
        client, names = self.client, self.names
        if everything:
            rows = self.db.execute("select term, df from bm25_terms").fetchall()
            ms.upsert(client, names.terms, [{"term": t, "df": int(df), "v": DUMMY} for t, df in rows], size=5000)
            return
        if not changed and not removed:
            return
        words: set[str] = set()
        for row in ms.query_in(client, names.passages, "article_id", changed + removed, ["terms"], size=50):
            words.update(row["terms"].split())
        sql = "select terms from passages where article_id in (select value from json_each(?))"
        for (text,) in self._catalog_rows(sql, changed):
            words.update(text.split())
        sql = "select term, df from bm25_terms where term in (select value from json_each(?))"
        dfs = dict(self._catalog_rows(sql, sorted(words)))
        ms.upsert(client, names.terms, [{"term": t, "df": int(df), "v": DUMMY} for t, df in dfs.items()], size=5000)
        gone = sorted(words - dfs.keys())
        if gone:
            ms.delete_in(client, names.terms, "term", gone)

    def _articles(self, changed: list[str], catalog: dict[str, dict[str, Any]]) -> int:
        """Write the changed articles in batches of about `SYNC_BATCH` passages; returns passages."""
        aliases: dict[str, list[list[str]]] = {}
        for article_id, source, date, url in self.db.execute(
            "select article_id, source, date, url from article_aliases order by article_id, url"
        ):
            aliases.setdefault(article_id, []).append([source, date, url])
        written = 0
        batch: list[str] = []
        size = 0
        for position, article_id in enumerate(changed):
            batch.append(article_id)
            size += int(catalog[article_id]["passages"])
            if size >= SYNC_BATCH or position == len(changed) - 1:
                written += self._write_batch(batch, catalog, aliases)
                batch, size = [], 0
        return written

    def _write_batch(
        self, batch: list[str], catalog: dict[str, dict[str, Any]], aliases: dict[str, list[list[str]]]
    ) -> int:
        client, names, tag = self.client, self.names, self.tag
        sql = f"select {PASSAGE_COLUMNS} from passages where article_id in (select value from json_each(?))"
        rows = [
            {
                "id": r[0],
                "article_id": r[1],
                "tag": tag,
                "ordinal": r[2],
                "section": r[3],
                "paragraph": r[4],
                "paragraph_end": r[5],
                "text": r[6],
                "terms": r[7],
                "tokens": ms.bm25_text(r[7].split()),
                "embedding": np.frombuffer(r[8], dtype=np.float32).tolist(),
                "sentences": r[9],
            }
            for r in self._catalog_rows(sql, batch)
        ]
        ms.upsert(client, names.passages, rows, size=SYNC_BATCH)
        ms.upsert(
            client,
            names.articles,
            [
                {
                    "id": a,
                    "hash": catalog[a]["content_hash"],
                    "tag": tag,
                    **{f: catalog[a][f] or "" for f in ("path", "title", "source", "author", "date", "url", "lang")},
                    "passages": int(catalog[a]["passages"]),
                    "aliases": json.dumps(aliases.get(a, []), ensure_ascii=False),
                    "v": DUMMY,
                }
                for a in batch
            ],
        )
        ms.delete_in(client, names.passages, "article_id", batch, extra=f"tag != {ms.quote(tag)}")
        return len(rows)

    def _groups(self) -> bool:
        """P_groups = the catalog's `passage_groups`: only the differences are written (any?)."""
        client, names = self.client, self.names
        want = dict(self.db.execute("select passage_id, group_id from passage_groups").fetchall())
        have = {r["passage_id"]: r["group_id"] for r in ms.query_all(client, names.groups, ["passage_id", "group_id"])}
        put = [{"passage_id": p, "group_id": g, "v": DUMMY} for p, g in want.items() if have.get(p) != g]
        ms.upsert(client, names.groups, put, size=5000)
        gone = [p for p in have if p not in want]
        if gone:
            ms.delete_in(client, names.groups, "passage_id", gone)
        return bool(put or gone)
