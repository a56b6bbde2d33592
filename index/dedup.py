"""Near-duplicate passages across articles (republished copies, 转载), kept as groups.

Chinese news is republished widely, often lightly edited: punctuation changed, a byline or a
sentence added or removed, traditional characters. A passage's text is normalised (NFKC,
simplified, lower case, only letters, digits and Chinese characters kept) and cut into
character `SHINGLE`-grams; a MinHash signature of those shingles is split into `BANDS` bands
of `ROWS` values (LSH), and passages sharing a band are candidates. A candidate pair is a
duplicate when the exact shingle sets overlap enough (Jaccard, or containment for a passage
that is the other plus a sentence) *and* the stored embeddings agree (cosine): two passages
quoting the same long sentence but saying different things fail the second test.

Duplicates are edges; the groups are their connected components. Everything is incremental
and lives in the index database (tables created by `index.store.create_schema`):

- `passage_minhash(passage_id, sig)`: the signature of every processed passage;
- `passage_bands(band, hash, passage_id)`: its LSH band hashes, looked up with one join;
- `passage_dups(a, b, jaccard)`: verified duplicate pairs, a < b, with their shingle Jaccard;
- `passage_groups(passage_id, group_id)`: passages in a group of two or more; `group_id` is
  the smallest member id;
- `article_aliases(article_id, url, source, date)`: an article's other URLs (the same text
  added again from elsewhere: `index add` records it in the file's front matter, `also`).

`update_groups` runs after a build wrote its articles: passages that disappeared (their
article removed or changed) lose their rows, new passages (no signature yet) are signed and
matched, and only the groups they touch are recomputed.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sqlite_utils

from corpus.model import Article
from index.text import to_simplified

SHINGLE = 4  # characters per shingle: a Chinese word or two
BANDS = 20
ROWS = 3  # P(candidate) = 1 - (1 - J^3)^20: 0.93 at Jaccard 0.5, 0.9996 at 0.8, 2e-5 at 0.01
NUM_PERM = BANDS * ROWS
SEED = 20210610
# Verification thresholds, chosen on the generated corpus of `bench/many.py` (see its report).
MIN_JACCARD = 0.5
MIN_CONTAINMENT = 0.8  # the smaller passage inside the larger one (a sentence or byline added)
MIN_CONTAINED_SHINGLES = 20  # below this, containment says little (a short line inside anything)
MIN_COSINE = 0.8

_KEEP = re.compile(r"[^\w]+", re.UNICODE)
_MASK63 = np.uint64((1 << 63) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
# Multiply-shift hash functions (a odd): h(x) = (a·x + b mod 2^64) >> 32, no division needed.
_PERMUTATIONS = np.random.default_rng(SEED).integers(0, 2**64 - 1, size=(2, NUM_PERM), dtype=np.uint64)
_PERM_A, _PERM_B = _PERMUTATIONS[0] | np.uint64(1), _PERMUTATIONS[1]
_SIGN_CHUNK = 256  # sets per numpy pass: ~300 shingles each x NUM_PERM x 8 bytes = ~37 MB
_SHINGLE_BASE = np.uint64(0x100000001B3)  # FNV's 64-bit prime: mixes the code points of a shingle
_BAND_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)

GROUP_TABLES_SQL = (
    "CREATE TABLE IF NOT EXISTS passage_minhash (passage_id INTEGER PRIMARY KEY, sig BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS passage_bands (band INTEGER NOT NULL, hash INTEGER NOT NULL, "
    "passage_id INTEGER NOT NULL, PRIMARY KEY (band, hash, passage_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS passage_dups (a INTEGER NOT NULL, b INTEGER NOT NULL, "
    "jaccard REAL NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS passage_dups_b ON passage_dups (b)",
    "CREATE TABLE IF NOT EXISTS passage_groups (passage_id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS passage_groups_group ON passage_groups (group_id)",
    # The same article under other URLs (front matter `also`, recorded by `index add`).
    "CREATE TABLE IF NOT EXISTS article_aliases (article_id TEXT NOT NULL, url TEXT NOT NULL, "
    "source TEXT NOT NULL, date TEXT NOT NULL, PRIMARY KEY (article_id, url)) WITHOUT ROWID",
)


@dataclass(frozen=True)
class GroupUpdate:
    """What one `update_groups` call did (for the build report and tests)."""

    signed: int = 0
    removed: int = 0
    pairs: int = 0
    groups_touched: int = 0


def shingles(text: str) -> np.ndarray:
    """The character `SHINGLE`-grams of the normalised text (the whole text when shorter), as
    sorted distinct 32-bit hashes: a polynomial of the code points, computed in numpy."""
    # `index.text.normalize` without its `clean` (control characters go with the punctuation).
    chars = _KEEP.sub("", to_simplified(unicodedata.normalize("NFKC", text)).lower())
    codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if not len(codes):
        return np.zeros(0, dtype=np.uint64)
    width = min(SHINGLE, len(codes))
    hashed = np.zeros(len(codes) - width + 1, dtype=np.uint64)
    for i in range(width):  # wraps modulo 2^64, as intended
        hashed = hashed * _SHINGLE_BASE + codes[i : len(codes) - width + 1 + i]
    return np.unique(hashed >> np.uint64(32))


def signatures(shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
    """MinHash signatures, one uint64 row of `NUM_PERM` per shingle set: for each of `NUM_PERM`
    fixed multiply-shift hash functions of the 32-bit shingle hashes, the minimum over the set.
    In numpy, a chunk of sets per pass: datasketch's MinHash would do the same, but importing it
    pulls in scipy, 1-3 s on every build."""
    out = np.full((len(shingle_sets), NUM_PERM), _MAX_HASH, dtype=np.uint64)
    for start in range(0, len(shingle_sets), _SIGN_CHUNK):
        chunk = shingle_sets[start : start + _SIGN_CHUNK]
        sizes = np.array([len(items) for items in chunk])
        if not sizes.sum():
            continue
        values = (np.concatenate(chunk)[:, None] * _PERM_A + _PERM_B) >> np.uint64(32)
        filled = np.flatnonzero(sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])[filled]
        out[start + filled] = np.minimum.reduceat(values, offsets, axis=0)
    return out


def band_hashes(sigs: np.ndarray) -> np.ndarray:
    """One non-negative int64 per (passage, band): the band's `ROWS` values mixed together."""
    bands = sigs.reshape(len(sigs), BANDS, ROWS)
    with np.errstate(over="ignore"):
        mixed = np.bitwise_xor.reduce(bands * _BAND_MULTIPLIERS, axis=2)
    return (mixed & _MASK63).astype(np.int64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two shingle sets (sorted distinct hashes)."""
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common) if len(a) and len(b) else 0.0


def similar(a: np.ndarray, b: np.ndarray) -> bool:
    """The text test: overlapping enough as a whole, or the smaller one (of enough substance)
    almost entirely inside the larger."""
    if not len(a) or not len(b):
        return False
    common = len(np.intersect1d(a, b, assume_unique=True))
    if common / (len(a) + len(b) - common) >= MIN_JACCARD:
        return True
    smaller = min(len(a), len(b))
    return smaller >= MIN_CONTAINED_SHINGLES and common / smaller >= MIN_CONTAINMENT


def update_groups(db: sqlite_utils.Database, batch: int = 10_000) -> GroupUpdate:
    """Bring the duplicate groups in line with the passages now in `db` (see the module doc).
    New passages are signed and matched `batch` at a time (bounds memory on a first build)."""
    conn = db.conn
    with conn:
        removed = _forget_removed(conn)
        touched = {
            r[0]
            for r in conn.execute(
                "select distinct group_id from passage_groups where passage_id in (select value from json_each(?))",
                [_json_ids(removed)],
            )
        }
        members = [
            r[0]
            for r in conn.execute(
                "select passage_id from passage_groups where group_id in (select value from json_each(?))",
                [_json_ids(touched)],
            )
        ]
        conn.execute(
            "delete from passage_groups where passage_id in (select value from json_each(?))", [_json_ids(removed)]
        )
        new_ids = [
            r[0]
            for r in conn.execute("select id from passages where id not in (select passage_id from passage_minhash)")
        ]
        pairs = 0
        for start in range(0, len(new_ids), batch):
            pairs += _sign_and_match(conn, new_ids[start : start + batch])
        seeds = set(members) - set(removed)
        if pairs:
            seeds |= {
                r[0]
                for r in conn.execute(
                    "select a from passage_dups where b in (select value from json_each(?)) "
                    "union select b from passage_dups where a in (select value from json_each(?))",
                    [_json_ids(new_ids), _json_ids(new_ids)],
                )
            }
        groups = _regroup(conn, seeds)
    return GroupUpdate(signed=len(new_ids), removed=len(removed), pairs=pairs, groups_touched=groups)


# (SQL counting what is wrong, what it is) for `integrity_problems`.
_GROUP_CHECKS = (
    (
        "select count(*) from passage_groups where passage_id not in (select id from passages)",
        "copy-group members are not passages",
    ),
    (
        "select count(*) from (select g.group_id from passage_groups g join passages p on p.id = g.passage_id "
        "group by g.group_id having count(*) < 2 or count(distinct p.article_id) < count(*))",
        "copy groups with fewer than two members or two passages of one article",
    ),
    (
        "select count(*) from article_aliases where article_id not in (select id from articles)",
        "other sources of articles that are gone",
    ),
)


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What `index check` verifies of the copy groups: every passage signed, groups of live
    passages with at least two members from as many articles, aliases of live articles."""
    problems = []
    unsigned, stale = conn.execute(
        "select (select count(*) from passages where id not in (select passage_id from passage_minhash)), "
        "(select count(*) from passage_minhash where passage_id not in (select id from passages))"
    ).fetchone()
    if unsigned or stale:
        problems.append(f"copy signatures out of step with passages ({unsigned} missing, {stale} stale)")
    for count_sql, problem in _GROUP_CHECKS:
        count = conn.execute(count_sql).fetchone()[0]
        if count:
            problems.append(f"{count} {problem}")
    return problems


def record_aliases(db: sqlite_utils.Database, changed: Sequence[Article]) -> None:
    """The other sources of the changed articles; those of removed articles go too."""
    with db.conn:
        db.conn.execute("delete from article_aliases where article_id not in (select id from articles)")
        db.conn.executemany("delete from article_aliases where article_id = ?", [(a.id,) for a in changed])
        db.conn.executemany(
            "insert or replace into article_aliases (article_id, url, source, date) values (?, ?, ?, ?)",
            [(a.id, o.url, o.source, o.date) for a in changed for o in a.also],
        )


def _json_ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _forget_removed(conn) -> list[int]:  # type: ignore[no-untyped-def]
    """Delete the signature, band and edge rows of passages no longer in the index."""
    rows = conn.execute(
        "select passage_id, sig from passage_minhash where passage_id not in (select id from passages)"
    ).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    sigs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<u8").reshape(len(rows), NUM_PERM)
    hashes = band_hashes(sigs)
    conn.executemany(
        "delete from passage_bands where band = ? and hash = ? and passage_id = ?",
        ((band, int(hashes[row, band]), pid) for row, pid in enumerate(ids) for band in range(BANDS)),
    )
    gone = _json_ids(ids)
    conn.execute("delete from passage_minhash where passage_id in (select value from json_each(?))", [gone])
    conn.execute(
        "delete from passage_dups where a in (select value from json_each(?)) or b in (select value from json_each(?))",
        [gone, gone],
    )
    return ids


# A new passage's candidates are the anchors of its buckets: in each bucket, the first passage of
# each article, for at most BUCKET_ANCHORS articles. Copies still meet (an anchor is a copy they
# share), while a text repeated through one long article, or a line that hundreds of articles
# carry, costs time linear in the passages instead of quadratic.
BUCKET_ANCHORS = 64
_MATCH_TABLES_SQL = (
    "create temp table if not exists new_bands (band INTEGER, hash INTEGER, passage_id INTEGER, "
    "PRIMARY KEY (band, hash, passage_id)) WITHOUT ROWID",
    "create temp table if not exists bucket_anchors (band INTEGER, hash INTEGER, passage_id INTEGER, "
    "PRIMARY KEY (band, hash, passage_id)) WITHOUT ROWID",
)
_ANCHORS_SQL = """
insert into bucket_anchors (band, hash, passage_id)
with members as (
    select k.band, k.hash, b.passage_id, count(*) over (partition by k.band, k.hash) as size
    from (select distinct band, hash from new_bands) k
    cross join passage_bands b on b.band = k.band and b.hash = k.hash
),
firsts as (
    select m.band, m.hash, min(m.passage_id) as passage_id
    from members m join passages p on p.id = m.passage_id
    where m.size > 1
    group by m.band, m.hash, p.article_id
)
select band, hash, passage_id from (
    select band, hash, passage_id, row_number() over (partition by band, hash order by passage_id) as nth
    from firsts
) where nth <= ?
"""
_CANDIDATES_SQL = """
select distinct min(n.passage_id, a.passage_id), max(n.passage_id, a.passage_id)
from new_bands n join bucket_anchors a on a.band = n.band and a.hash = n.hash and a.passage_id != n.passage_id
"""


def _sign_and_match(conn, ids: list[int]) -> int:  # type: ignore[no-untyped-def]
    """Sign `ids`, store their bands, find and verify their candidates; returns pairs added."""
    texts = dict(
        conn.execute("select id, text from passages where id in (select value from json_each(?))", [_json_ids(ids)])
    )
    sets = {pid: shingles(texts[pid]) for pid in ids}
    sigs = signatures([sets[pid] for pid in ids])
    hashes = band_hashes(sigs)
    conn.executemany(
        "insert into passage_minhash (passage_id, sig) values (?, ?)",
        ((pid, sigs[row].astype("<u8").tobytes()) for row, pid in enumerate(ids)),
    )
    rows = [(band, int(hashes[row, band]), pid) for row, pid in enumerate(ids) for band in range(BANDS)]
    for sql in _MATCH_TABLES_SQL:
        conn.execute(sql)
    conn.executemany("insert into new_bands values (?, ?, ?)", rows)
    conn.executemany("insert or ignore into passage_bands (band, hash, passage_id) values (?, ?, ?)", rows)
    conn.execute(_ANCHORS_SQL, [BUCKET_ANCHORS])
    candidates = set(conn.execute(_CANDIDATES_SQL).fetchall())
    conn.execute("delete from new_bands")
    conn.execute("delete from bucket_anchors")
    if not candidates:
        return 0
    others = {i for pair in candidates for i in pair} - sets.keys()
    if others:
        for pid, text in conn.execute(
            "select id, text from passages where id in (select value from json_each(?))", [_json_ids(others)]
        ):
            sets[pid] = shingles(text)
    articles = dict(
        conn.execute(
            "select id, article_id from passages where id in (select value from json_each(?))",
            [_json_ids({i for pair in candidates for i in pair})],
        )
    )
    # Copies are across articles: an article repeating itself (a lead restated) stays as it is.
    textual = [
        (a, b)
        for a, b in sorted(candidates)
        if a in sets and b in sets and articles[a] != articles[b] and similar(sets[a], sets[b])
    ]
    if not textual:
        return 0
    involved = {i for pair in textual for i in pair}
    vectors = {
        pid: np.frombuffer(blob, dtype=np.float32)
        for pid, blob in conn.execute(
            "select id, embedding from passages where id in (select value from json_each(?))", [_json_ids(involved)]
        )
    }
    verified = [(a, b, jaccard(sets[a], sets[b])) for a, b in textual if _cosine(vectors[a], vectors[b]) >= MIN_COSINE]
    conn.executemany("insert or ignore into passage_dups (a, b, jaccard) values (?, ?, ?)", verified)
    return len(verified)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm else 0.0


def _regroup(conn, seeds: set[int]) -> int:  # type: ignore[no-untyped-def]
    """Recompute the groups containing `seeds`; returns how many groups they form.

    A group gathers the passages connected by duplicate pairs, but never two passages of one
    article (a lead restated later in the article, each copy of it republished, would link the
    two through the copies): pairs are joined most similar first, earliest passages first among
    equals, and a pair that would put two passages of an article in one group is left out."""
    seen: set[int] = set()
    groups = 0
    for seed in sorted(seeds):
        if seed in seen:
            continue
        component, edges = {seed}, set()
        frontier = [seed]
        while frontier:
            ids = _json_ids(frontier)
            found = conn.execute(
                "select a, b, jaccard from passage_dups where a in (select value from json_each(?1)) "
                "or b in (select value from json_each(?1))",
                [ids],
            ).fetchall()
            edges.update(found)
            reached = {i for a, b, _ in found for i in (a, b)}
            frontier = list(reached - component)
            component |= reached
        seen |= component
        sql = "select id, article_id from passages where id in (select value from json_each(?))"
        articles = dict(conn.execute(sql, [_json_ids(component)]))
        for part in _groups(component, sorted(edges, key=lambda e: (-e[2], e[0], e[1])), articles):
            if len(part) > 1:
                groups += 1
                conn.executemany(
                    "insert or replace into passage_groups (passage_id, group_id) values (?, ?)",
                    ((pid, min(part)) for pid in part),
                )
            else:
                conn.executemany("delete from passage_groups where passage_id = ?", [(pid,) for pid in part])
    return groups


def _groups(nodes: set[int], edges: Iterable[tuple[int, int, float]], articles: dict[int, str]) -> list[set[int]]:
    """Union-find over `edges` in order, refusing unions of groups that share an article."""
    parent = {n: n for n in nodes}
    owners = {n: {articles.get(n)} for n in nodes}

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b, _ in edges:
        ra, rb = root(a), root(b)
        if ra != rb and not owners[ra] & owners[rb]:
            parent[ra] = rb
            owners[rb] |= owners.pop(ra)
    parts: dict[int, set[int]] = {}
    for n in nodes:
        parts.setdefault(root(n), set()).add(n)
    return list(parts.values())
