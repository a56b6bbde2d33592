"""The Milvus side of the `milvus` backend: connections, collection layout and small helpers
shared by the sync (`milvus_sync`) and the reader (`milvus`).

Collections, named after `[index] milvus_collection` (P):

- `P_meta` (fixed): `key` → JSON text. "owner": the catalog that writes the collections
  (`milvus_owner`); "live": the synced catalog version (its SQLite meta, name, passage/article/
  group counts, generation, the owner that filled it); "sync" and "sync:<article id>": a sync
  in progress and the articles it touches (left behind by a killed sync, repaired by the next).
- `P_<kind>_g<generation>` for kind passages, articles, groups, terms, with the alias
  `P_<kind>` on the live generation. A fresh generation is filled beside the live one when
  the model or dimension changes (or on `--full`), then "live" and the aliases switch to it.

Every collection needs a vector field: the small tables carry a 2-dimensional dummy one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from index.backends.base import IndexUnavailableError

KINDS = ("passages", "articles", "groups", "terms")
# Exact inner-product search, the same neighbours as the catalog's flat FAISS index: Milvus
# Lite's FLAT is one numpy matrix product per segment. On a Milvus server past ~1M passages an
# approximate index (HNSW) would be the choice; the sync creates collections with this one.
DENSE_INDEX = {"index_type": "FLAT", "metric_type": "IP", "params": {}}
# BM25 with FTS5's parameters (Milvus Lite's defaults are k1 1.5, b 0.75).
BM25_INDEX = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25", "params": {"bm25_k1": 1.2, "bm25_b": 0.75}}
DUMMY_DIM = 2
DUMMY = [0.0, 0.0]
TEXT = 65_535  # VARCHAR capacity (bytes) of text fields: a passage is at most a few KB
CONNECT_TIMEOUT = 10.0
IN_CHUNK = 1000  # values per `in [...]` filter
ITER_BATCH = 4000  # rows per page when reading a whole collection

_SERVER_URI = re.compile(r"^(https?|tcp|grpc|unix)://", re.IGNORECASE)
_QUIET_LOGGERS = ("pymilvus", "milvus_lite", "grpc._server")  # Lite serves in-process

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Names:
    """The collections of one prefix and generation."""

    prefix: str
    generation: int = 0

    @property
    def meta(self) -> str:
        return f"{self.prefix}_meta"

    def alias(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def of(self, kind: str) -> str:
        return f"{self.prefix}_{kind}_g{self.generation}"

    @property
    def passages(self) -> str:
        return self.of("passages")

    @property
    def articles(self) -> str:
        return self.of("articles")

    @property
    def groups(self) -> str:
        return self.of("groups")

    @property
    def terms(self) -> str:
        return self.of("terms")


def token(term: str) -> str:
    """The BM25 token of an index term: 16 hex digits of its hash after a letter.

    Milvus analyses text itself (Lite's `standard`: \\w+ runs, lower-cased; a server's
    tokenizers also split at punctuation, "0.3" into "0" and "3"). Our terms are already
    analysed (jieba + OpenCC, `index.text.terms`), so each travels as one ASCII word that any
    tokenizer keeps whole: BM25 then counts exactly our terms, on Lite and on a server alike."""
    return "t" + hashlib.blake2b(term.encode("utf-8"), digest_size=8).hexdigest()


def bm25_text(terms: Iterable[str]) -> str:
    return " ".join(token(t) for t in terms)


def redact(uri: str) -> str:
    """The URI without secrets: no user:password@, no query string."""
    if not _SERVER_URI.match(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_server(uri: str) -> bool:
    return bool(_SERVER_URI.match(uri))


_quiet_lock = threading.Lock()
_quiet_depth = [0]
_quiet_levels: dict[str, int] = {}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence pymilvus and Milvus Lite for calls whose failure is expected and reported by us
    (they log every RPC error, with a traceback, at ERROR level). Counted, so overlapping
    sections in several threads restore the levels only when the last one ends."""
    with _quiet_lock:
        if not _quiet_depth[0]:
            for name in _QUIET_LOGGERS:
                _quiet_levels[name] = logging.getLogger(name).level
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        _quiet_depth[0] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth[0] -= 1
            if not _quiet_depth[0]:
                for name, level in _quiet_levels.items():
                    logging.getLogger(name).setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lite_locked(path: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on the data directory `path`."""
    lock = path / "LOCK"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _connect(uri: str, token_: str | None) -> Any:
    from pymilvus import MilvusClient

    if is_server(uri):
        try:
            with quiet():
                return MilvusClient(uri=uri, token=token_ or "", timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise IndexUnavailableError(
                f"cannot reach the Milvus server at {redact(uri)}: {_first_line(exc)}"
            ) from None
    path = Path(uri)
    if path.suffix != ".db":
        raise IndexUnavailableError(
            f"milvus_uri {uri!r} is neither a Milvus Lite file (…/name.db) nor a server URL (http://host:19530)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet():
            return MilvusClient(str(path))
    except Exception as exc:
        if _lite_locked(path):
            raise IndexUnavailableError(
                f"the Milvus Lite file {path} is open in another process (Milvus Lite allows one); serve it with "
                f"`milvus-lite server --data-dir {path} --port PORT` and set milvus_uri = http://127.0.0.1:PORT"
            ) from None
        raise IndexUnavailableError(f"cannot open the Milvus Lite file {path}: {_first_line(exc)}") from None


class _Pool:
    """One client per Milvus URI in this process, shared by the backend and its readers (a
    pymilvus client is thread-safe; Milvus Lite serves one data directory per process anyway).
    The last `release` closes it and, for Lite, stops the in-process server and its lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], tuple[Any, int]] = {}

    def acquire(self, uri: str, token_: str | None) -> Any:
        key = (uri, token_ or "")
        with self._lock:
            if key in self._clients:
                client, refs = self._clients[key]
                self._clients[key] = (client, refs + 1)
                return client
            client = _connect(uri, token_)
            self._clients[key] = (client, 1)
            return client

    def release(self, uri: str, token_: str | None) -> None:
        key = (uri, token_ or "")
        with self._lock:
            if key not in self._clients:
                return
            client, refs = self._clients[key]
            if refs > 1:
                self._clients[key] = (client, refs - 1)
                return
            del self._clients[key]
            _LOADED.difference_update({k for k in _LOADED if k[0] == id(client)})
        with quiet(), contextlib.suppress(Exception):
            client.close()
        if not is_server(uri):
            from milvus_lite.server_manager import server_manager_instance

            with quiet():
                server_manager_instance.release_server(uri)


