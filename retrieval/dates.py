"""Dates in questions: "6月9日", "2021年5月", "June 9", "上个月", "最新", "first".

A question that names a date or period prefers passages about it: passages that mention a
date in it ("6月9日", "截至9日15时", "昨天" read against the article's own date), or that come
from an article published in it. Recency words prefer the newest relevant articles ("最新 /
最近 / latest / recent") or the oldest ("最早 / first"). Relative periods ("上个月", "last
week", "yesterday") count from the newest article in the index, not from today: the corpus is
news of its own time.

The preference is a bonus added to the fused scores of the candidates that are already
relevant (the best `CANDIDATES`, within `MARGIN` of the best), so a date never lifts an unrelated passage, and a
question without a date is ranked exactly as before (`adjust` returns the scores untouched).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

# Bonuses in fused-score units (z-scores of the two rankers) and the band of candidates they
# apply to; chosen on the generated story corpus (`bench/many.py`, seeds 0-1, see bench/README).
MENTION_BONUS = 1.0  # the passage mentions a date in the asked period
PUBLISHED_BONUS = 0.6  # its article was published in the asked period
RECENCY_BONUS = 1.0  # the newest (or oldest) relevant article, scaled down to 0 for the other end
MARGIN = 2.0
CANDIDATES = 30  # at most this many of the best candidates are read for dates (~0.3 ms each)

_CN_DIGITS = {ch: i for i, ch in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_NUM = r"(\d{1,2}|[〇零一二两三四五六七八九十]{1,3})"
_MONTHS = {
    name: i for i in range(1, 13) for name in (calendar.month_name[i].lower(), calendar.month_abbr[i].lower())
} | {"sept": 9}
_MONTH = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"

_ZH_FULL = re.compile(r"(\d{4})\s*年\s*" + _NUM + r"\s*月\s*" + _NUM + r"\s*[日号號]")
_ZH_MONTH_DAY = re.compile(r"(?<![\d年])" + _NUM + r"\s*月\s*" + _NUM + r"\s*[日号號]")
_ZH_YEAR_MONTH = re.compile(r"(\d{4})\s*年\s*" + _NUM + r"\s*月(?!\s*" + _NUM + r"\s*[日号號])")
_ZH_MONTH = re.compile(r"(?<![\d年〇零一二两三四五六七八九十上下本这這个個])" + _NUM + r"\s*月份?(?!\s*" + _NUM + r")")
_ZH_DAY = re.compile(r"(?<![\d月])(\d{1,2})\s*[日号號](?!\s*[报報])")
_ZH_YEAR = re.compile(r"(\d{4})\s*年(?!\s*" + _NUM + r"\s*月)")
_ISO = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_EN_MONTH_DAY = re.compile(r"\b" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s*(\d{4}))?", re.IGNORECASE)
_EN_DAY_MONTH = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"\b(?:,?\s*(\d{4}))?", re.IGNORECASE)
# A month name alone only after a preposition ("in May", "since June 2021"): "may" is a verb too.
_EN_MONTH = re.compile(
    r"\b(?:in|during|since|of|early|mid|late|by|until|before|after)\s+(?:early\s+|mid-?\s*|late\s+)?"
    + _MONTH
    + r"\b(?:,?\s*(\d{4}))?",
    re.IGNORECASE,
)
_RELATIVE = (
    (re.compile(r"上个?月|上個?月|last month", re.IGNORECASE), "last_month"),
    (re.compile(r"本月|这个月|這個月|this month", re.IGNORECASE), "this_month"),
    (re.compile(r"上周|上星期|上週|上禮拜|上礼拜|last week", re.IGNORECASE), "last_week"),
    (re.compile(r"前天|day before yesterday", re.IGNORECASE), "day_before"),
    (re.compile(r"昨天|昨日|yesterday", re.IGNORECASE), "yesterday"),
    (re.compile(r"今天|今日|today", re.IGNORECASE), "today"),
    (re.compile(r"去年|last year", re.IGNORECASE), "last_year"),
    (re.compile(r"今年|this year", re.IGNORECASE), "this_year"),
)
_NEWEST = re.compile(r"最新|最近|近期|近日|latest|most recent|recent(?:ly)?|newest|lately", re.IGNORECASE)
_OLDEST = re.compile(r"最早|最初|起初|首次|第一次|earliest|\bfirst\b|originally|initially", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    """An inclusive range of days."""

    start: date
    end: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def overlaps(self, other: Period) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class DateQuery:
    """What a question asks about time: periods it names, and +1 newest / -1 oldest / 0."""

    periods: tuple[Period, ...] = ()
    recency: int = 0

    def __bool__(self) -> bool:
        return bool(self.periods or self.recency)


def parse_date(text: str) -> date | None:
    """An article's `date` field (`2021-06-10`, `2021/6/10`, `2021-06-10T08:00…`)."""
    match = _ISO.match(text.strip())
    return _day(int(match[1]), int(match[2]), int(match[3])) if match else None


