"""Paragraph repair and passage cutting.

Real articles arrive broken: a byline on its own line whose sentence continues in the next
"paragraph" (which starts with "，"), paragraphs cut mid-sentence by a stray blank line,
`###` headings mixed into the text. Retrieval quality depends on passages being whole
thoughts, so this module rebuilds paragraphs before cutting passages:

1. blank lines separate blocks; heading lines are blocks of their own;
2. a block that starts with continuation punctuation, or follows a block that does not
   end a sentence, is joined to the previous block;
3. headings become the `section` of the passages below them;
4. paragraphs longer than `max_chars` are cut at sentence boundaries into windows;
5. fragments shorter than `min_chars` merge with a neighbour in the same section.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from corpus.model import Article, Passage

_HEADING = re.compile(r"^\s{0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
# Characters that may end a sentence, optionally followed by closing quotes/brackets.
SENTENCE_END = "。！？!?…；;"
CLOSERS = "”’」』）)》】\"'"
_CONTINUATION_START = tuple("，,、；;：:）)】》”’")
_SENTENCE_RE = re.compile(r"[^。！？!?…；;\n]*(?:[。！？!?…；;]+|\.(?=\s|$)|$)[”’」』）)》】\"']*\s*")
_CLAUSE_RE = re.compile(r"[^，,、：:]*[，,、：:]*")


@dataclass
class _Block:
    """A run of text between blank lines, with its span in the decoded file."""

    text: str
    start: int
    end: int
    heading: str | None = None
    # (offset in text, offset in file) for each piece joined into `text`
    pieces: list[tuple[int, int]] | None = None


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef" or ch in "“”‘’"


def _joiner(left: str, right: str) -> str:
    """Chinese text joins without a space; Latin words need one."""
    if not left or not right:
        return ""
    return "" if _is_cjk(left[-1]) or _is_cjk(right[0]) else " "


def ends_sentence(text: str) -> bool:
    stripped = text.rstrip().rstrip(CLOSERS)
    if not stripped:
        return False
    if stripped[-1] in SENTENCE_END:
        return True
    # An English full stop ends a sentence; a closing quote after a full stop too.
    return stripped[-1] == "." or (text.rstrip()[-1:] in "”’" and stripped[-1] in SENTENCE_END + ".")


def _blocks(body: str, base: int) -> list[_Block]:
    """Split the body into blank-line separated blocks and single heading lines."""
    blocks: list[_Block] = []
    lines: list[tuple[str, int]] = []
    pos = 0

    def flush() -> None:
        if not lines:
            return
        parts: list[str] = []
        pieces: list[tuple[int, int]] = []
        length = 0  # len("".join(parts)), kept as we go: summing per line is quadratic
        for raw, at in lines:
            line = raw.strip()
            lead = len(raw) - len(raw.lstrip())
            sep = _joiner(parts[-1], line) if parts else ""
            offset = length + len(sep)
            if sep:
                parts.append(sep)
            pieces.append((offset, base + at + lead))
            parts.append(line)
            length = offset + len(line)
        text = "".join(parts)
        first_raw, first_at = lines[0]
        last_raw, last_at = lines[-1]
        start = base + first_at + (len(first_raw) - len(first_raw.lstrip()))
        end = base + last_at + len(last_raw.rstrip())
        blocks.append(_Block(text=text, start=start, end=end, pieces=pieces))
        lines.clear()

    for raw in body.split("\n"):
        at = pos
        pos += len(raw) + 1
        if not raw.strip():
            flush()
            continue
        match = _HEADING.match(raw)
        if match:
            flush()
            blocks.append(_Block(text="", start=base + at, end=base + at + len(raw), heading=match.group(2).strip()))
            continue
        lines.append((raw, at))
    flush()
    return blocks


def _merge(blocks: list[_Block]) -> _Block:
    """Join the blocks of one broken paragraph in a single pass (pairwise joins are quadratic)."""
    if len(blocks) == 1:
        return blocks[0]
    parts: list[str] = []
    pieces: list[tuple[int, int]] = []
    length = 0
    for block in blocks:
        sep = _joiner(parts[-1], block.text) if parts else ""
        if sep:
            parts.append(sep)
        pieces.extend((length + len(sep) + o, f) for o, f in (block.pieces or []))
        parts.append(block.text)
        length += len(sep) + len(block.text)
    return _Block(text="".join(parts), start=blocks[0].start, end=blocks[-1].end, pieces=pieces)


# `ends_sentence` of a paragraph being joined only looks at its last characters.
_TAIL = 200


def repair_paragraphs(body: str, base: int = 0) -> list[tuple[str, _Block]]:
    """Return (section, paragraph block) pairs with broken paragraphs joined."""
    result: list[tuple[str, _Block]] = []
    section = ""
    open_blocks: list[_Block] = []  # the paragraph being joined
    tail = ""  # its joined text's last _TAIL characters
    for block in _blocks(body, base):
        if block.heading is not None:
            if open_blocks:
                result.append((section, _merge(open_blocks)))
                open_blocks = []
            section = block.heading
            continue
        if open_blocks and (block.text.startswith(_CONTINUATION_START) or not ends_sentence(tail)):
            open_blocks.append(block)
            tail = (tail + _joiner(tail, block.text) + block.text)[-_TAIL:]
        else:
            if open_blocks:
                result.append((section, _merge(open_blocks)))
            open_blocks = [block]
            tail = block.text[-_TAIL:]
    if open_blocks:
        result.append((section, _merge(open_blocks)))
    return result


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) covering `text`, trailing closers and spaces included."""
    spans: list[tuple[int, int]] = []
    for match in _SENTENCE_RE.finditer(text):
        if match.end() > match.start():
            spans.append((match.start(), match.end()))
    return spans or [(0, len(text))]