POOL = _Pool()


# ---------- schemas ----------
def _schema(client: Any, fields: Sequence[tuple[str, Any, dict[str, Any]]]) -> Any:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    for name, dtype, params in fields:
        schema.add_field(name, dtype, **params)
    return schema


def _create(client: Any, name: str, schema: Any, indexes: Sequence[tuple[str, dict[str, Any]]]) -> None:
    params = client.prepare_index_params()
    for field, index in indexes:
        params.add_index(field, **index)
    # Strong: a query sees every write acknowledged before it (a server's default, Bounded,
    # may not, and the visibility rule needs an article's new passages before its flip).
    client.create_collection(name, schema=schema, consistency_level="Strong")
    # Not `create_collection(index_params=…)`: pymilvus then polls each index of the empty
    # collection for 0.5 s (and logs a call Milvus Lite lacks).
    client.create_index(name, params, sync=False)
    client.load_collection(name)


def _small(client: Any, name: str, fields: Sequence[tuple[str, Any, dict[str, Any]]]) -> None:
    from pymilvus import DataType

    schema = _schema(client, [*fields, ("v", DataType.FLOAT_VECTOR, {"dim": DUMMY_DIM})])
    _create(client, name, schema, [("v", {"index_type": "FLAT", "metric_type": "L2"})])


def create_meta(client: Any, names: Names) -> None:
    from pymilvus import DataType

    if not client.has_collection(names.meta):
        _small(
            client,
            names.meta,
            [
                ("key", DataType.VARCHAR, {"is_primary": True, "max_length": 1024}),
                ("value", DataType.VARCHAR, {"max_length": TEXT}),
            ],
        )


