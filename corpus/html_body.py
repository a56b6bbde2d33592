"""trafilatura's body tree → the article's markdown: paragraphs, `##`/`###` sections, no page furniture.

trafilatura finds where the article is; this module decides what its blocks are and which of them
are not the article. Every rule is structural or lexical, never about one site:

- `<lb/>` (a `<br>` in the page) ends a paragraph: many Chinese sites write a whole article as one
  `<p>` or `<div>` with `<br>` between paragraphs.
- An element's own text between nested blocks is kept in order (a `<p>` holding inline `<code>`, a
  `<div>` with text and `<p>` children).
- A line that is entirely bold, short and not a sentence is a subheading.
- A paragraph that the page itself shows as several blocks (trafilatura sometimes runs a whole
  `<article>` together, byline and `<h2>` included) is cut back at the page's block boundaries.
- Credits (byline, editor, reporter), copyright and disclaimer lines, QR-code and app promotion,
  comment prompts, share/print toolbars and "related articles" lists are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree

from corpus.splitter import CLOSERS, ends_sentence

Block = tuple[int, str]  # (heading level, 0 for a paragraph; text)

# A bold line this short that does not end a sentence is a subheading (common on Chinese news
# sites, which style subheadings as <p><strong>…</strong></p> or a bold line between <br>s).
MAX_BOLD_HEADING_CHARS = 40
# Page furniture is short: a block longer than this is never dropped for its wording alone.
# Chosen by cross-validation over the saved pages split by site (`python -m bench.extraction --fit`:
# 5 folds chose 150, 60, 150, 100, 150 for clean pages plus body strings, flat from 100 to 400;
# 150 drops an English paragraph that names a newsletter, so the plateau's lower end).
MAX_NOISE_CHARS = 100
# A "related articles" label this far into the article (share of its prose) ends the article.
RELATED_CUT_SHARE = 0.5

_TREE_BLOCKS = frozenset({"p", "head", "list", "item", "table", "row", "cell", "quote", "div", "code"})
# Inside these, <code> is inline code (a word in a sentence), not a code block.
_TEXT_BLOCKS = frozenset({"p", "item", "cell", "head", "quote"})
_INLINE_SKIP = frozenset({"graphic", "del"})
_SPACES = re.compile(r"\s+")

_DATE = re.compile(r"(?:19|20)\d\d\s*[年/.-]\s*\d{1,2}\s*[月/.-]\s*\d{1,2}|(?<![\d-])\d\d-\d\d-\d\d")
# Who wrote, edited, photographed or supplied the article: "记者 某某", "责任编辑：某某", "By …".
_CREDIT = re.compile(
    r"记者|编辑|责编|校对|作者|来源|采写|摄影|供稿|执笔|通讯员|撰文|文\s*/|图\s*/|原标题|原题"
    r"|^\W{0,2}by\s+[A-Z]|^\W{0,2}(?:reporting|writing|editing) by",
    re.IGNORECASE,
)
_NOISE = re.compile(
    r"责任编辑|责编\s*[:：]|编辑\s*[:：]|版权所有|版权归|copyright|©|ⓒ|ICP[备证]|公网安备"
    r"|未经.{0,12}(?:授权|许可|允许).{0,12}(?:转载|使用|复制)|禁止转载|不得转载|转载请|免责声明|^声明\s*[:：]"
    r"|扫描.{0,12}二维码|扫一扫|扫码|二维码|微信扫描|关注.{0,12}(?:公众号|官方微信)|(?:下载|安装).{0,8}客户端|客户端下载|下载.{0,6}APP"
    r"|发表评论|我来说两句|网友评论|条评论|\d+\s*人参与|跟贴|文明上网|评论\s*[(（]\d|查看.{0,4}评论"
    r"|【(?:打印|关闭|推荐|收藏|评论)|打印本[页文稿]|关闭窗口|字体\s*[:：]?\s*大\s*中\s*小|分享到|收藏本文"
    r"|点击.{0,8}(?:投票|查看|进入|阅读|下载)|感谢您的反馈|报料|举报"
    r"|all rights reserved|^\W{0,2}copyright\b|newsletter|subscribe|sign up|click here|follow us"
    r"|we want to hear|share this|get the .{1,40} app|^advertisement$|^read more\b",
    re.IGNORECASE,
)
_RELATED = re.compile(
    r"^\W{0,2}(?:相关(?:新闻|文章|阅读|链接|推荐|报道|资讯|专题|搜索)|延伸\s*[·•]?\s*(?:阅读|推荐)|推荐阅读|为您推荐"
    r"|热点(?:排行|推荐|新闻)?|热门(?:推荐|文章|新闻)|热帖|精彩推荐|猜你喜欢|你可能(?:会)?喜欢|作者最新文章"
    r"|更多.{0,6}(?:新闻|文章|资讯)|related(?: articles| stories| topics| content)?|more (?:from|on|stories)\b.*"
    r"|most (?:popular|read)|trending(?: now)?|recommended(?: for you)?|you may also like)\W{0,2}$",
    re.IGNORECASE,
)


def body_markdown(body: etree._Element, title: str = "", page: etree._Element | None = None) -> str:
    """Write trafilatura's body tree as markdown: one paragraph per block, blank lines between,
    `##`/`###` for headings. With the parsed `page`, paragraphs that trafilatura ran together are
    cut back at the page's own block boundaries."""
    blocks = collect_blocks(body)
    if page is not None:
        leaves = page_blocks(page)
        blocks = restore_headings(mark_headings(resplit(blocks, leaves), leaves), leaves)
    lines: list[str] = []
    kept = drop_noise(blocks, title)
    for level, text in kept:
        if level:
            lines.append("#" * level + " " + text)
        else:
            lines.append(text)
    return "\n\n".join(lines) + "\n" if lines else ""