def _hard_split(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence at clause punctuation, else every `limit` characters."""
    spans: list[tuple[int, int]] = []
    pos = start
    while end - pos > limit:
        window = text[pos : pos + limit]
        cut = max(window.rfind(ch) for ch in "，,、：:；; ")
        cut = pos + cut + 1 if cut > limit // 3 else pos + limit
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, end))
    return spans


def window_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Pack sentences greedily into windows of at most `max_chars` characters."""
    if len(text) <= max_chars:
        return [(0, len(text))]
    units: list[tuple[int, int]] = []
    for s, e in split_sentences(text):
        units.extend(_hard_split(text, s, e, max_chars) if e - s > max_chars else [(s, e)])
    windows: list[tuple[int, int]] = []
    cur_start, cur_end = units[0]
    for s, e in units[1:]:
        if e - cur_start <= max_chars:
            cur_end = e
        else:
            windows.append((cur_start, cur_end))
            cur_start, cur_end = s, e
    windows.append((cur_start, cur_end))
    return windows


def _file_offset(block: _Block, text_offset: int) -> int:
    """Map an offset in the repaired text back to the decoded file."""
    pieces = block.pieces or [(0, block.start)]
    index = bisect.bisect_right(pieces, text_offset, key=lambda p: p[0]) - 1
    piece_text_start, piece_file_start = pieces[max(index, 0)]
    return piece_file_start + max(text_offset - piece_text_start, 0)


@dataclass
class _Draft:
    section: str
    paragraph: int
    paragraph_end: int
    text: str
    start: int
    end: int


def strip_span(text: str, s: int, e: int) -> tuple[int, int]:
    """Shrink a span so it neither starts nor ends with whitespace."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def split_article(article: Article, max_chars: int = 360, min_chars: int = 24) -> list[Passage]:
    """Cut an article into passages: repaired paragraphs, windows of long ones, tiny ones merged."""
    drafts: list[_Draft] = []
    for number, (section, block) in enumerate(repair_paragraphs(article.body, article.body_offset), start=1):
        for s, e in window_spans(block.text, max_chars):
            s, e = strip_span(block.text, s, e)
            if s == e:
                continue
            drafts.append(
                _Draft(section, number, number, block.text[s:e], _file_offset(block, s), _file_offset(block, e - 1) + 1)
            )
    drafts = _merge_tiny(drafts, max_chars, min_chars)
    return [
        Passage(
            article_id=article.id,
            ordinal=i,
            section=d.section,
            paragraph=d.paragraph,
            paragraph_end=d.paragraph_end,
            text=d.text,
            start=d.start,
            end=d.end,
        )
        for i, d in enumerate(drafts)
    ]


def _merge_tiny(drafts: list[_Draft], max_chars: int, min_chars: int) -> list[_Draft]:
    """Merge fragments shorter than `min_chars` into the next (else previous) passage of the same section."""
    out: list[_Draft] = []
    i = 0
    while i < len(drafts):
        d = drafts[i]
        nxt = drafts[i + 1] if i + 1 < len(drafts) else None
        if len(d.text) < min_chars and nxt and nxt.section == d.section and len(d.text) + len(nxt.text) < max_chars:
            joined = d.text + _joiner(d.text, nxt.text) + nxt.text
            drafts[i + 1] = _Draft(d.section, d.paragraph, nxt.paragraph_end, joined, d.start, nxt.end)
            i += 1
            continue
        prev = out[-1] if out else None
        if len(d.text) < min_chars and prev and prev.section == d.section and len(prev.text) + len(d.text) < max_chars:
            out[-1] = _Draft(
                prev.section,
                prev.paragraph,
                d.paragraph_end,
                prev.text + _joiner(prev.text, d.text) + d.text,
                prev.start,
                d.end,
            )
        else:
            out.append(d)
        i += 1
    return out
