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
import datetime as dt
import logging
import re
from dataclasses import dataclass

from lxml import etree
from lxml.html import HtmlElement

from corpus.reader import ArticleError, decode
from corpus.splitter import ends_sentence

# Less article text than this (in paragraphs that end a sentence) is a list of links, a
# channel page or an error page, not an article.
MIN_ARTICLE_CHARS = 80
# A bold paragraph this short that does not end a sentence is a subheading (common on
# Chinese news sites, which style subheadings as <p><strong>…</strong></p>).
MAX_BOLD_HEADING_CHARS = 40

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# A date as written in a byline: 2021年06月23日, 2021-06-23, 2021/6/23, 2021.06.23.
_BYLINE_DATE = re.compile(r"((?:19|20)\d\d)\s*[年/.-]\s*(\d{1,2})\s*[月/.-]\s*(\d{1,2})(?!\d)")
# How far below the headline a byline date is looked for (characters of page text).
_BYLINE_CHARS = 200
_EDITOR_CREDIT = re.compile(r"[（(【\[]?\s*(?:责任编辑|编辑|责编)\s*[:：]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_INLINE_SKIP = frozenset({"graphic", "del"})
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
    today = dt.date.today().isoformat()
    document = trafilatura.bare_extraction(
        tree,
        url=url or None,
        with_metadata=True,
        include_comments=False,
        include_formatting=True,  # keeps heading levels and bold paragraphs
        include_tables=True,
        # Dates from markup only (meta tags, JSON-LD, <time>, the URL); a free-text search
        # picks dates from related-article links, so it comes last (`_page_date`).
        date_extraction_params={"extensive_search": False, "original_date": True, "max_date": today},
    )
    if document is None or document.body is None:
        raise ArticleError("no article text found on the page")
    title = _clean(document.title or "")
    body = body_markdown(document.body, title)
    if _prose_chars(body) < MIN_ARTICLE_CHARS:
        raise ArticleError("no article text found on the page (only links or fragments)")
    return HtmlArticle(
        title=title,
        body=body,
        author=_clean(document.author or ""),
        date=document.date or _page_date(tree, url, today),
        source=_clean(document.sitename or ""),
        url=_article_url(document.url or "", url),
    )


def _article_url(canonical: str, fetched: str) -> str:
    """The page's canonical URL when it names an article (not a site's home page), else the fetched one."""
    if re.match(r"https?://[^/]+/.", canonical):
        return canonical
    return fetched or canonical


def _page_date(tree: HtmlElement, url: str, today: str) -> str:
    """A date the markup does not state: the byline under the headline, else htmldate's
    search of the whole page text."""
    headline = tree.find(".//h1")
    if headline is not None:
        text = "".join(_following_text(headline, _BYLINE_CHARS))
        match = _BYLINE_DATE.search(text)
        if match:
            try:
                found = dt.date(*(int(g) for g in match.groups())).isoformat()
            except ValueError:
                found = ""
            if "1995-01-01" <= found <= today:
                return found
    import htmldate

    return htmldate.find_date(tree, url=url or None, extensive_search=True, original_date=True, max_date=today) or ""


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


def body_markdown(body: etree._Element, title: str = "") -> str:
    """Write trafilatura's body tree as markdown: one paragraph per block, blank lines between,
    `##`/`###` for headings.

    Dropped: a heading repeating the title, headings with no text after them (a "related
    articles" box emptied by the extractor), a byline before the first sentence ("2021年06月21日
    17:42 来源：… 作者：…", which the splitter would glue to the first paragraph) and editor
    credits at the end ("（责任编辑：…）").
    """
    blocks: list[tuple[int, str]] = []  # (heading level or 0, text)
    _collect(body, blocks)
    first_prose = next((i for i, (level, text) in enumerate(blocks) if not level and ends_sentence(text)), 0)
    blocks = [
        (level, text)
        for i, (level, text) in enumerate(blocks)
        if not (i < first_prose and not level and _BYLINE_DATE.search(text))
    ]
    while blocks and (blocks[-1][0] or _EDITOR_CREDIT.match(blocks[-1][1])):
        blocks.pop()
    lines: list[str] = []
    for i, (level, text) in enumerate(blocks):
        if level:
            following = blocks[i + 1][0] if i + 1 < len(blocks) else 1
            if text == title or (following and following <= level):
                continue
            lines.append("#" * level + " " + text)
        else:
            lines.append(text)
    return "\n\n".join(lines) + "\n" if lines else ""


def _collect(element: etree._Element, blocks: list[tuple[int, str]]) -> None:
    for child in element:
        tag = child.tag
        if tag == "head":
            text = _clean(_inline_text(child))
            if text:
                rend = child.get("rend", "h2")
                level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
                blocks.append((min(max(level, 2), 3), text))
        elif tag in {"p", "item", "cell", "code", "quote"} and not any(c.tag in _BLOCK_TAGS for c in child):
            text = _clean(_inline_text(child))
            if text:
                blocks.append((3 if _is_bold_heading(child, text) else 0, text))
        elif tag == "row" and not any(c.tag in _BLOCK_TAGS for cell in child for c in cell):
            # A data table's row is one line; a layout table's cells hold whole articles.
            text = " ".join(c for c in (_clean(_inline_text(cell)) for cell in child) if c)
            if text:
                blocks.append((0, text))
        elif tag in _BLOCK_TAGS or tag in {"table", "list"}:
            _collect(child, blocks)
        elif isinstance(tag, str) and tag not in _INLINE_SKIP:
            text = _clean(_inline_text(child))
            if text:
                blocks.append((0, text))


_BLOCK_TAGS = frozenset({"p", "head", "list", "item", "table", "row", "cell", "quote", "div", "code"})


def _inline_text(element: etree._Element) -> str:
    """The text of an element with `<lb/>` as line breaks, images and deletions left out."""
    parts = [element.text or ""]
    for child in element:
        if child.tag == "lb":
            parts.append("\n")
        elif child.tag not in _INLINE_SKIP:
            parts.append(_inline_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _is_bold_heading(element: etree._Element, text: str) -> bool:
    """`<p><strong>短标题</strong></p>`: the whole paragraph bold, short, not a sentence."""
    if element.tag != "p" or len(element) != 1 or (element.text or "").strip():
        return False
    only = element[0]
    if only.tag != "hi" or only.get("rend") != "#b" or (only.tail or "").strip():
        return False
    return len(text) <= MAX_BOLD_HEADING_CHARS and not ends_sentence(text)


def _clean(text: str) -> str:
    """Collapse spaces (including the full-width indent of Chinese paragraphs) and drop
    empty lines, which would otherwise split one paragraph in two."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _prose_chars(markdown: str) -> int:
    """Characters in paragraphs that end like sentences (headings and link lists do not)."""
    return sum(
        len(block) for block in markdown.split("\n\n") if not block.startswith("#") and ends_sentence(block.strip())
    )
