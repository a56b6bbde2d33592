"""Replies as a small document model, rendered to Telegram HTML or to a terminal.

Builders turn a `Reply` (or browsing data) into a `Doc`: lines of spans and passages
(a quote with its highlighted sentence, plus its citation). `to_html` is the only place
that produces Telegram HTML: everything from articles or users is escaped there, only
`<b>`, `<a href>` and `<blockquote>` are emitted, and the text after entity parsing is
kept within Telegram's 4096 UTF-16 units by trimming quotes at sentence boundaries
(with "…") and, only if that is not enough, dropping trailing passages. Because trimming
happens on plain text before escaping, no tag or entity can ever be cut in half.
`to_text` renders the same `Doc` for the console.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from corpus.splitter import split_sentences
from index import overview
from retrieval import format_citation
from retrieval.model import Also, format_also
from telegram_bot.feedback import Stats
from telegram_bot.i18n import EXAMPLES, t
from telegram_bot.pipeline import Kind, Library, Reply

TELEGRAM_LIMIT = 4096  # message text after entity parsing, in UTF-16 code units
ELLIPSIS = "…"
MIN_QUOTE = 24  # below this a quote is useless: drop a passage instead
MAX_URL = 2048

_UNSAFE = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_CLAUSE_END = "，,、；;：: "


# ---------------------------------------------------------------- document model
@dataclass(frozen=True)
class Span:
    """A run of text; `url` makes it a link (only http/https URLs are ever linked)."""

    text: str
    bold: bool = False
    url: str = ""


@dataclass(frozen=True)
class Line:
    spans: tuple[Span, ...] = ()

    @classmethod
    def of(cls, text: str, *, bold: bool = False) -> Line:
        return cls((Span(text, bold=bold),))


@dataclass(frozen=True)
class Quote:
    """A passage to quote; `text[start:end]` is the sentence to highlight (may be empty)."""

    text: str
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class Passage:
    """A quote and its citation: kept or dropped together."""

    quote: Quote
    citation: Line


Block = Line | Passage
Doc = tuple[Block, ...]


def clean(text: str) -> str:
    """Remove what Telegram rejects or a terminal misprints: lone surrogates, control chars."""
    return _UNSAFE.sub("", text)


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, ending with "…" when cut."""
    text = " ".join(clean(text).split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def safe_url(url: str) -> str:
    """The URL if it is a plausible http(s) link Telegram will accept, else ""."""
    url = url.strip()
    if len(url) > MAX_URL or not re.match(r"^https?://[^\s/$.?#<>\"'][^\s<>\"]*$", url, re.IGNORECASE):
        return ""
    return url


# ---------------------------------------------------------------- quote trimming
@dataclass(frozen=True)
class _Fitted:
    """A quote cut to size: `head` + bold `mark` + `tail` (each already cleaned)."""

    head: str
    mark: str
    tail: str

    @property
    def units(self) -> int:
        return units(self.head) + units(self.mark) + units(self.tail)


def _cut_units(text: str, budget: int) -> str:
    """The longest prefix of `text` within `budget` units, preferring a clause boundary."""
    used = 0
    end = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > budget:
            break
        end = i + 1
    prefix = text[:end]
    if end < len(text):
        cut = max(prefix.rfind(c) for c in _CLAUSE_END)
        if cut >= len(prefix) * 0.6:
            prefix = prefix[: cut + 1]
    return prefix


def _sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text) if e > s] if text else []


