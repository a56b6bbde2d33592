"""Read article files: find them, decode them, parse front matter.

Operators drop whatever they have into the corpus directory, so every failure here is an
expected outcome (`Skipped` with a reason), never an exception that stops the build.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from corpus.model import Article, OtherSource, Skipped

HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt"}) | HTML_SUFFIXES
MAX_FILE_BYTES = 50 * 1024 * 1024
METADATA_KEYS = ("title", "source", "author", "date", "url", "lang")

_FRONT_MATTER_OPEN = re.compile(r"\A---[ \t]*\r?\n")
_FRONT_MATTER_CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")


class ArticleError(Exception):
    """This file cannot be indexed; the message is the reason shown to the operator."""


def iter_corpus_files(root: Path) -> Iterator[Path | Skipped]:
    """Yield candidate files under `root` in a stable order, or a `Skipped` for the odd ones.

    Symlinks to files are followed; directory symlinks are not (no loops). Hidden files
    and directories (editor droppings, `.git`) are ignored silently.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                yield Skipped(rel, unsupported_type(path))
                continue
            try:
                path.stat()
            except FileNotFoundError:
                reason = "broken symlink" if path.is_symlink() else "file disappeared"
                yield Skipped(rel, reason)
                continue
            except OSError as exc:  # ELOOP for symlink loops, EACCES, ...
                yield Skipped(rel, f"cannot access: {exc.strerror or exc}")
                continue
            if not path.is_file():
                yield Skipped(rel, "not a regular file")
                continue
            yield path


def unsupported_type(path: Path) -> str:
    return f"unsupported file type {path.suffix or '(none)'}; use .md, .txt or .html"