# ---------------------------------------------------------------- blocks of trafilatura's tree
def collect_blocks(body: etree._Element) -> list[Block]:
    blocks: list[Block] = []
    for child in body:
        _block(child, blocks)
    return blocks


def _block(element: etree._Element, blocks: list[Block]) -> None:
    tag = element.tag
    if not isinstance(tag, str) or tag in _INLINE_SKIP:
        return
    if tag == "head":
        text = " ".join(line for line, _ in _lines([element.text or "", *element]))
        if text:
            rend = element.get("rend", "h2")
            level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
            blocks.append((min(max(level, 2), 3), text))
    elif tag == "row" and not any(c.tag in _TREE_BLOCKS for cell in element for c in cell):
        # A data table's row is one line; a layout table's cells hold whole articles.
        text = " ".join(t for t in (" ".join(line for line, _ in _lines([c.text or "", *c])) for c in element) if t)
        if text:
            blocks.append((0, text))
    elif tag in {"table", "list", "row"}:
        for child in element:
            _block(child, blocks)
    else:
        _mixed(element, blocks)


def _mixed(element: etree._Element, blocks: list[Block]) -> None:
    """The element's own text, a paragraph per `<lb/>`-separated line, with nested blocks in document order."""
    run: list[str | etree._Element] = [element.text or ""]
    inline_code = element.tag in _TEXT_BLOCKS
    for child in element:
        if child.tag in _TREE_BLOCKS and not (child.tag == "code" and inline_code):
            _flush(run, element.tag, blocks)
            run = []
            _block(child, blocks)
            run.append(child.tail or "")
        else:
            run.append(child)
    _flush(run, element.tag, blocks)


def _flush(run: list[str | etree._Element], tag: str, blocks: list[Block]) -> None:
    keep_newlines = tag == "code"
    for text, bold in _lines(run, keep_newlines):
        heading = bold and tag in {"p", "div", "quote"} and len(text) <= MAX_BOLD_HEADING_CHARS
        blocks.append((3 if heading and not _closes(text) else 0, text))


