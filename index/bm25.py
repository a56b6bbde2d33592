"""BM25 scoring over the postings `index.store.write_bm25` stores (numpy arrays in SQLite blobs).

FTS5 calls its bm25() once per matching row (~1 µs), and a common term matches most of a
large index; here a question costs time in proportion to the postings it reads, and commoner
terms only rescore the candidates (MaxScore). `index.backends.sqlite_faiss.SqliteFaissReader.lexical` decides which
terms are read in full.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

# One term's (top weight, ascending passage positions, weights).
TermPostings = tuple[float, np.ndarray, np.ndarray]


class Postings:
    """The in-memory part of a version's BM25 postings (`index.store.write_bm25`): the passage
    ids by position, and one score accumulator reused by every question (zeroed again after
    use, under `lock`), so a question costs time in proportion to the postings it reads, not
    to the size of the index."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.accumulator = np.zeros(len(ids), dtype=np.float32)
        self.lock = threading.Lock()

    def scores(
        self, essential: Sequence[TermPostings], rest: Sequence[TermPostings], limit: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(positions, scores, exact): the best `limit` passages, best first. `essential` terms
        (top weight, docs, weights) are scored over all their postings; the `rest` only add
        their weight to passages that can still make the top `limit` (MaxScore): a passage
        scores at most its essential part plus the `rest`'s top weights. Not `exact` when a
        passage holding none of the essential terms might belong to the top `limit` (fewer
        than `limit` passages hold one, or the rest's top weights reach the `limit`-th score),
        or when more than 10·limit candidates could."""
        if len(essential) == 1:  # one term: its weights are the scores
            postings, partial = essential[0][1], essential[0][2]
        else:
            postings = np.concatenate([d for _, d, _ in essential]).astype(np.intp)
            with self.lock:
                acc = self.accumulator
                # in term order, as `acc[docs] += weights` per term would (same sums), in one
                # unbuffered pass (numpy >= 2: ~2x faster than a fancy-index += per term)
                np.add.at(acc, postings, np.concatenate([w for _, _, w in essential]))
                partial = acc[postings]
                acc[postings] = 0.0
        spread = len(essential)  # a passage occurs once per essential term it holds
        positions, best = best_distinct(postings, partial, limit, spread)
        if not rest:
            return positions, best, True
        full = best + weights_at(rest, positions)
        bound = sum(top for top, _, _ in rest)
        threshold = float(full.min()) if len(positions) >= limit else 0.0
        exact = len(positions) >= limit and threshold >= bound
        reachable = partial >= threshold - bound
        if int(reachable.sum()) > len(positions):
            cap = 10 * limit
            positions, best = best_distinct(postings[reachable], partial[reachable], cap + 1, spread)
            if len(positions) > cap:
                positions, best, exact = positions[:cap], best[:cap], False
            full = best + weights_at(rest, positions)
        order = np.argsort(-full, kind="stable")[:limit]
        return positions[order], full[order], exact


def weights_at(terms: Sequence[TermPostings], positions: np.ndarray) -> np.ndarray:
    """The terms' summed weight in each passage at `positions` (binary search in their sorted
    postings: no pass over a common term's whole list)."""
    out = np.zeros(len(positions), dtype=np.float32)
    for _, docs, weights in terms:
        at = np.minimum(np.searchsorted(docs, positions), len(docs) - 1)
        hit = docs[at] == positions
        out[hit] += weights[at[hit]]
    return out


def best_distinct(positions: np.ndarray, scores: np.ndarray, n: int, spread: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best distinct positions, best first, from entries where one position occurs up
    to `spread` times with the same score (so the best n·spread entries hold the best n)."""
    take = min(len(positions), n * spread)
    if take < len(positions):
        picked = np.argpartition(-scores, take - 1)[:take]
        positions, scores = positions[picked], scores[picked]
    positions, first = np.unique(positions, return_index=True)
    scores = scores[first]
    order = np.argsort(-scores, kind="stable")[:n]
    return positions[order], scores[order]