def fit_quote(quote: Quote, budget: int) -> _Fitted | None:
    """The quote within `budget` units: whole sentences around the highlighted one, "…"
    where something was left out. None when not even a stub fits."""
    text = quote.text
    start = min(max(quote.start, 0), len(text))
    end = min(max(quote.end, start), len(text))
    before, mark, after = clean(text[:start]).lstrip(), clean(text[start:end]), clean(text[end:]).rstrip()
    if not mark.strip():
        before, mark, after = "", "", clean(text).strip()
    whole = _Fitted(before, mark, after)
    if whole.units <= budget:
        return whole
    if budget < 2:
        return None
    if not mark:
        # Nothing highlighted: keep the opening sentences.
        kept = ""
        for sentence in _sentences(after):
            if units(kept) + units(sentence) + 1 > budget:
                break
            kept += sentence
        if not kept:
            kept = _cut_units(after, budget - 1)
        return _Fitted("", "", kept.rstrip() + ELLIPSIS) if kept.strip() else None
    room = budget - (1 if before else 0) - 1
    if units(mark) > room + (0 if after else 1):
        # Even the highlighted sentence is too long: keep its beginning.
        cut = _cut_units(mark, room)
        if not cut.strip():
            return None
        return _Fitted(ELLIPSIS if before else "", cut.rstrip() + ELLIPSIS, "")
    heads = _sentences(before)
    tails = _sentences(after)
    room = budget - units(mark) - 2  # reserve an ellipsis on each side
    head: list[str] = []
    tail: list[str] = []
    take_head = bool(heads)
    take_tail = bool(tails)
    while take_head or take_tail:
        if take_tail:
            sentence = tails[len(tail)]
            if units(sentence) <= room:
                tail.append(sentence)
                room -= units(sentence)
                take_tail = len(tail) < len(tails)
            else:
                take_tail = False
        if take_head:
            sentence = heads[len(heads) - 1 - len(head)]
            if units(sentence) <= room:
                head.insert(0, sentence)
                room -= units(sentence)
                take_head = len(head) < len(heads)
            else:
                take_head = False
    head_text = ("" if len(head) == len(heads) else ELLIPSIS) + "".join(head).lstrip()
    tail_text = "".join(tail).rstrip() + ("" if len(tail) == len(tails) else ELLIPSIS)
    return _Fitted(head_text, mark, tail_text)


# ---------------------------------------------------------------- HTML
def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _span_html(span: Span) -> str:
    body = _esc(clean(span.text))
    if not body:
        return ""
    if span.bold:
        body = f"<b>{body}</b>"
    url = safe_url(span.url)
    if url:
        body = f'<a href="{html.escape(url, quote=True)}">{body}</a>'
    return body


def _line_html(line: Line) -> str:
    return "".join(_span_html(s) for s in line.spans)


def _line_units(line: Line) -> int:
    return sum(units(clean(s.text)) for s in line.spans)


def _quote_html(fitted: _Fitted) -> str:
    mark = f"<b>{_esc(fitted.mark)}</b>" if fitted.mark else ""
    return f"<blockquote>{_esc(fitted.head)}{mark}{_esc(fitted.tail)}</blockquote>"


def _caps(natural: Sequence[int], available: int) -> list[int]:
    """Max-min fair shares of `available` units: short quotes keep all they need."""
    if sum(natural) <= available:
        return list(natural)
    low, high = 0, max(natural)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in natural) <= available:
            low = mid
        else:
            high = mid - 1
    return [min(n, low) for n in natural]


def _truncate_line(line: Line, budget: int) -> Line:
    spans: list[Span] = []
    left = budget
    for span in line.spans:
        text = clean(span.text)
        if units(text) <= left:
            spans.append(span)
            left -= units(text)
            continue
        cut = _cut_units(text, max(left - 1, 0))
        spans.append(Span(cut + ELLIPSIS, span.bold, span.url))
        break
    return Line(tuple(spans))


def to_html(doc: Doc, limit: int = TELEGRAM_LIMIT) -> str:
    """Telegram HTML for `doc` whose text after entity parsing is at most `limit` units."""
    blocks = list(doc)
    while True:
        passages = [b for b in blocks if isinstance(b, Passage)]
        fixed = max(len(blocks) - 1, 0)  # the newlines between blocks
        fixed += sum(_line_units(b if isinstance(b, Line) else b.citation) for b in blocks)
        fixed += len(passages)  # newline between a quote and its citation
        available = limit - fixed
        natural = [fit_quote(p.quote, 10**9) for p in passages]
        caps = _caps([f.units if f else 0 for f in natural], max(available, 0))
        fitted = [
            fit_quote(p.quote, cap) if cap < (f.units if f else 0) else f
            for p, cap, f in zip(passages, caps, natural, strict=True)
        ]
        too_small = any(
            f is None or (cap < MIN_QUOTE and cap < n.units)
            for f, cap, n in zip(fitted, caps, natural, strict=True)
            if n is not None
        )
        if (available < 0 or too_small) and len(passages) > 1:
            # Drop the last passage (and the blank line before it), give the others room.
            at = blocks.index(passages[-1])
            blank = at > 0 and blocks[at - 1] == Line()
            del blocks[at - 1 if blank else at : at + 1]
            continue
        break
    parts: list[str] = []
    quotes = iter(fitted)
    for block in blocks:
        if isinstance(block, Line):
            parts.append(_line_html(block))
        else:
            fit = next(quotes)
            quote = _quote_html(fit) if fit is not None and (fit.mark or fit.tail or fit.head) else ""
            parts.append(quote + "\n" + _line_html(block.citation))
    result = "\n".join(parts)
    if available < 0:
        # Only lines so long they cannot fit (never from our builders): cut block by block.
        result = _hard_fit(blocks, limit)
    return result