def _lines(parts: Iterable[str | etree._Element], keep_newlines: bool = False) -> list[tuple[str, bool]]:
    """Inline content split at `<lb/>`: each line's text and whether all of it is bold."""
    lines: list[list[tuple[str, bool]]] = [[]]

    def add(node: str | etree._Element, bold: bool) -> None:
        if isinstance(node, str):
            if node:
                lines[-1].append((node, bold))
            return
        if node.tag == "lb":
            lines.append([])
        elif isinstance(node.tag, str) and node.tag not in _INLINE_SKIP:
            inner = bold or (node.tag == "hi" and "#b" in (node.get("rend") or ""))
            add(node.text or "", inner)
            for child in node:
                add(child, inner)
        add(node.tail or "", bold)

    for part in parts:
        add(part, False)
    out = []
    for pieces in lines:
        raw = "".join(text for text, _ in pieces)
        text = clean(raw, keep_newlines)
        if text:
            bold = all(b or not t.strip() for t, b in pieces)
            out.append((text, bold))
    return out


def clean(text: str, keep_newlines: bool = False) -> str:
    """Collapse spaces (including the full-width indent of Chinese paragraphs); a code block keeps its lines."""
    if keep_newlines:
        lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        return "\n".join(line for line in lines if line)
    return _SPACES.sub(" ", text.replace("\u3000", " ")).strip()


# ---------------------------------------------------------------- the page's own blocks
PAGE_BLOCK_TAGS = frozenset(
    "p div h1 h2 h3 h4 h5 h6 li td th dd dt blockquote section article header footer pre figcaption center".split()
)


_HEADING_CLASS = re.compile(r"(?:^|[\s_-])(?:h[2-6]|title|subtitle|heading|subhead)(?:$|[\s_-])", re.IGNORECASE)


# The level of a block the page shows as a heading without saying which level (bold, a class).
MARKED = 7
Leaf = tuple[str, int, str]  # text without whitespace, heading level (0: none), text as shown


def page_blocks(page: etree._Element) -> list[Leaf]:
    """The page's leaf blocks in document order, with a heading level for `<h1>`-`<h6>` and
    `MARKED` for blocks the page styles as headings (all bold, or a class naming a heading)."""
    out: list[Leaf] = []
    for element in page.iter(*PAGE_BLOCK_TAGS):
        if any(isinstance(d.tag, str) and d.tag in PAGE_BLOCK_TAGS for d in element.iterdescendants()):
            continue
        shown = _text(element)
        text = _squash(shown)
        if text:
            out.append((text, _marked_level(element, text), clean(shown)))
    return out


def _marked_level(element: etree._Element, text: str) -> int:
    if re.fullmatch(r"h[1-6]", element.tag):
        return int(element.tag[1])
    marked = [d for d in element.iter() if d.tag in {"b", "strong"} or _HEADING_CLASS.search(d.get("class") or "")]
    if any(d is element for d in marked) or any(_squash(_text(d)) == text for d in marked):
        return MARKED
    return 0


def mark_headings(blocks: list[Block], leaves: list[Leaf]) -> list[Block]:
    """A short paragraph that the page shows as a heading becomes one."""
    marked = {text for text, level, _ in leaves if level > 1}
    return [
        (3, text)
        if not level and len(text) <= MAX_BOLD_HEADING_CHARS and _squash(text) in marked and not _closes(text)
        else (level, text)
        for level, text in blocks
    ]


def _closes(text: str) -> bool:
    """Ends like a statement (a heading may end in a question mark or a colon)."""
    return ends_sentence(text) and text.rstrip().rstrip(CLOSERS)[-1:] not in "？?"


