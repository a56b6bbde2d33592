"""HTML news pages → the article's text as markdown, and its metadata.

Used by `index add` for fetched pages and by the reader for `.html` files dropped into the
corpus, so both give the same passages. trafilatura finds the article among navigation, ads,
comments and scripts; its tree is written back as markdown that keeps the structure the
splitter needs for citations: paragraphs stay paragraphs, headings become `##`/`###`
sections. Nothing here touches the network: trafilatura and htmldate only ever get a
parsed tree.
"""

from __future__ import annotations

import codecs
import copy
import datetime as dt
import logging
import re
from dataclasses import dataclass

from lxml.html import HtmlElement

from corpus.html_body import PAGE_BLOCK_TAGS, body_markdown, clean
from corpus.reader import ArticleError, decode
from corpus.splitter import SENTENCE_END

# Less article text than this (in paragraphs that end a sentence) is a list of links, a
# channel page or an error page, not an article.
MIN_ARTICLE_CHARS = 80

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# A date as written in a byline: 2021年06月23日, 2021-06-23, 2021/6/23, 2021.06.23, and the
# two-digit-year "18-03-08" (a time may follow without a space: "18-03-0823:16").
_BYLINE_DATE = re.compile(
    r"((?:19|20)\d\d|(?<![\d-])\d\d)\s*[年/.-]\s*(\d{1,2})\s*[月/.-]\s*(\d{1,2})(?:(?!\d)|(?=\d{1,2}:\d))"
)
# How far below the headline a byline date is looked for (characters of page text).
_BYLINE_CHARS = 200
# GB2312 and GBK pages decode as their superset; ISO-8859-1 is what browsers mean by it.
# Every failure below becomes an ArticleError with its reason; the libraries' own log lines
# ("discarding data", "lxml parsing failed") would only repeat it, out of order.
for _name in ("trafilatura", "htmldate"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252"}


@dataclass(frozen=True)
class HtmlArticle:
    """The article found in an HTML page: markdown body and what its citation needs."""

    title: str
    body: str
    author: str = ""
    date: str = ""
    source: str = ""
    url: str = ""


def decode_html(data: bytes, declared: str | None = None) -> str:
    """Decode a page: valid UTF-8 is UTF-8 (servers often default to a wrong ISO-8859-1
    label, and other encodings of Chinese text are practically never valid UTF-8), else the
    charset the server declared, else the page's `<meta charset>`, else as for text files
    (`corpus.reader.decode`: GB18030, or a clear reason)."""
    if data.startswith(codecs.BOM_UTF8):
        return data.decode("utf-8-sig", errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    meta = _META_CHARSET.search(data[:4096])
    for name in (declared, meta.group(1).decode("ascii") if meta else None):
        if not name:
            continue
        name = _CHARSET_ALIASES.get(name.strip().lower(), name.strip().lower())
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue  # a wrong label is common; the content decides below
    return decode(data)


def extract_article(html: str, url: str = "") -> HtmlArticle:
    """Find the article in `html` (fetched from `url`, if known); `ArticleError` if there is none."""
    import trafilatura  # ~0.3 s of imports, only when HTML is read

    if not html.strip():
        raise ArticleError("empty page")
    tree = trafilatura.load_html(html)
    if tree is None:
        raise ArticleError("not an HTML page")
    page = copy.deepcopy(tree)  # trafilatura prunes the tree it reads; titles and dates are looked up in the page
    today = dt.date.today().isoformat()
    document = body = None
    # A page trafilatura reads as furniture only (its article hidden until a script shows it) is
    # read again favouring recall before it is called "no article".
    for recall in (False, True):
        document = trafilatura.bare_extraction(
            _text_blocks_as_paragraphs(copy.deepcopy(page)) if recall else tree,
            url=url or None,
            with_metadata=True,
            include_comments=False,
            include_formatting=True,  # keeps heading levels and bold paragraphs
            include_tables=True,
            favor_recall=recall,
            # Dates from markup only (meta tags, JSON-LD, <time>, the URL); a free-text search
            # picks dates from related-article links, so it comes last (`_page_date`).
            date_extraction_params={"extensive_search": False, "original_date": True, "max_date": today},
        )
        if document is None or document.body is None:
            continue
        title, headline = page_title(page, clean(document.title or ""))
        body = body_markdown(document.body, title, page)
        if _prose_chars(body) >= MIN_ARTICLE_CHARS:
            break
    if document is None or body is None:
        raise ArticleError("no article text found on the page")
    if _prose_chars(body) < MIN_ARTICLE_CHARS:
        raise ArticleError("no article text found on the page (only links or fragments)")
    return HtmlArticle(
        title=title,
        body=body,
        author=clean(document.author or ""),
        date=_byline_date(headline, today) or document.date or _page_date(page, url, today),
        source=clean(document.sitename or ""),
        url=_article_url(document.url or "", url),
    )


def _text_blocks_as_paragraphs(page: HtmlElement) -> HtmlElement:
    """`<div>`s and `<section>`s holding only text read as paragraphs (some editors write every
    paragraph as a styled `<section>`, which trafilatura passes over)."""
    for element in page.iter("div", "section"):
        if len(clean(element.text_content())) >= 10 and not any(
            isinstance(d.tag, str) and d.tag in PAGE_BLOCK_TAGS for d in element.iterdescendants()
        ):
            element.tag = "p"
    return page


def _article_url(canonical: str, fetched: str) -> str:
    """The page's canonical URL when it names an article (not a site's home page), else the fetched one."""
    if re.match(r"https?://[^/]+/.", canonical):
        return canonical
    return fetched or canonical


# ---------------------------------------------------------------- the title
# What sites put between a headline and their own name in <title>: "标题_网易订阅", "Title - Site".
_TITLE_SEPARATOR = re.compile(r"\s*(?:[|_–—»·]+|-{1,2}|::)\s*")
_HEADLINE_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "div", "span", "td", "font", "strong", "b", "em", "center")
_HEADLINE_MAX = 200


def page_title(page: HtmlElement, found: str) -> tuple[str, HtmlElement | None]:
    """The headline and the element that shows it.

    The headline is the part of `<title>` (between site separators) that the page also shows as an
    element of its own, preferring an `<h1>`: that drops site suffixes ("…-新华网", "…_网易订阅"),
    ignores `<h1>`s of lists and logos, and does not trust an og:title cut at an unescaped quote.
    Pages whose `<title>` names no shown headline keep trafilatura's title (`found`)."""
    tag = page.find(".//title")
    whole = clean(tag.text_content()) if tag is not None else ""
    spans = _title_spans(whole)
    shown: dict[str, HtmlElement] = {}
    for element in page.iter(*_HEADLINE_TAGS):
        text = _squash(element.text_content())
        if 1 < len(text) <= _HEADLINE_MAX and text in spans:
            held = shown.get(text)
            if held is None or (element.tag == "h1" and held.tag != "h1"):
                shown[text] = element
    if shown:
        h1s = [text for text, element in shown.items() if element.tag == "h1"]
        best = max(h1s or shown, key=len)
        return spans[best], shown[best]
    headline = next((h for h in page.iter("h1") if _squash(h.text_content()) == _squash(found)), None)
    return found, headline


def _title_spans(title: str) -> dict[str, str]:
    """Every run of whole segments of a `<title>`, by its text without spaces."""
    starts = [0] + [m.end() for m in _TITLE_SEPARATOR.finditer(title)]
    ends = [m.start() for m in _TITLE_SEPARATOR.finditer(title)] + [len(title)]
    spans: dict[str, str] = {}
    for a in starts:
        for b in ends:
            if b > a:
                text = title[a:b].strip()
                if len(_squash(text)) >= 4:
                    spans[_squash(text)] = text
    return spans


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------- the date
def _byline_date(headline: HtmlElement | None, today: str) -> str:
    """The date written just below the headline ("2021年06月23日", "2021-06-23 09:30", "18-03-08 23:16")."""
    if headline is None:
        return ""
    text = "".join(_following_text(headline, _BYLINE_CHARS))
    for match in _BYLINE_DATE.finditer(text):
        year, month, day = (int(g) for g in match.groups())
        if year < 100:  # "18-03-08": this century unless that is in the future
            year += 2000 if 2000 + year <= int(today[:4]) else 1900
        try:
            found = dt.date(year, month, day).isoformat()
        except ValueError:
            continue
        if "1995-01-01" <= found <= today:
            return found
    return ""


def _page_date(page: HtmlElement, url: str, today: str) -> str:
    """A date neither the byline nor the markup states: htmldate's search of the whole page text."""
    import htmldate

    return htmldate.find_date(page, url=url or None, extensive_search=True, original_date=True, max_date=today) or ""


def _following_text(element: HtmlElement, limit: int) -> list[str]:
    """Up to `limit` characters of visible text after `element` in document order."""
    parts: list[str] = []
    size = 0
    for node in element.itersiblings():
        for text in _visible_text(node):
            parts.append(text)
            size += len(text)
            if size >= limit:
                return parts
    parent = element.getparent()
    if parent is not None and size < limit:
        parts.extend(_following_text(parent, limit - size))
    return parts


def _visible_text(node: HtmlElement) -> list[str]:
    if not isinstance(node.tag, str) or node.tag in {"script", "style", "noscript"}:
        return [node.tail or ""]
    return [*node.itertext(), node.tail or ""]


def _prose_chars(markdown: str) -> int:
    """Characters of sentences (up to a paragraph's last sentence end; headings and link lists have none)."""
    total = 0
    for block in markdown.split("\n\n"):
        if block.startswith("#"):
            continue
        last = max(block.rfind(ch) for ch in SENTENCE_END + ".")
        total += last + 1 if last >= 0 else 0
    return total