def create_generation(client: Any, names: Names, dim: int) -> None:
    """The four data collections of `names.generation`, empty."""
    from pymilvus import DataType, Function, FunctionType

    varchar = {"max_length": TEXT}
    key = {"is_primary": True, "max_length": 1024}
    schema = _schema(
        client,
        [
            ("id", DataType.INT64, {"is_primary": True}),
            ("article_id", DataType.VARCHAR, {"max_length": 1024}),
            ("tag", DataType.VARCHAR, {"max_length": 256}),
            ("ordinal", DataType.INT64, {}),
            ("section", DataType.VARCHAR, varchar),
            ("paragraph", DataType.INT64, {}),
            ("paragraph_end", DataType.INT64, {}),
            ("text", DataType.VARCHAR, varchar),
            ("terms", DataType.VARCHAR, varchar),
            (
                "tokens",
                DataType.VARCHAR,
                {**varchar, "enable_analyzer": True, "analyzer_params": {"tokenizer": "standard"}},
            ),
            ("sparse", DataType.SPARSE_FLOAT_VECTOR, {}),
            ("sentences", DataType.VARCHAR, varchar),
            ("embedding", DataType.FLOAT_VECTOR, {"dim": dim}),
        ],
    )
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["tokens"], output_field_names=["sparse"]
        )
    )
    _create(client, names.passages, schema, [("embedding", DENSE_INDEX), ("sparse", BM25_INDEX)])
    article_fields = ("hash", "tag", "path", "title", "source", "author", "date", "url", "lang", "aliases")
    _small(
        client,
        names.articles,
        [
            ("id", DataType.VARCHAR, key),
            *((f, DataType.VARCHAR, varchar) for f in article_fields),
            ("passages", DataType.INT64, {}),
        ],
    )
    _small(
        client,
        names.groups,
        [("passage_id", DataType.INT64, {"is_primary": True}), ("group_id", DataType.INT64, {})],
    )
    _small(client, names.terms, [("term", DataType.VARCHAR, key), ("df", DataType.INT64, {})])


_LOADED: set[tuple[int, str]] = set()  # (id of a pooled client, collection) known to be loaded


def ensure_loaded(client: Any, names: Iterable[str]) -> None:
    """Load the collections that exist but are not loaded: Milvus Lite reopens a data directory
    with every collection released (a server after some restarts too). Asked once per client."""
    from pymilvus.client.types import LoadState

    for name in names:
        if (id(client), name) in _LOADED or not client.has_collection(name):
            continue
        if client.get_load_state(name).get("state") != LoadState.Loaded:
            client.load_collection(name)
        _LOADED.add((id(client), name))


def released(exc: BaseException) -> bool:
    """Milvus refused because a collection is not loaded (after the server restarted)."""
    text = str(exc)
    return "call load()" in text or "not loaded" in text.lower()


def reload_live(client: Any, names: Names) -> None:
    """Load the meta collection and the live generation's collections again, whatever this
    process believed: a restarted server has released them all."""
    _forget_loaded(client)
    ensure_loaded(client, [names.meta])
    live = get_meta(client, names, "live")
    if live is not None:
        generation = Names(names.prefix, int(live["generation"]))
        ensure_loaded(client, [generation.of(kind) for kind in KINDS])


def _forget_loaded(client: Any) -> None:
    _LOADED.difference_update({k for k in _LOADED if k[0] == id(client)})


def unreachable(exc: BaseException) -> bool:
    """Milvus could not be reached (the server is down or restarting)."""
    text = str(exc).lower()
    return "fail connecting" in text or "unavailable" in text or "connection refused" in text


