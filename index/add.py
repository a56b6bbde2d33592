"""`python -m index add`: article pages, feeds and local files into the corpus directory.

The corpus directory stays the one source of truth: each article becomes one `.md` file
(front matter + the article as markdown), written atomically and named from its URL or
source file, so adding it again overwrites the same file; the usual incremental build then
indexes it. A bad source (dead link, PDF, endless page, broken feed, a page without an
article, an address that may not be fetched) is one `skipped` result with its reason, never
an exception, so it does not stop the others. Fetching follows `index.fetch`'s rules; the
bot and `index watch` read what they fetch in a limited child process (`isolated`,
`index.isolate`) and build in their own.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

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
from index.fetch import Download, Fetcher, FetchError, Resolver
from index.isolate import ChildFailed, Limits, run_isolated
from index.publish import write_atomic
from settings import Config, IngestConfig

if TYPE_CHECKING:  # the build is imported when it runs: the isolated child never needs it
    from index.build import BuildReport, Progress

STATUSES = ("added", "updated", "unchanged", "skipped")

URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # a source that is a URL, not a path
_SLUG_DROP = re.compile(r"[^\w.-]+")
# An entry element of RSS 0.9x/2.0, RSS 1.0 or Atom, with or without a namespace prefix.
_FEED_ENTRY = re.compile(rb"<(?:[\w.-]+:)?(?:item|entry)[\s/>]")
_MIN_SUMMARY_CHARS = 20
# Subdomains that name the same site as their parent (mobile and numbered mirrors).
_SITE_PREFIX = re.compile(r"^(?:www|m|wap|mobile|w\d+)\.")


class AddError(Exception):
    """`add` cannot run at all (no corpus directory); the message is for the operator."""


@dataclass(frozen=True)
class AddResult:
    """What happened to one article: `status` is one of `STATUSES`.

    `source` is the URL or file it came from (a feed's entries each get their own);
    `detail` says why it was skipped or left unchanged; `path` is the corpus file,
    relative to the corpus directory. `temporary` marks a skip that may not happen again
    (a timeout, a 5xx answer): a watched feed tries that entry again at its next poll.
    """

    source: str
    status: str
    detail: str = ""
    path: str = ""
    title: str = ""
    temporary: bool = False

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
class FeedEntry:
    """One entry of a feed: its absolute link, guid, a key of its text (title and summary),
    and the title/date/author it gives its article."""

    link: str
    guid: str = ""
    text_key: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        """What identifies the entry: a new link, guid or text counts as already taken when
        any of these was taken before."""
        keys = [f"link:{self.link}"]
        if self.guid:
            keys.append(f"guid:{self.guid}")
        if self.text_key:
            keys.append(f"text:{self.text_key}")
        return tuple(keys)


@dataclass(frozen=True)
class Feed:
    """A parsed feed: its title, at most `max_feed_entries` entries (in the feed's order,
    newest first by convention), and how many entries the document listed."""

    title: str
    entries: tuple[FeedEntry, ...]
    listed: int


class FeedError(Exception):
    """A feed that cannot be read (malformed, not RSS or Atom); the message is the reason."""


class _EntryBudget:
    """Feed entries one add may still fetch (`max_feed_entries` for the whole add)."""

    def __init__(self, entries: int) -> None:
        self.left = entries

    def take(self, wanted: int) -> int:
        granted = min(wanted, self.left)
        self.left -= granted
        return granted


def add_sources(
    config: Config,
    sources: Sequence[str],
    *,
    build: bool = True,
    progress: Progress | None = None,
    on_result: Callable[[AddResult], None] | None = None,
    on_wait: Callable[[], None] | None = None,
    resolver: Resolver | None = None,
    isolated: bool = False,
    cancel: threading.Event | None = None,
) -> AddReport:
    """Add article URLs, feed URLs, local files and directories to `config.corpus.dir`, then
    (with `build`) run the incremental index build. `on_result` sees each result as it is
    known; `progress` and `on_wait` (another build holds the lock) are `build_index`'s.

    `isolated` fetches and reads the sources in a child process with memory and CPU limits
    (`index.isolate`), as the bot does; the build then runs here. Setting `cancel` stops the
    child (its source is reported skipped) and skips the build."""
    Corpus(Path(config.corpus.dir))  # no corpus directory: AddError before anything starts
    if isolated:
        results = _collect_isolated(config, sources, on_result=on_result, resolver=resolver, cancel=cancel)
    else:
        results = _collect(config, sources, on_result=on_result, resolver=resolver)
    if not build or not any(r.status != "skipped" for r in results) or (cancel is not None and cancel.is_set()):
        return AddReport(tuple(results))
    report, error = build_corpus(config, progress, on_wait)
    return AddReport(tuple(results), build=report, build_error=error)


def build_corpus(
    config: Config, progress: Progress | None = None, on_wait: Callable[[], None] | None = None
) -> tuple[BuildReport | None, str]:
    """The incremental build after the corpus changed: (its report, "") or (None, why it failed)."""
    from index.backends import OPEN_ERRORS, open_backend  # imported when a build runs: the child never does
    from index.build import BuildError
    from index.publish import BuildLockedError

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


def _collect(
    config: Config,
    sources: Sequence[str],
    *,
    on_result: Callable[[AddResult], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    resolver: Resolver | None = None,
) -> list[AddResult]:
    """Fetch, read and write each source into the corpus directory (no build). `on_start`
    sees each URL or file before it is read."""
    corpus = Corpus(Path(config.corpus.dir))
    budget = _EntryBudget(config.ingest.max_feed_entries)
    results: list[AddResult] = []
    with Fetcher(config.ingest, resolver=resolver) as fetcher:
        for source in sources:
            for result in _add_source(source, fetcher, corpus, budget, on_start):
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def _collect_isolated(
    config: Config,
    sources: Sequence[str],
    *,
    on_result: Callable[[AddResult], None] | None = None,
    resolver: Resolver | None = None,
    cancel: threading.Event | None = None,
) -> list[AddResult]:
    """`_collect` in a limited child process. When the child breaks a limit or is
    cancelled, the source it was reading is one skipped result saying so."""
    results: list[AddResult] = []
    current = [sources[0] if sources else ""]

    def on_event(event: AddResult | str) -> None:
        if isinstance(event, str):
            current[0] = event
            return
        results.append(event)
        if on_result is not None:
            on_result(event)

    limits = child_limits(config.ingest, len(sources) + config.ingest.max_feed_entries)
    try:
        run_isolated(_collect_child, (config, list(sources), resolver), limits, on_event=on_event, cancel=cancel)
    except ChildFailed as exc:
        on_event(AddResult(current[0], "skipped", str(exc)))
    return results


def child_limits(ingest: IngestConfig, fetches: int) -> Limits:
    """The child's limits for `fetches` downloads: each may take `download_seconds`."""
    wall = ingest.child_cpu_seconds + fetches * ingest.download_seconds + 30
    return Limits(ingest.child_memory_mb, ingest.child_cpu_seconds, wall)


def _collect_child(
    config: Config, sources: list[str], resolver: Resolver | None, emit: Callable[[object], None]
) -> None:
    _collect(config, sources, on_result=emit, on_start=emit, resolver=resolver)


def _add_source(
    source: str, fetcher: Fetcher, corpus: Corpus, budget: _EntryBudget, on_start: Callable[[str], None] | None
) -> Iterator[AddResult]:
    if on_start is not None:
        on_start(source)
    if URL_SCHEME.match(source):
        yield from _add_url(source, fetcher, corpus, budget, on_start)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        for item in iter_corpus_files(path):
            if isinstance(item, Skipped):
                yield AddResult(str(path / item.path), "skipped", item.reason)
            else:
                if on_start is not None:
                    on_start(str(item))
                yield _add_file(item, corpus)
    elif path.exists():
        yield _add_file(path, corpus)
    else:
        yield AddResult(source, "skipped", "no such file or directory, and not an http(s) URL")


def _add_file(path: Path, corpus: Corpus) -> AddResult:
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


def _add_url(
    url: str, fetcher: Fetcher, corpus: Corpus, budget: _EntryBudget, on_start: Callable[[str], None] | None
) -> Iterator[AddResult]:
    try:
        download = fetcher.get(url)
    except FetchError as exc:
        yield AddResult(url, "skipped", str(exc), temporary=exc.temporary)
        return
    if download.kind == "html":
        yield add_page(url, download, corpus)
        return
    max_entries = fetcher.ingest.max_feed_entries
    try:
        feed = read_feed(download, max_entries)
    except FeedError as exc:
        yield AddResult(url, "skipped", str(exc))
        return
    if not feed.entries:
        yield AddResult(
            url, "skipped", "the feed lists no entries" if not feed.listed else "no feed entry links to a web page"
        )
        return
    taken = budget.take(len(feed.entries))
    for entry in feed.entries[:taken]:
        if on_start is not None:
            on_start(entry.link)
        yield add_entry(entry, feed.title, fetcher, corpus)
    left_out = max(0, feed.listed - max_entries) + len(feed.entries) - taken
    if left_out:
        yield AddResult(
            url,
            "skipped",
            f"{left_out} more feed entries left out: at most {max_entries} are taken per feed and per add "
            "([ingest] max_feed_entries)",
        )


def add_entry(entry: FeedEntry, feed_title: str, fetcher: Fetcher, corpus: Corpus) -> AddResult:
    """The article a feed entry links to, completed by the entry's own metadata."""
    try:
        page = fetcher.get(entry.link)
        if page.kind != "html":
            raise FetchError("the feed entry links to a feed, not an article")
    except FetchError as exc:
        return AddResult(entry.link, "skipped", str(exc), temporary=exc.temporary)
    return add_page(entry.link, page, corpus, entry.meta | {"source": feed_title})


def add_page(url: str, download: Download, corpus: Corpus, fallback: dict[str, str] | None = None) -> AddResult:
    try:
        page = extract_article(decode_html(download.data, download.charset), download.url)
    except ArticleError as exc:
        return AddResult(url, "skipped", str(exc))
    meta = _page_meta(page, download.url, fallback or {})
    return corpus.save(url, url_file_name(url), page.body, meta)


def _page_meta(page: HtmlArticle, fetched: str, fallback: dict[str, str]) -> dict[str, str]:
    """The page's own metadata, completed by its feed entry's (title, date, author, feed name).

    A page names its canonical URL and site name itself: both are believed only when that
    URL is on the site that was fetched, so a page cannot cite itself as another outlet;
    otherwise the fetched URL is the citation and the feed's title (or the host) its source."""
    meta = {"title": page.title, "source": page.source, "author": page.author, "date": page.date, "url": page.url}
    host = _site_host(urlsplit(fetched).hostname or "")
    claimed = _site_host(urlsplit(page.url).hostname or "")
    if claimed != host and not claimed.endswith("." + host):
        meta["url"] = fetched
        meta["source"] = ""
    # trafilatura names a site without og:site_name by its host; a feed's title is better.
    hosts = {host, claimed} | {_site_host(urlsplit(u).netloc) for u in (fetched, page.url)}
    for key, value in fallback.items():
        if value and (not meta.get(key) or (key == "source" and _site_host(meta[key]) in hosts)):
            meta[key] = value
    meta["source"] = meta["source"] or host
    meta["title"] = meta["title"] or _slug(Path(urlsplit(fetched).path).stem) or fetched
    return meta


def _site_host(host: str) -> str:
    return _SITE_PREFIX.sub("", host.lower().rstrip("."))


def read_feed(download: Download, max_entries: int) -> Feed:
    """The feed's title and those of its first `max_entries` entries that link to a web page
    (none for an empty feed); `FeedError` when it is no readable feed.

    A feed listing more entries is cut down before feedparser reads it (feedparser takes
    seconds per 10,000 entries)."""
    import feedparser

    data = download.data
    listed = len(_FEED_ENTRY.findall(data))
    if listed > max_entries:
        data = _first_entries(data, max_entries)
    # A file object: given bytes or a str, feedparser may take it for a URL or a path and open it.
    parsed = feedparser.parse(
        io.BytesIO(data),
        response_headers={"content-location": download.url, "content-type": "application/xml"},
    )
    problem = parsed.get("bozo_exception")
    # A wrong charset label or content type is harmless; broken XML makes entries guesswork.
    if problem is not None and not isinstance(
        problem, feedparser.CharacterEncodingOverride | feedparser.NonXMLContentType
    ):
        raise FeedError(f"malformed feed: {_first_line(str(problem)) or type(problem).__name__}")
    if not parsed.get("version"):
        raise FeedError("XML, but not an RSS or Atom feed")
    entries: list[FeedEntry] = []
    seen: set[str] = set()
    for entry in parsed.entries[:max_entries]:
        link = urljoin(download.url, entry.get("link", "")) if entry.get("link") else ""
        if not link.startswith(("http://", "https://")) or link in seen:
            continue
        seen.add(link)
        published = entry.get("published_parsed") or entry.get("updated_parsed")
        date = time.strftime("%Y-%m-%d", published) if published else ""
        title = entry.get("title", "")
        summary = re.sub(r"\s+", "", entry.get("summary", ""))
        # Title and summary identify a republished entry; a bare title ("快讯") would not.
        text_key = _text_key(f"{title}\n{summary}")[:32] if len(summary) >= _MIN_SUMMARY_CHARS else ""
        meta = {"title": title, "date": date, "author": entry.get("author", "")}
        entries.append(FeedEntry(link, str(entry.get("id") or "")[:500], text_key, meta))
    return Feed(parsed.feed.get("title", ""), tuple(entries), max(listed, len(parsed.entries)))


def _first_entries(data: bytes, count: int) -> bytes:
    """The feed document with only its first `count` entries (no entity expansion, no DTD,
    no network)."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise FeedError(f"malformed feed: not well-formed XML (line {exc.lineno})") from None
    for extra in list(root.iter("{*}item", "{*}entry"))[count:]:
        extra.getparent().remove(extra)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="utf-8")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def url_file_name(url: str) -> str:
    """The corpus file of an article URL: `<host>/<last path segment>-<hash of the URL>.md`.

    Stable, so adding a URL again finds its file; the hash keeps `…/2021/a.html` and
    `…/2022/a.html` apart; the fragment does not count.
    """
    parts = urlsplit(url)
    normal = normal_url(url)
    # An empty or all-punctuation host ("[::]", "..") must not make the path absolute.
    host = _slug((parts.hostname or "") + (f"_{parts.port}" if parts.port else "")) or "unknown"
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


class Corpus:
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
        if not target.resolve().is_relative_to(self.root.resolve()):
            return AddResult(source, "skipped", f"refused: {rel} would be written outside the corpus directory")
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
