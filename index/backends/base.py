"""The one index interface: what retrieval reads and what a build writes, whatever stores it.

`retrieval/` knows no SQL, FAISS or Milvus: it asks an `IndexReader` for candidates (dense
search over query vectors, BM25 over analyzed terms), rows, embeddings, neighbours, document
frequencies and copy groups, and ranks them itself. An `IndexBackend` (chosen by
`[index] backend`) opens readers, builds, checks and describes the index. Two implement it:
`sqlite_faiss` (embedded, the default) and `milvus` (Milvus Lite or a Milvus server).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from index.text import script_of

if TYPE_CHECKING:
    from index.build import BuildReport
    from index.embedder import Embedder
    from settings import Config, ModelConfig

Progress = Callable[[int, int], None]


class RebuildRequiredError(Exception):
    """The index cannot serve this program or config as it is (built with another model, or by an
    older version of the program): the message names the rebuild command.

    `model` is the model the index was embedded with, when that alone is the mismatch: the index
    can still answer questions embedded with it (e.g. until the rebuild is live)."""

    def __init__(self, message: str, model: ModelConfig | None = None) -> None:
        super().__init__(message)
        self.model = model


class IndexUnavailableError(Exception):
    """The index's store cannot be reached or opened now (a server down, a Milvus Lite file
    held by another process); the message says what to do, in one line."""


@dataclass(frozen=True)
class PassageRow:
    """One passage as stored, with its article's citation fields."""

    id: int
    article_id: str
    ordinal: int
    section: str
    paragraph: int
    paragraph_end: int
    text: str
    terms: str  # the analyzed index terms, space-separated (`index.text.segment_for_index`)
    embedding: np.ndarray
    title: str
    source: str
    date: str
    url: str
    sentences: str  # JSON [[start, end, normalised text], …] (`index.text.sentence_spans`)


@dataclass(frozen=True)
class CopyRow:
    """A passage with what a citation of it needs, as a member of a copy group
    (`index.dedup`; `group_id` 0: no copies, listed only because its article has aliases)."""

    group_id: int
    passage_id: int
    article_id: str
    source: str
    date: str
    title: str
    url: str
    aliases: tuple[tuple[str, str, str], ...] = ()  # the article's other (source, date, url)


class IndexReader(ABC):
    """One readable state of the index. Thread-safe: the bot asks from worker threads.

    Ids are passage ids (never reused across versions). Scores: `dense` and `cosines` are
    cosine similarities, `lexical` BM25 (higher is better).
    """

    backend: ClassVar[str]
    version: str  # the name of the build this reader answers from
    meta: dict[str, Any]  # model_key, dim, built_at, … as the build recorded them
    count: int  # passages

    @abstractmethod
    def dense(self, qvecs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest passages of each query vector: (similarities, ids), each (queries, n); id -1
        pads when fewer exist."""

    @abstractmethod
    def lexical(self, terms: Sequence[str], limit: int) -> dict[int, float]:
        """Passage id → BM25 of the best `limit` passages holding any of the analyzed `terms`."""

    @abstractmethod
    def document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        """Passages holding each term (0 for unknown terms)."""

    @abstractmethod
    def rows(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        """The passages of `ids` that exist in this state."""

    @abstractmethod
    def article_of(self, ids: Sequence[int]) -> dict[int, str]:
        """Passage id → its article id, for the ids that name a passage (no text, no vectors)."""

    @abstractmethod
    def cosines(self, ids: Sequence[int], qvec: np.ndarray) -> dict[int, float]:
        """Passage id → cosine with `qvec`, for the ids that name a passage."""

    @abstractmethod
    def neighbours(self, article_id: str, ordinal: int, before: int, after: int) -> list[int]:
        """Ids of the article's passages from `ordinal - before` to `ordinal + after`, in order."""

    @abstractmethod
    def articles(self) -> list[dict[str, Any]]:
        """Every article: id, path, title, source, author, date, url, lang, passages; by date, id."""

    @abstractmethod
    def vocabulary(self) -> list[str]:
        """Every indexed term (for the English → Chinese pinyin table)."""

    @abstractmethod
    def copies(self, ids: Sequence[int]) -> list[CopyRow]:
        """Every member of the copy groups of `ids`, and those of `ids` without a group whose
        article has aliases (group 0)."""

    @abstractmethod
    def duplicate_groups(self) -> int:
        """Copy groups in the index."""

    @abstractmethod
    def sample_texts(self, limit: int) -> list[str]:
        """Up to `limit` passage texts spread over the index."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections and files."""

    @functools.cached_property
    def script(self) -> str:
        """Whether the passages are mostly simplified or traditional Chinese (`index.text.script_of`),
        from an evenly spread sample of 200."""
        return script_of(self.sample_texts(200))


class IndexBackend(ABC):
    """Where the index lives: opens readers, builds, checks and describes it."""

    name: ClassVar[str]

    def __init__(self, config: Config) -> None:
        self.config = config

    @abstractmethod
    def stamp(self) -> Hashable:
        """Cheap token that changes when a newer build is live (checked between questions);
        None when nothing was ever built."""

    @abstractmethod
    def open_reader(self) -> IndexReader:
        """The live state; raises `index.publish.IndexMissingError` when nothing was built."""

    @abstractmethod
    def build(
        self,
        *,
        full: bool = False,
        embedder: Embedder | None = None,
        progress: Progress | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> BuildReport:
        """Bring the index up to date with the corpus (incremental unless `full`)."""

    def take_over(self) -> str:
        """Make this index directory the one writer of a store other directories could share
        (Milvus collections); returns one line saying what changed."""
        return f"nothing to take over: the {self.name} backend keeps its whole index in {self.config.index.dir}"

    @abstractmethod
    def check(self) -> tuple[str, list[str]]:
        """(version, problems) of the live index; no problems means consistent."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections (for Milvus Lite: the file lock, once no reader holds it)."""

    def __enter__(self) -> IndexBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The backend, where it stores (never a secret) and the live version's metadata."""


def require_model(meta: dict[str, Any], config: Config, where: str) -> None:
    """Raise `RebuildRequiredError` when the index was embedded with another model than the config names."""
    from index.build import model_key

    built_with = meta.get("model_key")
    if built_with != model_key(config):
        built_name = str(built_with or "?").split("|")[0]
        raise RebuildRequiredError(
            f"the index in {where} was built with model {built_name!r} but the config names "
            f"{config.model.name!r}: rebuild it with `python -m index build`",
            _model_of(meta, config),
        )


def _model_of(meta: dict[str, Any], config: Config) -> ModelConfig | None:
    """The model config the index's recorded metadata names (None when it names none)."""
    name, key = meta.get("model"), meta.get("model_key")
    if not isinstance(name, str) or not isinstance(key, str) or not key.startswith(f"{name}|"):
        return None
    prompt = meta.get("query_prompt")
    return replace(
        config.model,
        name=name,
        document_prompt=key[len(name) + 1 :],
        query_prompt=prompt if isinstance(prompt, str) else "",
    )