def decode(data: bytes) -> str:
    """Decode UTF-8 (with or without BOM) or GB18030/GBK; refuse binary and other encodings."""
    if not data.strip():
        raise ArticleError("empty file")
    if b"\x00" in data:
        raise ArticleError("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ArticleError("not UTF-8 or GB18030/GBK text") from None
        if not _looks_like_chinese_text(text):
            raise ArticleError("not UTF-8 or GB18030/GBK text") from None
    if _control_ratio(text) > 0.01:
        raise ArticleError("binary file (control characters)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _control_ratio(text: str) -> float:
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    return controls / max(len(text), 1)


def _looks_like_chinese_text(text: str) -> bool:
    """GB18030 decodes most byte soup; accept it only when the non-ASCII part is mostly CJK."""
    non_ascii = [ch for ch in text if ord(ch) > 0x7F]
    if not non_ascii:
        return True
    cjk = sum(
        1
        for ch in non_ascii
        if "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef" or ch in "“”‘’…—·"
    )
    return cjk / len(non_ascii) >= 0.9 and _latin1_mojibake_share(text) < 0.5


def _latin1_mojibake_share(text: str) -> float:
    """Share of non-ASCII characters that look like Latin-1 read as GBK.

    An accented Latin-1 letter followed by an ASCII letter decodes as one rare GBK character
    (trail byte < 0xA1, outside GB2312) glued to Latin letters: "Müller" → "M黮ler".
    Real Chinese text uses GB2312 characters, or keeps rare ones among other CJK characters.
    """
    suspicious = total = 0
    for i, ch in enumerate(text):
        if ord(ch) <= 0x7F:
            continue
        total += 1
        encoded = ch.encode("gb18030")
        if len(encoded) == 2 and encoded[1] >= 0xA1:
            continue  # GB2312 (and the GBK rows built like it)
        before = text[i - 1] if i else ""
        after = text[i + 1 : i + 2]
        if (before.isascii() and before.isalpha()) or (after.isascii() and after.isalpha()):
            suspicious += 1
    return suspicious / max(total, 1)


def split_front_matter(text: str) -> tuple[dict[str, str], str, int]:
    """Return (metadata, body, body offset). No front matter gives ({}, text, 0)."""
    meta, _, body, offset = parse_front_matter(text)
    return meta, body, offset


def parse_front_matter(text: str) -> tuple[dict[str, str], tuple[OtherSource, ...], str, int]:
    """(metadata, other sources of the same text (`also`), body, body offset)."""
    opening = _FRONT_MATTER_OPEN.match(text)
    if not opening:
        return {}, (), text, 0
    closing = _FRONT_MATTER_CLOSE.search(text, opening.end())
    if not closing:
        raise ArticleError("front matter is not closed (no line with ---)")
    raw = text[opening.end() : closing.start()]
    try:
        data = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ArticleError(f"front matter is not valid YAML: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ArticleError("front matter must be a YAML mapping of key: value")
    meta: dict[str, str] = {}
    for key in METADATA_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, dt.date | dt.datetime):
            value = value.isoformat()[:10]
        if not isinstance(value, str | int | float):
            raise ArticleError(f"front matter key {key!r} must be text")
        meta[key] = str(value).strip()
    body_start = closing.end()
    if text[body_start : body_start + 1] == "\n":
        body_start += 1
    return meta, _other_sources(data.get("also")), text[body_start:], body_start


def _other_sources(value: object) -> tuple[OtherSource, ...]:
    """`also: [{url, source, date}, …]`; entries without a URL are not sources."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ArticleError("front matter key 'also' must be a list of {url, source, date}")
    out = []
    for item in value:
        fields = {k: item.get(k) for k in ("url", "source", "date")}
        fields = {
            k: (v.isoformat()[:10] if isinstance(v, dt.date) else str(v or "").strip()) for k, v in fields.items()
        }
        if fields["url"]:
            out.append(OtherSource(**fields))
    return tuple(out)


def format_article(body: str, meta: Mapping[str, str], also: Sequence[OtherSource] = ()) -> str:
    """A corpus `.md` file: front matter with the non-empty `METADATA_KEYS` of `meta` (and the
    other sources of the same text), then `body`."""
    fields: dict[str, object] = {key: str(meta[key]) for key in METADATA_KEYS if meta.get(key)}
    if also:
        fields["also"] = [{k: v for k, v in vars(o).items() if v} for o in also]
    head = yaml.safe_dump(fields, allow_unicode=True, sort_keys=False, width=1_000_000) if fields else ""
    return f"---\n{head}---\n{body}"


def leading_heading(body: str) -> str | None:
    """The text of a heading that opens the body (before any paragraph), if there is one."""
    for line in body.split("\n"):
        if not line.strip():
            continue
        match = _HEADING.match(line)
        return match.group(1).strip() if match else None
    return None


def title_from_filename(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip() or path.name


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ArticleError(f"file too large ({size // (1024 * 1024)} MB > {MAX_FILE_BYTES // (1024 * 1024)} MB)")
        return path.read_bytes()
    except FileNotFoundError:
        raise ArticleError("file disappeared while reading") from None
    except OSError as exc:
        raise ArticleError(f"cannot read: {exc.strerror or exc}") from None


def read_article(path: Path, root: Path) -> Article:
    """Read and decode one file into an `Article`; raise `ArticleError` with the reason."""
    data = _read_bytes(path)
    return _parse_article(path, root, data, hashlib.sha256(data).hexdigest())


def _parse_article(path: Path, root: Path, data: bytes, content_hash: str) -> Article:
    if path.suffix.lower() in HTML_SUFFIXES:
        # A saved web page: its article text as markdown (offsets then point into that) and
        # the metadata of its tags. Imported here: corpus.html builds on this module.
        from corpus.html import decode_html, extract_article

        page = extract_article(decode_html(data))
        meta = {"title": page.title, "source": page.source, "author": page.author, "date": page.date, "url": page.url}
        body, offset, also = page.body, 0, ()
    else:
        meta, also, body, offset = parse_front_matter(decode(data))
    if not body.strip():
        raise ArticleError("no text after front matter")
    rel = path.relative_to(root)
    title = meta.get("title") or leading_heading(body) or title_from_filename(path)
    return Article(
        id=rel.as_posix(),
        path=rel.as_posix(),
        title=title,
        body=body,
        content_hash=content_hash,
        source=meta.get("source", ""),
        author=meta.get("author", ""),
        date=meta.get("date", ""),
        url=meta.get("url", ""),
        lang=meta.get("lang", "") or "zh",
        body_offset=offset,
        also=also,
    )


def load_corpus(root: Path) -> tuple[list[Article], list[Skipped]]:
    """Read every article under `root`; unreadable files come back as `Skipped`."""
    scan = scan_corpus(root)
    return scan.articles, scan.skipped


@dataclass(frozen=True)
class CorpusScan:
    """What `scan_corpus` found: parsed articles, ids whose bytes are unchanged, skipped files."""

    articles: list[Article]
    unchanged: list[str]
    skipped: list[Skipped]


def scan_corpus(root: Path, known_hashes: Mapping[str, str] | None = None) -> CorpusScan:
    """Read the corpus, parsing only files whose bytes differ from `known_hashes` (id → sha256).

    An incremental build passes the hashes of the live index: decoding and front matter
    parsing of hundreds of untouched files would otherwise cost more than the change itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory not found: {root}")
    known = known_hashes or {}
    articles: list[Article] = []
    unchanged: list[str] = []
    skipped: list[Skipped] = []
    for item in iter_corpus_files(root):
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        rel = item.relative_to(root).as_posix()
        try:
            data = _read_bytes(item)
            digest = hashlib.sha256(data).hexdigest()
            if known.get(rel) == digest:
                unchanged.append(rel)
            else:
                articles.append(_parse_article(item, root, data, digest))
        except ArticleError as exc:
            skipped.append(Skipped(rel, str(exc)))
    return CorpusScan(articles, unchanged, skipped)
