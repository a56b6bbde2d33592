"""The `milvus` backend: passages searched in Milvus (Milvus Lite file or server).

A build is the SQLite catalog build (`index.build`: incremental, reuses embeddings, groups
copies, counts document frequencies) followed, under the same build lock, by a sync of the
live catalog version into Milvus (`milvus_sync`), by the one catalog that owns the
collections (`milvus_owner`: another catalog's build is refused before it starts). Readers
search Milvus only: dense search on the embeddings (inner product), BM25 through Milvus's
BM25 function over our own terms (`milvus_store.token`), rows, document frequencies and copy
groups by key.

Visibility: a passage counts while its `tag` equals its article's (see `milvus_sync`).
Searches and listings (`dense`, `lexical`, `neighbours`, `copies`, `sample_texts`) return
visible passages only; lookups by id (`rows`, `cosines`) also answer a passage its article
has just replaced, until the sync deletes it, so ids a search returned a moment before a
sync flipped their article still resolve. Searches over-fetch and filter in Python (Milvus's
filtered searches return too few hits): invisible rows exist only while a sync runs or after
one was killed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from index import publish, store
from index.backends import milvus_owner
from index.backends import milvus_store as ms
from index.backends.base import (
    CopyRow,
    IndexBackend,
    IndexReader,
    IndexUnavailableError,
    PassageRow,
    Progress,
    require_model,
)
from index.backends.milvus_store import Names
from index.backends.milvus_sync import SyncReport, marker, sync
from index.build import BuildReport, build_index
from index.embedder import Embedder
from settings import Config

__all__ = ["MilvusBackend", "MilvusReader"]

MAX_TOPK = 16_384  # Milvus's largest search limit
# Reads of an article's tag and passages before its neighbours are taken to be none.
_NEIGHBOUR_READS = 4
# A search first asks for n + n/4 + 16 hits and grows 4x while too few are visible: hidden
# rows exist only during a sync (or after a killed one), and Milvus Lite's cost grows with
# the limit (~0.2 ms a hit: 17 ms for 10, ~50 ms for 216 at 3,000 passages).
OVERFETCH_EXTRA = 16
ROW_FIELDS = ["id", "article_id", "tag", "ordinal", "section", "paragraph", "paragraph_end", "text", "terms"]
ARTICLE_FIELDS = ["id", "path", "title", "source", "author", "date", "url", "lang", "passages"]
DF_CACHE = 50_000


class MilvusReader(IndexReader):
    """The index as Milvus shows it now (see the module docstring). Opened on the live
    generation and version recorded in "live"; a newer sync changes `MilvusBackend.stamp`."""

    backend = "milvus"

    def __init__(self, config: Config) -> None:
        self._uri, self._token = config.index.milvus_uri, config.milvus_token
        self.client = ms.POOL.acquire(self._uri, self._token)
        try:
            live = ms.get_meta(self.client, Names(config.index.milvus_collection), "live")
            if live is None:
                raise publish.IndexMissingError(
                    f"nothing synced to Milvus at {ms.redact(self._uri)} (collections "
                    f"{config.index.milvus_collection}_*): run `python -m index build`"
                )
            require_model(live["catalog"], config, f"Milvus at {ms.redact(self._uri)}")
        except BaseException:
            self.close()
            raise
        self.names = Names(config.index.milvus_collection, int(live["generation"]))
        collections = [self.names.meta, *(self.names.of(kind) for kind in ms.KINDS)]
        ms.ensure_loaded(self.client, collections)
        self.client = ms.Reloading(self.client, collections, self._uri)
        self.version = str(live["version"])
        self.meta = dict(live["catalog"])
        self.count = int(live["passages"])
        self._live = live
        self._df_cache: dict[str, int] = {}
        self._df_lock = threading.Lock()
        # Milvus Lite builds its BM25 index in memory on a process's first search: now, not
        # on the first question.
        self.client.search(
            self.names.passages,
            data=["t"],
            anns_field="sparse",
            limit=1,
            output_fields=["id"],
            search_params={"metric_type": "BM25"},
        )

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            ms.POOL.release(self._uri, self._token)

    # ---------- visibility ----------
    def _tags(self, article_ids: Sequence[str]) -> dict[str, str]:
        rows = ms.query_in(self.client, self.names.articles, "id", article_ids, ["id", "tag"])
        return {r["id"]: r["tag"] for r in rows}

    def _visible(self, hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The hits (dicts with article_id and tag) whose tag is their article's."""
        tags = self._tags([h["article_id"] for h in hits])
        return [h for h in hits if tags.get(h["article_id"]) == h["tag"]]

    def _current(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows visible now or replaced by their article's newer version (never a passage a
        sync is still writing, nor one of a removed article)."""
        tags = self._tags([r["article_id"] for r in rows])
        return [r for r in rows if r["article_id"] in tags and r["tag"] <= tags[r["article_id"]]]

    def _search(self, data: list[Any], field: str, n: int, params: dict[str, Any]) -> list[list[tuple[int, float]]]:
        """Visible (id, distance) hits of each query, the best `n`, over-fetching until enough
        are visible or Milvus has no more."""
        limit = min(MAX_TOPK, n + n // 4 + OVERFETCH_EXTRA)
        while True:
            results = self.client.search(
                self.names.passages,
                data=data,
                anns_field=field,
                limit=limit,
                output_fields=["article_id", "tag"],
                search_params=params,
            )
            flat = [{"id": h["id"], **h["entity"], "distance": h["distance"]} for hits in results for h in hits]
            visible = {h["id"] for h in self._visible(flat)}
            out = [[(h["id"], float(h["distance"])) for h in hits if h["id"] in visible][:n] for hits in results]
            short = any(len(o) < n and len(hits) == limit for o, hits in zip(out, results, strict=True))
            if not short or limit >= MAX_TOPK:
                return out
            limit = min(MAX_TOPK, limit * 4)

    # ---------- IndexReader ----------
    def dense(self, qvecs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(qvecs).astype(np.float32)
        sims = np.full((len(queries), n), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), n), -1, dtype=np.int64)
        if n <= 0 or not len(queries):
            return sims, ids
        found = self._search(queries.tolist(), "embedding", n, {"metric_type": "IP"})
        for row, hits in enumerate(found):
            for col, (passage_id, distance) in enumerate(hits):
                ids[row, col], sims[row, col] = passage_id, distance
        return sims, ids

    def lexical(self, terms: Sequence[str], limit: int) -> dict[int, float]:
        text = ms.bm25_text(dict.fromkeys(t for t in terms if t))
        if limit <= 0 or not text:
            return {}
        (hits,) = self._search([text], "sparse", limit, {"metric_type": "BM25"})
        # BM25 is never negative; Milvus Lite returns it negated, a server as is.
        return {passage_id: abs(distance) for passage_id, distance in hits}

    def document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        cache = self._df_cache
        missing = [t for t in dict.fromkeys(terms) if t not in cache]
        found: dict[str, int] = {}
        if missing:
            rows = ms.query_in(self.client, self.names.terms, "term", missing, ["term", "df"])
            found = {t: 0 for t in missing} | {r["term"]: int(r["df"]) for r in rows}
            with self._df_lock:
                if len(self._df_cache) > DF_CACHE:
                    self._df_cache = {}
                self._df_cache.update(found)
        return {t: found[t] if t in found else cache.get(t, 0) for t in terms}

    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        if not ids:
            return {}
        rows = self._current(
            ms.query_in(self.client, self.names.passages, "id", ids, [*ROW_FIELDS, "embedding", "sentences"])
        )
        articles = {
            r["id"]: r
            for r in ms.query_in(
                self.client,
                self.names.articles,
                "id",
                [r["article_id"] for r in rows],
                ["id", "title", "source", "date", "url"],
            )
        }
        out = {}
        for r in rows:
            a = articles[r["article_id"]]
            out[r["id"]] = PassageRow(
                id=r["id"],
                article_id=r["article_id"],
                ordinal=r["ordinal"],
                section=r["section"],
                paragraph=r["paragraph"],
                paragraph_end=r["paragraph_end"],
                text=r["text"],
                terms=r["terms"],
                embedding=np.asarray(r["embedding"], dtype=np.float32),
                title=a["title"],
                source=a["source"],
                date=a["date"],
                url=a["url"],
                sentences=r["sentences"],
            )
        return out

    def article_of(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = self._current(ms.query_in(self.client, self.names.passages, "id", ids, ["id", "article_id", "tag"]))
        return {r["id"]: r["article_id"] for r in rows}

    def cosines(self, ids: Sequence[int], qvec: np.ndarray) -> dict[int, float]:
        if not ids:
            return {}
        rows = self._current(
            ms.query_in(self.client, self.names.passages, "id", ids, ["id", "article_id", "tag", "embedding"])
        )
        if not rows:
            return {}
        matrix = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        return dict(zip([r["id"] for r in rows], (matrix @ np.asarray(qvec, dtype=np.float32)).tolist(), strict=True))

    def neighbours(self, article_id: str, ordinal: int, before: int, after: int) -> list[int]:
        """Read the article's tag first, then its passages of that tag. None found means a sync
        flipped and cleaned the article in between, or (under load, Milvus Lite) the tag was
        read from a state older than the passages': read both again, a few times, briefly
        apart. A passage's neighbours include itself, so an empty answer is rare and final
        only for an article removed or a range its current version lacks."""
        low, high = int(ordinal - before), int(ordinal + after)
        expr = f"article_id == {ms.quote(article_id)} and ordinal >= {low} and ordinal <= {high}"
        for attempt in range(_NEIGHBOUR_READS):
            if attempt:
                time.sleep(0.005 * attempt)
            tag = self._tags([article_id]).get(article_id)
            if tag is None:
                continue
            rows = self.client.query(
                self.names.passages, filter=f"{expr} and tag == {ms.quote(tag)}", output_fields=["id", "ordinal"]
            )
            if rows:
                return [r["id"] for r in sorted(rows, key=lambda r: r["ordinal"])]
        return []

    def articles(self) -> list[dict[str, Any]]:
        rows = list(ms.query_all(self.client, self.names.articles, ARTICLE_FIELDS))
        return sorted(({f: r[f] for f in ARTICLE_FIELDS} for r in rows), key=lambda r: (r["date"], r["id"]))

    def vocabulary(self) -> list[str]:
        return [r["term"] for r in ms.query_all(self.client, self.names.terms, ["term"])]

    def copies(self, ids: Sequence[int]) -> list[CopyRow]:
        if not ids:
            return []
        client, names = self.client, self.names
        group_of = {
            r["passage_id"]: r["group_id"]
            for r in ms.query_in(client, names.groups, "passage_id", ids, ["passage_id", "group_id"])
        }
        members = ms.query_in(client, names.groups, "group_id", set(group_of.values()), ["passage_id", "group_id"])
        group_of.update({r["passage_id"]: r["group_id"] for r in members})
        wanted = list(dict.fromkeys([*group_of, *ids]))
        passages = ms.query_in(client, names.passages, "id", wanted, ["id", "article_id", "tag"])
        articles = {
            r["id"]: r
            for r in ms.query_in(
                client,
                names.articles,
                "id",
                [p["article_id"] for p in passages],
                ["id", "tag", "source", "date", "title", "url", "aliases"],
            )
        }
        out = []
        for p in sorted(passages, key=lambda p: (group_of.get(p["id"], 0), p["id"])):
            a = articles.get(p["article_id"])
            if a is None or a["tag"] != p["tag"]:
                continue
            aliases = tuple(tuple(alias) for alias in json.loads(a["aliases"] or "[]"))
            group = group_of.get(p["id"], 0)
            if group or aliases:
                out.append(
                    CopyRow(group, p["id"], p["article_id"], a["source"], a["date"], a["title"], a["url"], aliases)
                )
        return out

    def duplicate_groups(self) -> int:
        return int(self._live.get("groups", 0))

    def sample_texts(self, limit: int) -> list[str]:
        top = int(self._live.get("max_id", 0))
        if limit <= 0 or not top:
            return []
        step = max(1, top // limit)
        rows = ms.query_in(
            self.client, self.names.passages, "id", range(step, top + 1, step), ["id", "article_id", "tag", "text"]
        )
        return [r["text"] for r in sorted(self._visible(rows), key=lambda r: r["id"])][:limit]


class MilvusBackend(IndexBackend):
    """Catalog build + Milvus sync; readers search Milvus. Holds one pooled client (`close`)."""

    name = "milvus"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._client: Any = None
        self._lock = threading.Lock()
        self.meta_names = Names(config.index.milvus_collection)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = ms.POOL.acquire(self.config.index.milvus_uri, self.config.milvus_token)
            return self._client

    def close(self) -> None:
        """Release the client (for Milvus Lite: the file, once no reader holds it either)."""
        with self._lock:
            if self._client is not None:
                self._client = None
                ms.POOL.release(self.config.index.milvus_uri, self.config.milvus_token)

    def stamp(self) -> Hashable:
        """Also what brings readers back after a server restart (the running bot asks every
        `reload_seconds`): the restarted server has released every collection, and they are
        loaded again here."""
        try:
            with ms.quiet():  # a failure is raised, and the bot logs it once
                live = ms.get_meta(self.client, self.meta_names, "live")
        except Exception as exc:
            if ms.unreachable(exc):
                raise IndexUnavailableError(
                    f"cannot reach Milvus at {ms.redact(self.config.index.milvus_uri)}: {exc}"
                ) from None
            if not ms.released(exc):
                raise
            ms.reload_live(self.client, self.meta_names)
            live = ms.get_meta(self.client, self.meta_names, "live")
        return None if live is None else (live["version"], live["generation"], live["synced_at"])

    def open_reader(self) -> IndexReader:
        return MilvusReader(self.config)

    def build(
        self,
        *,
        full: bool = False,
        embedder: Embedder | None = None,
        progress: Progress | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> BuildReport:
        synced: list[SyncReport] = []
        owner = milvus_owner.Owner.of(self.config.index.dir)
        where = ms.redact(self.config.index.milvus_uri)
        milvus_owner.require(self.client, self.meta_names, owner, where)  # before the catalog changes

        def after_publish(version: publish.Version) -> None:
            prefix = self.config.index.milvus_collection
            synced.append(sync(self.client, prefix, version, owner, where=where, fresh=full))

        # Milvus searches; the catalog's FAISS file is then only a fallback for switching back,
        # so it is exact (flat): no IVF training in every build. A switch back to `faiss`
        # rebuilds it for the [index] settings without re-embedding (`index.build.faiss_key`).
        catalog = replace(self.config, index=replace(self.config.index, faiss="flat"))
        report = build_index(
            catalog, full=full, embedder=embedder, progress=progress, on_wait=on_wait, after_publish=after_publish
        )
        return replace(report, notes=(*report.notes, *(s.note() for s in synced)))

    def take_over(self) -> str:
        """This catalog becomes the one writer of the collections (`milvus_owner`); its next
        build fills a fresh generation from it."""
        me = milvus_owner.Owner.of(self.config.index.dir)
        previous = milvus_owner.take_over(self.client, self.meta_names, me)
        collections = f"the Milvus collections {self.meta_names.prefix}_*"
        if previous is not None and previous.get("id") == me.id:
            return f"{collections} are already written by this catalog"
        before = f" from {milvus_owner.describe(previous)}" if previous else ""
        return f"this catalog ({milvus_owner.describe(me.record())}) now writes {collections}{before}"

    def check(self) -> tuple[str, list[str]]:
        """Milvus against the live catalog version: the owner, articles and hashes, visible
        passages, rows no article shows, the vocabulary and a sample of document frequencies, groups."""
        catalog = publish.current_version(self.config.index.dir)
        if catalog is None:
            return "", [f"no catalog in {self.config.index.dir}: run `python -m index build`"]
        client = self.client
        live = ms.get_meta(client, self.meta_names, "live")
        if live is None:
            return catalog.name, [f"nothing synced to Milvus at {ms.redact(self.config.index.milvus_uri)}"]
        names = Names(self.meta_names.prefix, int(live["generation"]))
        ms.ensure_loaded(client, [names.of(kind) for kind in ms.KINDS])
        problems = []
        owner = milvus_owner.owner_of(client, self.meta_names)
        mine = milvus_owner.read_catalog_id(self.config.index.dir)
        if owner is None or owner.get("id") != mine:
            who = f"another catalog ({milvus_owner.describe(owner)})" if owner else "no catalog"
            problems.append(f"Milvus is claimed by {who}, not by {self.config.index.dir}")
        elif live.get("owner") != mine:
            problems.append("Milvus still shows the previous owner's index: `index build` fills it from this catalog")
        header, pending = marker(client, self.meta_names)
        if header is not None or pending:
            problems.append(f"a sync was interrupted ({len(pending)} articles pending): `index build` repairs it")
        if live["version"] != catalog.name:
            problems.append(f"Milvus shows version {live['version']}, the catalog {catalog.name}")
        db = store.open_db(catalog.db_path, readonly=True)
        try:
            problems += _compare(client, names, db)
        finally:
            db.close()
        return str(live["version"]), problems

    def describe(self) -> dict[str, Any]:
        client = self.client
        live = ms.get_meta(client, self.meta_names, "live") or {}
        names = Names(self.meta_names.prefix, int(live.get("generation", 0)))
        return {
            "backend": self.name,
            "uri": ms.redact(self.config.index.milvus_uri),
            "collections": {
                "meta": names.meta,
                **({names.alias(k): names.of(k) for k in ms.KINDS} if live else {}),
            },
            "owner": milvus_owner.owner_of(client, self.meta_names),
            "live": {k: v for k, v in live.items() if k != "catalog"} | {"meta": live.get("catalog", {})},
        }


def _compare(client: Any, names: Names, db: store.sqlite_utils.Database) -> list[str]:
    problems = []
    want = dict(db.execute("select id, content_hash from articles").fetchall())
    have = {r["id"]: (r["hash"], r["tag"]) for r in ms.query_all(client, names.articles, ["id", "hash", "tag"])}
    wrong = sum(1 for a, h in want.items() if a not in have or have[a][0] != h) + sum(1 for a in have if a not in want)
    if wrong:
        problems.append(f"{wrong} articles differ from the catalog (missing, extra or another hash)")
    visible, hidden = set(), 0
    for r in ms.query_all(client, names.passages, ["id", "article_id", "tag"]):
        if have.get(r["article_id"], ("", None))[1] == r["tag"]:
            visible.add(r["id"])
        else:
            hidden += 1
    ids = {r[0] for r in db.execute("select id from passages")}
    if visible != ids:
        problems.append(
            f"visible passages differ from the catalog's ({len(visible - ids)} extra, {len(ids - visible)} missing)"
        )
    if hidden:
        problems.append(f"{hidden} passages no article shows (left by an interrupted sync)")
    terms = db.execute("select count(*) from bm25_terms").fetchone()[0]
    if ms.count(client, names.terms) != terms:
        problems.append(f"{ms.count(client, names.terms)} terms in Milvus, {terms} in the catalog")
    step = max(1, terms // 200)
    sample = dict(db.execute("select term, df from bm25_terms where rowid % ? = 0", [step]).fetchall())
    got = {r["term"]: r["df"] for r in ms.query_in(client, names.terms, "term", list(sample), ["term", "df"])}
    off = sum(1 for t, df in sample.items() if got.get(t) != df)
    if off:
        problems.append(f"{off} of {len(sample)} sampled document frequencies differ from the catalog")
    groups = dict(db.execute("select passage_id, group_id from passage_groups").fetchall())
    stored = {r["passage_id"]: r["group_id"] for r in ms.query_all(client, names.groups, ["passage_id", "group_id"])}
    if groups != stored:
        problems.append(f"copy groups differ from the catalog ({len(groups)} vs {len(stored)} members)")
    return problems