def _text(element: etree._Element) -> str:
    """Visible text of an element: scripts and styles left out, tails of its children kept."""
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str) and child.tag not in {"script", "style", "noscript", "template"}:
            parts.append(_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _squash(text: str) -> str:
    return _SPACES.sub("", text)


def resplit(blocks: list[Block], leaves: list[Leaf]) -> list[Block]:
    """Cut a paragraph back into the page's blocks when it is made of two or more of them, end to end."""
    out: list[Block] = []
    starts: dict[str, list[int]] = {}
    for i, (text, _, _) in enumerate(leaves):
        starts.setdefault(text[:2], []).append(i)
    for level, text in blocks:
        squashed, positions = _squash_map(text)
        pieces = _cover(squashed, leaves, starts.get(squashed[:2], [])) if not level and len(squashed) > 8 else None
        if not pieces:
            out.append((level, text))
            continue
        for start, end, heading in pieces:
            piece = text[positions[start] : positions[end - 1] + 1].strip()
            out.append((min(max(heading, 2), 3) if heading else 0, piece))
    return out


def _squash_map(text: str) -> tuple[str, list[int]]:
    positions = [i for i, ch in enumerate(text) if not ch.isspace()]
    return "".join(text[i] for i in positions), positions


def _cover(squashed: str, leaves: list[Leaf], candidates: list[int]) -> list[tuple[int, int, int]] | None:
    """Leaves that, in page order, spell out `squashed` exactly; None unless there are two or more."""
    for first in candidates[:20]:
        pos, pieces = 0, []
        for text, heading, _ in leaves[first:]:
            if squashed.startswith(text, pos):
                pieces.append((pos, pos + len(text), heading))
                pos += len(text)
                if pos == len(squashed):
                    return pieces if len(pieces) > 1 else None
            elif len(pieces) > 60:
                break
    return None


def restore_headings(blocks: list[Block], leaves: list[Leaf]) -> list[Block]:
    """Put back the page's `<h2>`-`<h6>` that trafilatura dropped between two paragraphs it kept."""
    where: dict[str, int] = {}
    for i, (text, _, _) in enumerate(leaves):
        where.setdefault(text, i)
    out: list[Block] = []
    previous = -1
    for level, text in blocks:
        at = where.get(_squash(text), -1)
        if at > previous >= 0 and not level:
            out.extend(
                (min(heading, 3), shown)
                for _, heading, shown in leaves[previous + 1 : at]
                if 1 < heading < MARKED and len(shown) <= MAX_BOLD_HEADING_CHARS
            )
        if at >= 0:
            previous = at
        out.append((level, text))
    return out


# ---------------------------------------------------------------- what is not the article
def is_noise(text: str) -> bool:
    """Copyright, disclaimer, editor, promotion, comment and toolbar lines (short ones only)."""
    return len(text) <= MAX_NOISE_CHARS and bool(_NOISE.search(text))


def is_credit(text: str) -> bool:
    """A byline or credit line: short, not a sentence, naming a role (记者, 编辑, 来源, By …)."""
    return len(text) <= 60 and not ends_sentence(text) and bool(_CREDIT.search(text))


def is_related_label(text: str) -> bool:
    return len(text) <= 24 and bool(_RELATED.match(text))


def drop_noise(blocks: list[Block], title: str = "") -> list[Block]:
    """The article's blocks without the title, bylines, credits, page furniture and related lists."""
    norm_title = _squash(title)
    kept = [
        (level, text)
        for level, text in blocks
        if not (norm_title and _squash(text) == norm_title) and not is_noise(text)
    ]
    first_prose = next((i for i, (level, text) in enumerate(kept) if not level and ends_sentence(text)), 0)
    # Before the first sentence: bylines and datelines ("2021年06月21日 17:42 来源：…"), which the
    # splitter would glue to the first paragraph.
    kept = [
        (level, text)
        for i, (level, text) in enumerate(kept)
        if not (i < first_prose and not level and (_DATE.search(text) or is_credit(text)))
    ]
    kept = _cut_related(kept)
    while kept and (kept[-1][0] or is_credit(kept[-1][1]) or is_related_label(kept[-1][1])):
        kept.pop()
    return kept


def _cut_related(blocks: list[Block]) -> list[Block]:
    """Everything from a "related articles" label on, once most of the article is behind it."""
    total = sum(len(text) for level, text in blocks if not level) or 1
    seen = 0
    for i, (level, text) in enumerate(blocks):
        if is_related_label(text) and seen / total >= RELATED_CUT_SHARE:
            return blocks[:i]
        if not level:
            seen += len(text)
    return [(level, text) for level, text in blocks if not is_related_label(text)]
