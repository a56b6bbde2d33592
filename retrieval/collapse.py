"""Collapse republished copies in a ranking: each group of near-duplicate passages
(`index.dedup`) is quoted once, in its earliest version, with the other copies cited briefly.

A group takes the rank of its best-scoring member; the ranks its other members would have
taken go to the next distinct passages, so `k` (and the bot's **More**) counts distinct
passages. The quoted version is the group's earliest: the article with the oldest date (an
undated article counts as newest), then the lowest passage id (the one indexed first) -
unless the copy that earned the rank holds more of the question's terms (an edit added the
sentence the question is about): then that copy is quoted and the earliest cited with the others.

An article's other URLs (the same text added again from elsewhere, `article_aliases`) are
cited the same way, so an article added twice is shown once with both sources.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from index.backends.base import CopyRow
from retrieval.model import Also


def _age_key(member: CopyRow) -> tuple[str, int]:
    """Oldest first: by article date (undated counts as newest), then by passage id."""
    return (member.date or "\uffff", member.passage_id)


def _citations(member: CopyRow) -> list[Also]:
    """This copy and its article's other URLs, as `Also` entries."""
    m = member
    own = Also(m.source, m.date, m.title, m.url, m.article_id, m.passage_id)
    return [own] + [Also(s, d, m.title, u, m.article_id, m.passage_id) for s, d, u in m.aliases]


@dataclass(frozen=True)
class Pick:
    """One distinct result: `ranked_id` is the member that earned the rank (its scores are the
    hit's), `members` its whole group, oldest first (empty for a passage without copies)."""

    ranked_id: int
    members: tuple[CopyRow, ...] = ()

    def candidates(self) -> list[int]:
        """The passages `quote` may choose between: the earliest version and the ranked one."""
        return list(dict.fromkeys([self.members[0].passage_id, self.ranked_id] if self.members else [self.ranked_id]))

    def quote(self, terms: dict[int, str], query_terms: Sequence[str]) -> tuple[int, tuple[Also, ...]]:
        """(passage to quote, the other copies, one per article). The earliest version, unless
        it holds fewer of the question's terms than the ranked copy (`terms`: passage id → its
        index terms), i.e. a later edit added what the question asks about."""
        if not self.members:
            return self.ranked_id, ()
        quoted = self.members[0].passage_id
        if quoted != self.ranked_id and query_terms:
            wanted = set(query_terms)
            if len(wanted & set(terms[self.ranked_id].split())) > len(wanted & set(terms[quoted].split())):
                quoted = self.ranked_id
        first = next(m for m in self.members if m.passage_id == quoted)
        also = _citations(first)[1:]
        articles = {first.article_id}
        for m in self.members:
            if m.article_id not in articles:
                articles.add(m.article_id)
                also += _citations(m)
        return quoted, tuple(also)


def group_members(rows: Sequence[CopyRow]) -> dict[int, list[CopyRow]]:
    """Passage id → all members of its group (itself included), oldest first, from the index's
    copy rows (`IndexReader.copies`): passages in a group, or whose article has other URLs."""
    groups: dict[int, list[CopyRow]] = {}
    for r in rows:
        groups.setdefault(r.group_id or -r.passage_id, []).append(r)
    out: dict[int, list[CopyRow]] = {}
    for members in groups.values():
        members.sort(key=_age_key)
        for member in members:
            out[member.passage_id] = members
    return out


def pick(ranked: Sequence[int], groups: dict[int, list[CopyRow]], k: int) -> list[Pick]:
    """The first `k` distinct results of `ranked` (best first), one per group."""
    picks: list[Pick] = []
    seen: set[int] = set()
    for passage_id in ranked:
        if len(picks) >= k:
            break
        if passage_id in seen:
            continue
        members = groups.get(passage_id, [])
        seen.add(passage_id)
        seen.update(m.passage_id for m in members)
        picks.append(Pick(passage_id, tuple(members)))
    return picks


def distinct(copies: Callable[[Sequence[int]], list[CopyRow]], ranked: Sequence[int], k: int) -> list[Pick]:
    """`pick` over `ranked`, reading the groups of the best 2k passages first and of more only
    when copies leave fewer than k distinct (a question's candidates number in the hundreds)."""
    window = 0
    while True:
        window = min(len(ranked), max(2 * k, 2 * window))
        picks = pick(ranked[:window], group_members(copies(ranked[:window])), k)
        if len(picks) >= k or window >= len(ranked):
            return picks
