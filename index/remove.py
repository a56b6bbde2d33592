"""`python -m index remove`: articles out of the corpus directory, then out of the index.

A source names an article the way an operator knows it: the URL it was added from (or the
`url` in its front matter), its corpus file (a path), the local file it was added from, or its
article id as `python -m index info` shows it (its path inside the corpus directory). The
corpus file is deleted and the usual incremental build publishes a version without it, so no
answer quotes it from then on. A URL that an article only lists as another source of the same
text (`also`) is taken off that list; the article stays. Whatever a source says, only article
files inside the corpus directory are ever touched (a symlinked file is unlinked, never its
target). Like `index.add`, it blocks, so the bot runs it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from corpus.model import Skipped
from corpus.reader import (
    SUPPORTED_SUFFIXES,
    ArticleError,
    decode,
    format_article,
    iter_corpus_files,
    parse_front_matter,
    read_article,
)
from index.add import URL_SCHEME, build_corpus, build_state, local_file_name, normal_url, url_file_name
from index.build import BuildReport, Progress
from index.publish import write_atomic
from settings import Config

STATUSES = ("removed", "unlisted", "not found")


class RemoveError(Exception):
    """`remove` cannot run at all (no corpus directory); the message is for the operator."""


@dataclass(frozen=True)
class RemoveResult:
    """What happened for one source: `status` is one of `STATUSES`; `path` is the corpus
    file (relative to the corpus directory) that was deleted or edited."""

    source: str
    status: str
    path: str = ""
    title: str = ""
    detail: str = ""

    def line(self) -> str:
        """One line for the operator, e.g. `removed URL → host/slug-1a2b3c4d5e.md (title)`."""
        if self.status == "removed":
            return f"removed {self.source} → {self.path} ({self.title})"
        if self.status == "unlisted":
            return f"unlisted {self.source}: no longer listed as a source of {self.path} ({self.title})"
        return f"not found: {self.source}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class RemoveReport:
    """All results of one `remove_sources` call, and the build that followed (if any)."""

    results: tuple[RemoveResult, ...]
    build: BuildReport | None = None
    build_error: str = ""

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def changed(self) -> bool:
        return any(r.status != "not found" for r in self.results)

    @property
    def ok(self) -> bool:
        """True when every source was found and the build (if run) worked."""
        return bool(self.results) and not self.count("not found") and not self.build_error

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        pending = "to take them out of the index" if self.changed else ""
        return f"sources: {counts}\n{build_state(self.build, self.build_error, pending)}"


def remove_sources(
    config: Config,
    sources: Sequence[str],
    *,
    build: bool = True,
    progress: Progress | None = None,
    on_result: Callable[[RemoveResult], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> RemoveReport:
    """Remove the articles `sources` name from `config.corpus.dir`, then (with `build`) run the
    incremental index build. `on_result` sees each result as it is known."""
    corpus = _Corpus(Path(config.corpus.dir))
    results: list[RemoveResult] = []
    for source in sources:
        for result in corpus.remove(source):
            results.append(result)
            if on_result is not None:
                on_result(result)
    report = RemoveReport(tuple(results))
    if not build or not report.changed:
        return report
    built, error = build_corpus(config, progress, on_wait)
    return RemoveReport(report.results, build=built, build_error=error)


class _Corpus:
    """The corpus directory being removed from."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise RemoveError(f"corpus directory not found: {root}")
        self.root = root
        self.real = root.resolve()
        self._removed: dict[str, str] = {}  # corpus file → title, removed by this call
        self._urls: dict[str, tuple[list[str], list[str]]] | None = None  # url → (files, files listing it in also)

    def remove(self, source: str) -> Iterator[RemoveResult]:
        try:
            if URL_SCHEME.match(source):
                yield from self._remove_url(source)
                return
            rel = self._file_of(source)
        except (OSError, ValueError):  # unusable as a path: too long, a NUL byte…
            rel = None
        if rel is None:
            yield RemoveResult(source, "not found")
        else:
            yield self._delete(source, rel)

    def _remove_url(self, url: str) -> Iterator[RemoveResult]:
        files, listing = self._url_index().get(normal_url(url), ([], []))
        named = url_file_name(url)
        if self._article(named) is not None and named not in files:
            files = [named, *files]
        files = [rel for rel in files if rel in self._removed or self._article(rel) is not None]
        for rel in files:
            yield self._delete(url, rel)
        if not files:
            unlisted = [self._unlist(url, rel) for rel in listing]
            yield from unlisted or [RemoveResult(url, "not found")]

    def _file_of(self, source: str) -> str | None:
        """The corpus file (relative) a path or an article id names, or None."""
        if self._article(source) is not None or source in self._removed:
            return source  # an article id
        path = Path(source).expanduser()
        if not (path.is_absolute() or path.exists()):
            return None
        parent = path.parent.resolve()  # the directories resolved, the file name kept
        if parent.is_relative_to(self.real):
            rel = (parent / path.name).relative_to(self.real).as_posix()
        else:
            rel = local_file_name(path)  # a file added from outside the corpus
        return rel if rel in self._removed or self._article(rel) is not None else None

    def _article(self, rel: str) -> Path | None:
        """The article file at `rel` (an id: relative, /-separated) inside the corpus, or None."""
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or any(p in (".", "..") or p.startswith(".") for p in parts):
            return None  # outside the corpus, or hidden (never an article)
        path = self.root.joinpath(*parts)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES or not path.parent.resolve().is_relative_to(self.real):
            return None
        return path if path.is_file() else None

    def _delete(self, source: str, rel: str) -> RemoveResult:
        if rel in self._removed:
            return RemoveResult(source, "removed", rel, self._removed[rel])
        path = self._article(rel)
        assert path is not None
        try:
            title = read_article(path, self.root).title
        except ArticleError:
            title = ""
        try:
            path.unlink()
        except OSError as exc:
            return RemoveResult(source, "not found", rel, title, f"cannot delete {rel}: {exc.strerror or exc}")
        for parent in path.parents:  # empty folders (an outlet's) go with their last article
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break
        self._removed[rel] = title
        return RemoveResult(source, "removed", rel, title)

    def _unlist(self, url: str, rel: str) -> RemoveResult:
        """Take `url` off the other sources (`also`) of the article in `rel`."""
        path = self.root / rel
        try:
            known, also, body, _ = parse_front_matter(decode(path.read_bytes()))
            kept = tuple(other for other in also if _key(other.url) != normal_url(url))
            write_atomic(path, format_article(body, known, kept))
        except (ArticleError, OSError) as exc:
            return RemoveResult(url, "not found", rel, "", f"cannot edit {rel}: {exc}")
        return RemoveResult(url, "unlisted", rel, known.get("title", ""))

    def _url_index(self) -> dict[str, tuple[list[str], list[str]]]:
        """Every URL in the corpus files' front matter (`url`, `also`), read once per call.
        HTML files are named by their path or id: their URL is inside the page."""
        if self._urls is None:
            self._urls = {}
            for item in iter_corpus_files(self.root):
                if isinstance(item, Skipped) or item.suffix.lower() not in {".md", ".markdown", ".txt"}:
                    continue
                try:
                    known, also, _, _ = parse_front_matter(decode(item.read_bytes()))
                except (ArticleError, OSError):
                    continue
                rel = item.relative_to(self.root).as_posix()
                for url, side in ((known.get("url", ""), 0), *((other.url, 1) for other in also)):
                    key = _key(url)
                    if key:
                        self._urls.setdefault(key, ([], []))[side].append(rel)
        return self._urls


def _key(url: str) -> str:
    """`url` as `normal_url` compares it; "" when it is none or malformed."""
    try:
        return normal_url(url) if url else ""
    except ValueError:
        return ""