def _number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text.startswith("十"):  # 十, 十一 … 十九
        return 10 + (_CN_DIGITS[text[1]] if len(text) > 1 else 0)
    if "十" in text:  # 二十, 二十一, 三十一
        tens, _, ones = text.partition("十")
        return _CN_DIGITS[tens] * 10 + (_CN_DIGITS[ones] if ones else 0)
    return _CN_DIGITS.get(text, 0) if len(text) == 1 else 0


def _day(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month(year: int, month: int) -> Period | None:
    if not 1 <= month <= 12 or not 1900 <= year <= 2200:
        return None
    return Period(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))


def _near_year(month: int, day: int, reference: date) -> int:
    """The year of a date given without one: the reference's, unless that puts it well after
    the reference (then the year before: "12月" asked in January)."""
    candidate = _day(reference.year, month, min(day, 28))
    return reference.year - 1 if candidate and candidate > reference + timedelta(days=31) else reference.year


def periods_in(text: str, reference: date, *, days_alone: bool = False) -> list[Period]:
    """The dates and periods `text` names, years and relative words read against `reference`.
    `days_alone` also reads "9日" as a day of the reference's month (passages do, questions
    rarely: "15日" in a question is usually that, but "3日游" is not)."""
    found: list[Period] = []
    taken: list[tuple[int, int]] = []

    def free(match: re.Match[str]) -> bool:
        return not any(s < match.end() and match.start() < e for s, e in taken)

    def add(period: Period | None, match: re.Match[str]) -> None:
        if period is not None and free(match):
            found.append(period)
            taken.append(match.span())

    for m in _ZH_FULL.finditer(text):
        day = _day(int(m[1]), _number(m[2]), _number(m[3]))
        add(Period(day, day) if day else None, m)
    for m in _ISO.finditer(text):
        day = _day(int(m[1]), int(m[2]), int(m[3]))
        add(Period(day, day) if day else None, m)
    for m in _ZH_MONTH_DAY.finditer(text):
        month, day_number = _number(m[1]), _number(m[2])
        day = _day(_near_year(month, day_number, reference), month, day_number) if month else None
        add(Period(day, day) if day else None, m)
    for m in _EN_MONTH_DAY.finditer(text):
        month, day_number = _MONTHS[m[1].lower()], int(m[2])
        year = int(m[3]) if m[3] else _near_year(month, day_number, reference)
        day = _day(year, month, day_number)
        add(Period(day, day) if day else None, m)
    for m in _EN_DAY_MONTH.finditer(text):
        month, day_number = _MONTHS[m[2].lower()], int(m[1])
        year = int(m[3]) if m[3] else _near_year(month, day_number, reference)
        day = _day(year, month, day_number)
        add(Period(day, day) if day else None, m)
    for m in _ZH_YEAR_MONTH.finditer(text):
        add(_month(int(m[1]), _number(m[2])), m)
    for m in _EN_MONTH.finditer(text):
        month = _MONTHS[m[1].lower()]
        add(_month(int(m[2]) if m[2] else _near_year(month, 1, reference), month), m)
    for m in _ZH_MONTH.finditer(text):
        month = _number(m[1])
        add(_month(_near_year(month, 1, reference), month) if month else None, m)
    for m in _ZH_YEAR.finditer(text):
        year = int(m[1])
        add(Period(date(year, 1, 1), date(year, 12, 31)) if 1900 <= year <= 2200 else None, m)
    if days_alone:
        for m in _ZH_DAY.finditer(text):
            day = _day(reference.year, reference.month, int(m[1]))
            if day and day > reference:  # "28日" in an article of the 10th: the month before
                previous = reference.replace(day=1) - timedelta(days=1)
                day = _day(previous.year, previous.month, int(m[1]))
            add(Period(day, day) if day else None, m)
    for pattern, kind in _RELATIVE:
        for m in pattern.finditer(text):
            add(_relative(kind, reference), m)
    return found


