"""`python -m index add`: article pages, feeds and local files into the corpus directory.

The corpus directory stays the one source of truth: each article becomes one `.md` file
(front matter + the article as markdown), written atomically and named from its URL or
source file, so adding it again overwrites the same file; the usual incremental build then
indexes it. A bad source (dead link, PDF, endless page, broken feed, a page without an
article) is one `skipped` result with its reason, never an exception, so it does not stop
the others. `add_sources` blocks and shares nothing between calls (its own HTTP client),
so the bot can run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from corpus.html import HtmlArticle, decode_html, extract_article
from corpus.model import OtherSource, Skipped
from corpus.reader import (
    SUPPORTED_SUFFIXES,
    ArticleError,
    decode,
    format_article,
    iter_corpus_files,
    parse_front_matter,
    read_article,
    split_front_matter,
    unsupported_type,
)
from index.backends import OPEN_ERRORS, open_backend
from index.build import BuildError, BuildReport, Progress
from index.publish import BuildLockedError, write_atomic
from settings import Config, IngestConfig

STATUSES = ("added", "updated", "unchanged", "skipped")

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml", "text/xml"}
)
# Servers label anything with these; the body's first bytes decide.
_VAGUE_TYPES = frozenset({"", "text/plain", "application/octet-stream", "binary/octet-stream"})
# What may precede a document's root element: a BOM, an XML declaration, comments.
_PROLOG = rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
_FEED_START = re.compile(_PROLOG + rb"<(?:rss|feed|rdf:RDF)\b", re.S)
_HTML_START = re.compile(_PROLOG + rb"<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # a source that is a URL, not a path
_SLUG_DROP = re.compile(r"[^\w.-]+")


class AddError(Exception):
    """`add` cannot run at all (no corpus directory); the message is for the operator."""


@dataclass(frozen=True)
class AddResult:
    """What happened to one article: `status` is one of `STATUSES`.

    `source` is the URL or file it came from (a feed's entries each get their own);
    `detail` says why it was skipped or left unchanged; `path` is the corpus file,
    relative to the corpus directory.
    """

    source: str
    status: str
    detail: str = ""
    path: str = ""
    title: str = ""

    def line(self) -> str:
        """One line for the operator, e.g. `added URL → host/slug-1a2b3c4d5e.md (title)`."""
        if self.status in {"added", "updated"}:
            return f"{self.status} {self.source} → {self.path} ({self.title})"
        return f"{self.status} {self.source}: {self.detail}"


@dataclass(frozen=True)
class AddReport:
    """All results of one `add_sources` call, and the build that followed (if any)."""

    results: tuple[AddResult, ...]
    build: BuildReport | None = None
    build_error: str = ""

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when every source was added, updated or unchanged and the build (if run) worked."""
        return bool(self.results) and not self.count("skipped") and not self.build_error

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        pending = "to index the new files" if self.count("added") or self.count("updated") else ""
        return f"sources: {counts}\n{build_state(self.build, self.build_error, pending)}"


@dataclass(frozen=True)
class _Download:
    url: str  # after redirects
    kind: str  # "html" or "feed"
    charset: str | None
    data: bytes


class _Skip(Exception):
    """This source or article cannot be added; the message is the reason."""


def add_sources(
    config: Config,
    sources: Sequence[str],
    *,
    build: bool = True,
    progress: Progress | None = None,
    on_result: Callable[[AddResult], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> AddReport:
    """Add article URLs, feed URLs, local files and directories to `config.corpus.dir`, then
    (with `build`) run the incremental index build. `on_result` sees each result as it is
    known; `progress` and `on_wait` (another build holds the lock) are `build_index`'s."""
    corpus = _Corpus(Path(config.corpus.dir))
    results: list[AddResult] = []
    with _Fetcher(config.ingest) as fetcher:
        for source in sources:
            for result in _add_source(source, fetcher, corpus):
                results.append(result)
                if on_result is not None:
                    on_result(result)
    if not build or not any(r.status != "skipped" for r in results):
        return AddReport(tuple(results))
    report, error = build_corpus(config, progress, on_wait)
    return AddReport(tuple(results), build=report, build_error=error)


def build_corpus(
    config: Config, progress: Progress | None = None, on_wait: Callable[[], None] | None = None
) -> tuple[BuildReport | None, str]:
    """The incremental build after the corpus changed: (its report, "") or (None, why it failed)."""
    try:
        with open_backend(config) as backend:
            return backend.build(progress=progress, on_wait=on_wait), ""
    except (BuildError, BuildLockedError, *OPEN_ERRORS) as exc:
        return None, str(exc)


def build_state(build: BuildReport | None, build_error: str, pending: str) -> str:
    """The line after an add or remove: what became of the index; `pending` says what a build
    would do ("" when the corpus did not change)."""
    if build_error:
        return f"index not rebuilt: {build_error}"
    if build is not None:
        return build.summary()
    if pending:
        return f"index not rebuilt: run `python -m index build` {pending}"
    return "index not rebuilt"


def _add_source(source: str, fetcher: _Fetcher, corpus: _Corpus) -> Iterator[AddResult]:
    if URL_SCHEME.match(source):
        yield from _add_url(source, fetcher, corpus)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        for item in iter_corpus_files(path):
            if isinstance(item, Skipped):
                yield AddResult(str(path / item.path), "skipped", item.reason)
            else:
                yield _add_file(item, corpus)
    elif path.exists():
        yield _add_file(path, corpus)
    else:
        yield AddResult(source, "skipped", "no such file or directory, and not an http(s) URL")


def _add_file(path: Path, corpus: _Corpus) -> AddResult:
    """A local `.html`/`.md`/`.txt` file, read exactly as `index build` reads the corpus."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        return AddResult(str(path), "skipped", unsupported_type(path))
    resolved = path.resolve()
    if resolved.is_relative_to(corpus.root.resolve()):
        rel = resolved.relative_to(corpus.root.resolve()).as_posix()
        return AddResult(str(path), "unchanged", "already in the corpus directory", rel)
    try:
        article = read_article(path, path.parent)
    except ArticleError as exc:
        return AddResult(str(path), "skipped", str(exc))
    meta = {"title": article.title, "source": article.source, "author": article.author, "date": article.date}
    meta |= {"url": article.url, "lang": article.lang if article.lang != "zh" else ""}
    return corpus.save(str(path), local_file_name(path), article.body, meta)


def local_file_name(path: Path) -> str:
    """The corpus file of a local file added from outside the corpus: named from its stem and
    its absolute path, so adding it again replaces the same file."""
    return f"{_slug(path.stem)}-{_digest(str(path.resolve()))}.md"


def _add_url(url: str, fetcher: _Fetcher, corpus: _Corpus) -> Iterator[AddResult]:
    try:
        download = fetcher.get(url)
    except _Skip as exc:
        yield AddResult(url, "skipped", str(exc))
        return
    if download.kind == "html":
        yield _add_page(url, download, corpus)
        return
    try:
        entries, feed_title = _feed_entries(download)
    except _Skip as exc:
        yield AddResult(url, "skipped", str(exc))
        return
    for link, fallback in entries:
        try:
            page = fetcher.get(link)
            if page.kind != "html":
                raise _Skip("the feed entry links to a feed, not an article")
        except _Skip as exc:
            yield AddResult(link, "skipped", str(exc))
            continue
        yield _add_page(link, page, corpus, fallback | {"source": feed_title})


def _add_page(url: str, download: _Download, corpus: _Corpus, fallback: dict[str, str] | None = None) -> AddResult:
    try:
        page = extract_article(decode_html(download.data, download.charset), download.url)
    except ArticleError as exc:
        return AddResult(url, "skipped", str(exc))
    meta = _page_meta(page, url, fallback or {})
    return corpus.save(url, url_file_name(url), page.body, meta)


def _page_meta(page: HtmlArticle, url: str, fallback: dict[str, str]) -> dict[str, str]:
    """The page's own metadata, completed by its feed entry's (title, date, author, feed name)."""
    meta = {"title": page.title, "source": page.source, "author": page.author, "date": page.date, "url": page.url}
    # trafilatura names a site without og:site_name by its host; a feed's title is better.
    hosts = {re.sub(r"^(?:www|w\d+)\.", "", urlsplit(u).netloc.lower()) for u in (url, page.url)}
    for key, value in fallback.items():
        if value and (not meta.get(key) or (key == "source" and meta[key].lower() in hosts)):
            meta[key] = value
    meta["title"] = meta["title"] or _slug(Path(urlsplit(url).path).stem) or url
    return meta


def _feed_entries(download: _Download) -> tuple[list[tuple[str, dict[str, str]]], str]:
    """(absolute link, the entry's own title/date/author) per entry, and the feed's title."""
    import feedparser

    # A file object: given bytes or a str, feedparser may take it for a URL or a path and open it.
    parsed = feedparser.parse(
        io.BytesIO(download.data),
        response_headers={"content-location": download.url, "content-type": "application/xml"},
    )
    problem = parsed.get("bozo_exception")
    # A wrong charset label or content type is harmless; broken XML makes entries guesswork.
    if problem is not None and not isinstance(
        problem, feedparser.CharacterEncodingOverride | feedparser.NonXMLContentType
    ):
        raise _Skip(f"malformed feed: {_first_line(str(problem)) or type(problem).__name__}")
    if not parsed.get("version"):
        raise _Skip("XML, but not an RSS or Atom feed")
    if not parsed.entries:
        raise _Skip("the feed lists no entries")
    entries: list[tuple[str, dict[str, str]]] = []
    seen: set[str] = set()
    for entry in parsed.entries:
        link = urljoin(download.url, entry.get("link", "")) if entry.get("link") else ""
        if not link.startswith(("http://", "https://")) or link in seen:
            continue
        seen.add(link)
        published = entry.get("published_parsed") or entry.get("updated_parsed")
        date = time.strftime("%Y-%m-%d", published) if published else ""
        entries.append((link, {"title": entry.get("title", ""), "date": date, "author": entry.get("author", "")}))
    if not entries:
        raise _Skip("no feed entry links to a web page")
    return entries, parsed.feed.get("title", "")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def url_file_name(url: str) -> str:
    """The corpus file of an article URL: `<host>/<last path segment>-<hash of the URL>.md`.

    Stable, so adding a URL again finds its file; the hash keeps `…/2021/a.html` and
    `…/2022/a.html` apart; the fragment does not count.
    """
    parts = urlsplit(url)
    normal = normal_url(url)
    host = _slug((parts.hostname or "unknown") + (f"_{parts.port}" if parts.port else ""))
    stem = re.sub(r"\.(?:s?html?|php|aspx?|jsp)$", "", unquote(parts.path.rstrip("/").rsplit("/", 1)[-1]), flags=re.I)
    return f"{host}/{_slug(stem) or 'index'}-{_digest(normal)}.md"


def normal_url(url: str) -> str:
    """`url` as one article: scheme and host in lower case, no fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def _slug(text: str) -> str:
    return _SLUG_DROP.sub("-", text).strip("-_.")[:60]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _text_key(body: str) -> str:
    """Identity of an article's text: the body without any whitespace (layout differences)."""
    return hashlib.sha256(re.sub(r"\s+", "", body).encode("utf-8")).hexdigest()


class _Corpus:
    """The corpus directory being added to: writes files and knows which texts it holds."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise AddError(f"corpus directory not found: {root}")
        self.root = root
        self._texts: dict[str, str] | None = None  # text key → relative path, read on first use

    def _known_texts(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = {}
            for item in iter_corpus_files(self.root):
                if isinstance(item, Skipped) or item.suffix.lower() not in {".md", ".markdown", ".txt"}:
                    continue
                try:
                    _, body, _ = split_front_matter(decode(item.read_bytes()))
                except (ArticleError, OSError):
                    continue  # the build reports unreadable files
                self._texts.setdefault(_text_key(body), item.relative_to(self.root).as_posix())
        return self._texts

    def save(self, source: str, rel: str, body: str, meta: dict[str, str]) -> AddResult:
        """Write `rel` unless it already holds this, or another file holds the same text."""
        target = self.root / rel
        text = format_article(body, meta)
        title = meta.get("title", "")
        try:
            old = target.read_text(encoding="utf-8") if target.is_file() else None
        except (OSError, UnicodeDecodeError):
            old = ""  # unreadable: replace it
        if old == text:
            return AddResult(source, "unchanged", "same text and metadata", rel, title)
        key = _text_key(body)
        twin = self._known_texts().get(key)
        if twin is not None and twin != rel:
            return self._other_source(source, twin, meta)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, text)
        except OSError as exc:
            return AddResult(source, "skipped", f"cannot write {rel}: {exc.strerror or exc}")
        self._known_texts()[key] = rel
        return AddResult(source, "added" if old is None else "updated", "", rel, title)

    def _other_source(self, source: str, twin: str, meta: dict[str, str]) -> AddResult:
        """The same text as `twin` under another URL: that URL (with its source and date) is
        recorded in `twin`'s front matter (`also`), so answers show the article once with both
        sources; the file is rewritten atomically and rebuilt like any updated article."""
        title = meta.get("title", "")
        path = self.root / twin
        url = meta.get("url", "")
        try:
            known, also, body, _ = parse_front_matter(decode(path.read_bytes()))
        except (ArticleError, OSError):
            return AddResult(source, "unchanged", f"same text as {twin}", twin, title)
        if not url or url == known.get("url") or any(other.url == url for other in also):
            return AddResult(source, "unchanged", f"same text as {twin}", twin, title)
        other = OtherSource(url, meta.get("source", ""), meta.get("date", ""))
        try:
            write_atomic(path, format_article(body, known, (*also, other)))
        except OSError as exc:
            return AddResult(source, "skipped", f"cannot write {twin}: {exc.strerror or exc}")
        return AddResult(source, "updated", f"same text as {twin}; recorded as another source of it", twin, title)


class _Fetcher:
    """GET with the limits of `[ingest]`: http(s) only, timeouts, a redirect limit, a size
    cap enforced while streaming, HTML or feeds only. Errors become `_Skip` reasons."""

    def __init__(self, ingest: IngestConfig) -> None:
        self.ingest = ingest
        self.client = httpx.Client(
            timeout=httpx.Timeout(ingest.timeout),
            follow_redirects=True,
            max_redirects=ingest.max_redirects,
            headers={
                "User-Agent": ingest.user_agent,
                "Accept": "text/html,application/xhtml+xml,application/rss+xml,application/atom+xml,"
                "application/xml;q=0.9,*/*;q=0.1",
                "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
            },
        )

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, url: str) -> _Download:
        if not url.lower().startswith(("http://", "https://")):
            raise _Skip("only http and https URLs are fetched")
        try:
            parts = urlsplit(url)
            valid = bool(parts.hostname) and parts.port != 0  # .port raises ValueError when malformed
        except ValueError:
            valid = False
        if not valid:
            raise _Skip("not a valid URL")
        try:
            return self._get(url)
        except httpx.TooManyRedirects:
            raise _Skip(f"too many redirects (more than {self.ingest.max_redirects})") from None
        except httpx.TimeoutException:
            raise _Skip(f"timed out (no response within {self.ingest.timeout:g}s)") from None
        except httpx.ConnectError as exc:
            raise _Skip(f"cannot connect: {_first_line(str(exc)) or type(exc).__name__}") from None
        except httpx.UnsupportedProtocol:
            raise _Skip("redirected to a URL that is not http or https") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _Skip(f"download failed: {_first_line(str(exc)) or type(exc).__name__}") from None

    def _get(self, url: str) -> _Download:
        limit = self.ingest.max_bytes
        deadline = time.monotonic() + self.ingest.download_seconds
        with self.client.stream("GET", url) as response:
            if not response.is_success:
                raise _Skip(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            content_type, charset = _content_type(response.headers.get("content-type", ""))
            if content_type not in _HTML_TYPES | _FEED_TYPES | _VAGUE_TYPES:
                raise _Skip(f"not a web page or feed ({content_type})")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _Skip(f"too large ({_megabytes(int(declared))} > {_megabytes(limit)} limit)")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _Skip(f"too large (more than the {_megabytes(limit)} limit)")
                if time.monotonic() > deadline:
                    raise _Skip(f"download took longer than {self.ingest.download_seconds:g}s")
                chunks.append(chunk)
            data = b"".join(chunks)
            final = str(response.url)
        kind = _sniff(data[:1024], content_type)
        if kind is None:
            raise _Skip(f"not a web page or feed ({content_type or 'no content type'})")
        return _Download(final, kind, charset, data)


def _content_type(header: str) -> tuple[str, str | None]:
    message = Message()
    message["content-type"] = header
    kind = message.get_content_type() if header else ""
    return kind, message.get_param("charset") if header else None  # type: ignore[return-value]


def _sniff(head: bytes, content_type: str) -> str | None:
    """Whether a body is a "feed" or "html": a feed's root element wins over the label (feeds
    are often served as text/html), then the label, then an HTML start for vague labels."""
    if _FEED_START.match(head):
        return "feed"
    if content_type in _HTML_TYPES or _HTML_START.match(head):
        return "html"
    return "feed" if content_type in _FEED_TYPES else None


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