def _hard_fit(blocks: Sequence[Block], limit: int) -> str:
    parts: list[str] = []
    left = limit
    for block in blocks:
        line = block if isinstance(block, Line) else block.citation
        need = _line_units(line) + (1 if parts else 0)
        if need <= left:
            parts.append(_line_html(line))
            left -= need
            continue
        if left - (1 if parts else 0) >= 2:
            parts.append(_line_html(_truncate_line(line, left - (1 if parts else 0))))
        break
    return "\n".join(parts)


def html_to_plain(doc: Doc, limit: int = TELEGRAM_LIMIT) -> str:
    """The same message without markup: the fallback when Telegram rejects the HTML."""
    return html.unescape(re.sub(r"<[^>]+>", "", to_html(doc, limit)))


# ---------------------------------------------------------------- terminal
_BOLD = ("\x1b[1;33m", "\x1b[0m")
_DIM = ("\x1b[2m", "\x1b[0m")


def to_text(doc: Doc, *, ansi: bool = False) -> str:
    """The console rendering: quotes as "> …" lines, highlight in bold (or **…** in a pipe)."""
    on, off = _BOLD if ansi else ("**", "**")
    lines: list[str] = []
    for block in doc:
        if isinstance(block, Line):
            lines.append(_line_text(block, ansi))
            continue
        fit = fit_quote(block.quote, 10**9)
        if fit is not None:
            mark = f"{on}{fit.mark}{off}" if fit.mark else ""
            lines.append(f"> {fit.head}{mark}{fit.tail}")
        lines.append(_line_text(block.citation, ansi))
    return "\n".join(lines)


def _line_text(line: Line, ansi: bool) -> str:
    out = []
    for span in line.spans:
        text = clean(span.text)
        if span.bold and ansi:
            text = f"{_BOLD[0]}{text}{_BOLD[1]}"
        url = safe_url(span.url)
        if url:
            text = f"{text} {_DIM[0]}<{url}>{_DIM[1]}" if ansi else f"{text} <{url}>"
        out.append(text)
    return "".join(out)


