"""The two concepts of the corpus layer: an `Article` and the `Passage`s cut from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OtherSource:
    """Another place the same article was published (the same text under another URL)."""

    url: str
    source: str = ""
    date: str = ""


@dataclass(frozen=True)
class Article:
    """One source file, decoded, with its metadata and body text.

    `id` is the path relative to the corpus directory, so it stays the same across
    builds and machines; `content_hash` decides whether a rebuild re-embeds it.
    """

    id: str
    path: str
    title: str
    body: str
    content_hash: str
    source: str = ""
    author: str = ""
    date: str = ""
    url: str = ""
    lang: str = "zh"
    # Where `body` starts inside the decoded file (after front matter), so passage
    # offsets can point into the file as a reader sees it.
    body_offset: int = 0
    # Front matter `also: [{url, source, date}]`: the same text published elsewhere too.
    also: tuple[OtherSource, ...] = ()


@dataclass(frozen=True)
class Passage:
    """A retrievable unit: a repaired paragraph, or a window of a long one.

    `paragraph` is 1-based as a reader counts paragraphs (headings excluded);
    `paragraph_end` differs when tiny fragments were merged. `start`/`end` are character
    offsets into the decoded file (for an `.html` file, into the markdown made of its
    article); `text` is the repaired text (line breaks inside a broken paragraph removed),
    so it may be shorter than `end - start`.
    """

    article_id: str
    ordinal: int
    section: str
    paragraph: int
    paragraph_end: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Skipped:
    """A corpus file that was not indexed, and why (one line for the operator)."""

    path: str
    reason: str