def _relative(kind: str, reference: date) -> Period:
    if kind == "last_month":
        last = reference.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last)
    if kind == "this_month":
        return Period(reference.replace(day=1), reference)
    if kind == "last_week":
        monday = reference - timedelta(days=reference.weekday())
        return Period(monday - timedelta(days=7), monday - timedelta(days=1))
    if kind in ("yesterday", "day_before", "today"):
        day = reference - timedelta(days={"yesterday": 1, "day_before": 2, "today": 0}[kind])
        return Period(day, day)
    year = reference.year - (kind == "last_year")
    return Period(date(year, 1, 1), date(year, 12, 31))


def parse_question(question: str, reference: date) -> DateQuery:
    """The date query of a question; `reference` is the newest article's date."""
    recency = 1 if _NEWEST.search(question) else -1 if _OLDEST.search(question) else 0
    return DateQuery(tuple(periods_in(question, reference)), recency)


def reference_date(article_dates: Iterable[str]) -> date | None:
    """The newest of the articles' dates: what "latest" and relative periods count from."""
    return max((d for d in map(parse_date, article_dates) if d), default=None)


def adjust(
    query: DateQuery,
    reference: date | None,
    candidate_ids: Sequence[int],
    fused: np.ndarray,
    passages: Callable[[Sequence[int]], dict[int, tuple[str, str]]],
) -> np.ndarray:
    """`fused` with the preferences of a question's date `query` added (the same array when
    it has none).

    `reference`: the index's newest article date (an undated article's passages are read
    against it); `passages(ids)`: passage id → (text, its article's date) for the few best
    candidates."""
    if reference is None or not query or not len(fused):
        return fused
    relevant = np.argsort(-fused, kind="stable")[:CANDIDATES]
    relevant = relevant[fused[relevant] >= fused.max() - MARGIN]
    ids = [int(candidate_ids[i]) for i in relevant]
    rows = {pid: (text, parse_date(day or "")) for pid, (text, day) in passages(ids).items()}
    bonus = np.zeros_like(fused)
    if query.periods:
        for position, passage_id in zip(relevant, ids, strict=True):
            text, published = rows.get(passage_id, ("", None))
            if published and any(published in p for p in query.periods):
                bonus[position] += PUBLISHED_BONUS
            if _mentions(text, published or reference, query.periods):
                bonus[position] += MENTION_BONUS
    if query.recency:
        ordinals = {
            position: rows[pid][1].toordinal()  # type: ignore[union-attr]
            for position, pid in zip(relevant, ids, strict=True)
            if pid in rows and rows[pid][1]
        }
        if ordinals:
            low, high = min(ordinals.values()), max(ordinals.values())
            for position, value in ordinals.items():
                share = (value - low) / (high - low) if high > low else 1.0
                bonus[position] += RECENCY_BONUS * (share if query.recency > 0 else 1.0 - share)
    return fused + bonus


def _mentions(text: str, published: date, periods: Iterable[Period]) -> bool:
    mentioned = _mentioned(text, published)
    return any((m.overlaps(p) and (m.end - m.start).days < 31) or m == p for m in mentioned for p in periods)


@lru_cache(maxsize=20_000)
def _mentioned(text: str, published: date) -> tuple[Period, ...]:
    """The periods a passage names: the same for every dated question it is a candidate of."""
    return tuple(periods_in(text, published, days_alone=True))