# ---------------------------------------------------------------- builders
class Citable(Protocol):
    """A `Hit` or a `PassageRow`: what a citation needs."""

    @property
    def source(self) -> str: ...
    @property
    def date(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def section(self) -> str: ...
    @property
    def paragraph(self) -> int: ...
    @property
    def paragraph_end(self) -> int: ...
    @property
    def url(self) -> str: ...


def citation(item: Citable) -> Line:
    """ "— 《source》date · title · section · ¶n", linked to the article when it has a URL."""
    text = format_citation(
        clip(item.source, 40),
        clip(item.date, 20),
        clip(item.title, 120),
        clip(item.section, 60),
        item.paragraph,
        item.paragraph_end,
    )
    return Line((Span("— "), Span(text, url=item.url)))


def answer_doc(reply: Reply) -> Doc:
    """The message for a `Reply` (answers, weak matches, help, no-answer texts)."""
    lang = reply.lang
    blocks: list[Block] = []
    if reply.understood_as and reply.kind is not Kind.HELP:
        blocks.append(Line.of(t(lang, "understood_as", question=reply.understood_as)))
    if reply.kind is Kind.HELP:
        blocks.append(Line.of(t(lang, "help_short", examples=_examples(lang))))
    elif reply.kind is Kind.NOTHING:
        blocks.append(Line.of(t(lang, "nothing_found")))
    elif reply.kind is Kind.NO_MORE:
        blocks.append(Line.of(t(lang, "no_more")))
    elif reply.kind is Kind.WEAK:
        blocks.append(Line.of(t(lang, "no_answer"), bold=True))
        blocks.append(Line.of(t(lang, "weak_header")))
        blocks.extend(_passages(reply.hits[:1], lang))
    else:
        if reply.offset:
            end = reply.offset + len(reply.hits)
            blocks.append(Line.of(t(lang, "more_header", start=reply.offset + 1, end=end)))
        else:
            blocks.append(Line.of(t(lang, _header(reply))))
        blocks.extend(_passages(reply.hits, lang))
    if reply.truncated:
        blocks.append(Line.of(t(lang, "truncated", limit=len(reply.question))))
    if reply.rebuilding:
        blocks.append(Line.of(t(lang, "rebuilding_note")))
    return tuple(blocks)


def _header(reply: Reply) -> str:
    """The line above the passages: an answer, the closest passages, or none at all."""
    if reply.kind is Kind.WEAK:
        return "no_answer"
    return "unsure_header" if reply.kind is Kind.UNSURE else "answer_header"


def passage_doc(reply: Reply, index: int) -> Doc:
    """One passage of a reply on its own (an inline-mode result's message)."""
    hit = reply.hits[index]
    return (Line.of(t(reply.lang, _header(reply))), *_passages([hit], reply.lang))


def _passages(hits: Iterable[Any], lang: str) -> list[Block]:
    blocks: list[Block] = []
    for i, hit in enumerate(hits):
        if i:
            blocks.append(Line())
        cite = citation(hit)
        if hit.also:
            cite = Line((*cite.spans, *also_spans(lang, hit.also)))
        blocks.append(Passage(Quote(hit.text, hit.highlight_start, hit.highlight_end), cite))
    return blocks


def also_spans(lang: str, also: Sequence[Also]) -> tuple[Span, ...]:
    """ "also in: 新浪财经 2021-06-11, 金色财经 2021-06-12" on a line of its own, each copy linked
    to its article (`retrieval.format_also` is the same list as plain text)."""
    spans = [Span("\n" + t(lang, "also_in"))]
    for i, item in enumerate(also):
        if i:
            spans.append(Span(", "))
        spans.append(Span(clip(format_also([item]), 60), url=item.url))
    return tuple(spans)


def _examples(lang: str) -> str:
    return "\n".join(f"• {q}" for q in EXAMPLES.get(lang, EXAMPLES["en"]))


def help_doc(lang: str, library: Library, username: str) -> Doc:
    text = t(
        lang,
        "help",
        articles=len(library.articles),
        dates=library.dates,
        username=username or "bot",
        examples=_examples(lang),
    )
    return (Line.of(text),)


SOURCES_PAGE = 10  # articles per /sources page


def sources_pages(library: Library) -> int:
    return max(1, -(-len(library.articles) // SOURCES_PAGE))


def sources_doc(lang: str, library: Library, page: int = 0, limit: int = TELEGRAM_LIMIT) -> Doc:
    """One page of the indexed articles, newest first, under the number of articles per
    outlet; lines that do not fit end with "…and N more"."""
    pages = sources_pages(library)
    page = max(0, min(page, pages - 1))
    head = Line.of(t(lang, "sources_header", count=len(library.articles)), bold=True)
    counts = " · ".join(f"{clip(source, 30) or '?'} {n}" for source, n in overview.outlets(library.articles))
    fixed = [head, Line.of(t(lang, "sources_outlets", outlets=clip(counts, 600)))]
    if pages > 1:
        fixed.append(Line.of(t(lang, "sources_page", page=page + 1, pages=pages)))
    lines = []
    for article in library.articles[page * SOURCES_PAGE : (page + 1) * SOURCES_PAGE]:
        label = " ".join(
            p
            for p in (
                clip(str(article.get("date") or ""), 20),
                f"《{clip(str(article.get('source') or ''), 40)}》" if article.get("source") else "",
            )
            if p
        )
        title = clip(str(article.get("title") or article.get("id") or ""), 150)
        count = t(lang, "passages", count=article.get("passages", 0))
        lines.append(
            Line(
                (
                    Span(f"• {label} " if label else "• "),
                    Span(title, url=str(article.get("url") or "")),
                    Span(f" ({count})"),
                )
            )
        )
    budget = limit - sum(_line_units(line) + 1 for line in fixed) - 40
    kept: list[Line] = []
    for line in lines:
        budget -= _line_units(line) + 1
        if budget < 0:
            break
        kept.append(line)
    if len(kept) < len(lines):
        kept.append(Line.of(t(lang, "sources_more", count=len(lines) - len(kept))))
    return (*fixed, *kept)


def model_label(name: str) -> str:
    """A model as users may see it: a hub name as is, a local path by its folder name only
    (a path would tell strangers how the server's disk is laid out)."""
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or "\\" in name or path.exists():
        return path.name or "?"
    return name


def about_doc(lang: str, library: Library, app_version: str) -> Doc:
    meta = library.meta
    text = t(
        lang,
        "about",
        app=app_version,
        version=library.version,
        model=model_label(str(meta.get("model", "?"))),
        articles=meta.get("articles", len(library.articles)),
        passages=meta.get("passages", "?"),
        built_at=meta.get("built_at", "?"),
        faiss=meta.get("faiss", "?"),
    )
    return tuple(Line.of(clip(line, 200)) for line in text.split("\n"))


def context_doc(lang: str, rows: Sequence[Any], focus: int) -> Doc:
    """The focused passage between its neighbours; the focused one in bold."""
    blocks: list[Block] = [Line.of(t(lang, "context_header"), bold=True)]
    for i, row in enumerate(rows):
        if i:
            blocks.append(Line())
        quote = Quote(row.text, 0, len(row.text)) if row.id == focus else Quote(row.text)
        blocks.append(Passage(quote, citation(row)))
    return tuple(blocks)


def source_doc(lang: str, row: Any) -> Doc:
    """The article a passage comes from: title, source, date, link."""
    title = clip(row.title or row.article_id, 200)
    meta = " · ".join(p for p in (f"《{clip(row.source, 40)}》" if row.source else "", clip(row.date, 20)) if p)
    url = safe_url(row.url)
    link = Line((Span(clip(url, 300), url=url),)) if url else Line.of(t(lang, "no_link"))
    return (Line.of(t(lang, "source_header"), bold=True), Line.of(title, bold=True), Line.of(meta), link)


def stats_doc(lang: str, stats: Stats) -> Doc:
    """/stats and `bot.py stats`: questions per day (with a bar), answered share, votes,
    time to answer, and the questions to curate articles for."""
    blocks: list[Block] = [Line.of(t(lang, "stats_header", days=len(stats.days)), bold=True)]
    if not stats.questions:
        return (*blocks, Line.of(t(lang, "stats_none")))
    busiest = max(n for _, n in stats.days)
    blocks.append(Line.of(t(lang, "stats_per_day")))
    blocks.extend(Line.of(f"{day}  {n:>4}  {'▇' * -(-12 * n // busiest)}".rstrip()) for day, n in stats.days)
    blocks.append(
        Line.of(
            t(
                lang,
                "stats_answered",
                answered=stats.answered,
                questions=stats.questions,
                answered_share=f"{stats.answered / stats.questions:.0%}",
                unsure=stats.unsure,
                unsure_share=f"{stats.unsure / stats.questions:.0%}",
                not_covered=stats.not_covered,
                not_covered_share=f"{stats.not_covered / stats.questions:.0%}",
            )
        )
    )
    blocks.append(Line.of(t(lang, "stats_votes", up=stats.up, down=stats.down)))
    p50, p95 = (f"{ms:.0f}" if ms is not None else "–" for ms in (stats.p50_ms, stats.p95_ms))
    blocks.append(Line.of(t(lang, "stats_latency", p50=p50, p95=p95)))
    if stats.top:
        blocks.append(Line.of(t(lang, "stats_top"), bold=True))
        for rank, item in enumerate(stats.top, 1):
            text = t(
                lang,
                "stats_top_item",
                rank=rank,
                question=clip(item.question, 120),
                times=item.times,
                unsure=item.unsure,
                not_covered=item.not_covered,
                down=item.down,
            )
            blocks.append(Line.of(text))
    return tuple(blocks)


def text_doc(lang: str, key: str, **values: object) -> Doc:
    return (Line.of(t(lang, key, **values)),)