class Reloading:
    """A reader's pooled client. A call refused because a collection was released (the server
    restarted) loads `collections` again and is retried once, so the reader recovers by itself;
    a server that cannot be reached is `IndexUnavailableError`, one line, not pymilvus's
    tracebacks (it is kept `quiet` during the calls)."""

    def __init__(self, client: Any, collections: Sequence[str], uri: str) -> None:
        self._client = client
        self._collections = list(collections)
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                try:
                    with quiet():  # its failures are ours to report, once, without its tracebacks
                        return attribute(*args, **kwargs)
                except Exception as exc:
                    if not released(exc):
                        raise
                    _forget_loaded(self._client)
                    with quiet():
                        ensure_loaded(self._client, self._collections)
                        return attribute(*args, **kwargs)
            except Exception as exc:
                if unreachable(exc):
                    raise IndexUnavailableError(
                        f"cannot reach Milvus at {redact(self._uri)}: {_first_line(exc)}"
                    ) from None
                raise

        return call


def generations(client: Any, prefix: str) -> list[int]:
    """The generations that have any collection under `prefix`."""
    pattern = re.compile(rf"{re.escape(prefix)}_(?:{'|'.join(KINDS)})_g(\d+)")
    return sorted({int(m.group(1)) for name in client.list_collections() if (m := pattern.fullmatch(name))})


def generation_complete(client: Any, names: Names) -> bool:
    return all(client.has_collection(names.of(kind)) for kind in KINDS)


def drop_generation(client: Any, names: Names) -> None:
    for kind in KINDS:
        if client.has_collection(names.of(kind)):
            client.drop_collection(names.of(kind))


def point_aliases(client: Any, names: Names) -> None:
    """`P_<kind>` → this generation's collections (for tools and `describe`)."""
    for kind in KINDS:
        alias = names.alias(kind)
        with quiet():
            try:
                current = client.describe_alias(alias).get("collection_name")
            except Exception:  # no such alias yet
                current = None
        if current is None:
            client.create_alias(names.of(kind), alias)
        elif current != names.of(kind):
            client.alter_alias(names.of(kind), alias)


# ---------- reading and writing ----------
def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def in_filter(field: str, values: Sequence[Any]) -> str:
    return f"{field} in {json.dumps(list(values), ensure_ascii=False)}"


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def query_in(
    client: Any,
    collection: str,
    field: str,
    values: Iterable[Any],
    output: Sequence[str],
    extra: str = "",
    size: int = IN_CHUNK,
) -> list[dict[str, Any]]:
    """Rows whose `field` is one of `values`, `size` values per query (expressions are capped)."""
    rows: list[dict[str, Any]] = []
    for part in chunks(list(dict.fromkeys(values)), size):
        expr = in_filter(field, part) + (f" and {extra}" if extra else "")
        rows += client.query(collection, filter=expr, output_fields=list(output))
    return rows


def query_all(client: Any, collection: str, output: Sequence[str], expr: str = "") -> Iterator[dict[str, Any]]:
    """Every row (matching `expr`), page by page."""
    with quiet():  # Lite's iterator warns that it uses the client's clock
        iterator = client.query_iterator(collection, batch_size=ITER_BATCH, filter=expr, output_fields=list(output))
    try:
        while True:
            with quiet():
                page = iterator.next()
            if not page:
                return
            yield from page
    finally:
        iterator.close()


def count(client: Any, collection: str, expr: str = "") -> int:
    rows = client.query(collection, filter=expr, output_fields=["count(*)"])
    return int(rows[0]["count(*)"]) if rows else 0


def get_meta(client: Any, names: Names, key: str) -> dict[str, Any] | None:
    ensure_loaded(client, [names.meta])
    if (id(client), names.meta) not in _LOADED:
        return None  # no such collection
    rows = client.query(names.meta, filter=f"key == {quote(key)}", output_fields=["value"])
    return json.loads(rows[0]["value"]) if rows else None


def put_meta(client: Any, names: Names, values: dict[str, Any]) -> None:
    client.upsert(
        names.meta, [{"key": k, "value": json.dumps(v, ensure_ascii=False), "v": DUMMY} for k, v in values.items()]
    )


def upsert(client: Any, collection: str, rows: Sequence[dict[str, Any]], size: int = 1000) -> None:
    for part in chunks(rows, size):
        client.upsert(collection, list(part))


def delete_in(client: Any, collection: str, field: str, values: Sequence[Any], extra: str = "") -> None:
    for part in chunks(list(values)):
        client.delete(collection, filter=in_filter(field, part) + (f" and {extra}" if extra else ""))
