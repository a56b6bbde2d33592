"""What an index holds, for people browsing it: articles newest first, counts per outlet.

One summary for `python -m index info` and the bot's `/sources` (which pages through
`newest_first`), so both say the same thing.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def newest_first(articles: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Articles by date, newest first (undated last), then by id."""
    ordered = sorted(articles, key=lambda a: str(a.get("id") or ""))
    return sorted(ordered, key=lambda a: (bool(a.get("date")), str(a.get("date") or "")), reverse=True)


def outlets(articles: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(source, articles) pairs, most articles first; articles without a source count as ""."""
    counts = Counter(str(a.get("source") or "") for a in articles)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def summary(articles: Iterable[Mapping[str, Any]], duplicate_groups: int = 0) -> dict[str, Any]:
    """Counts, date range, articles per outlet and groups of republished passages."""
    items = list(articles)
    dates = sorted(str(a["date"]) for a in items if a.get("date"))
    return {
        "articles": len(items),
        "passages": sum(int(a.get("passages") or 0) for a in items),
        "newest": dates[-1] if dates else "",
        "oldest": dates[0] if dates else "",
        "outlets": dict(outlets(items)),
        "duplicate_groups": duplicate_groups,
    }


def duplicate_groups(conn: sqlite3.Connection) -> int:
    """Groups of republished passages in an index database (0 before groups existed)."""
    try:
        return int(conn.execute("select count(distinct group_id) from passage_groups").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
