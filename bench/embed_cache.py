"""An embedder that remembers its vectors on disk, for the fitters' repeated runs.

`bench/fit_decide.py` builds six indexes of the CMRC paragraphs and asks thousands of
questions; `bench/fit_fusion.py` one index and a thousand questions. On this machine the model
spends most of that time, and it computes the same vectors every run. With `--cache FILE` they
embed each (kind, text) once: a rerun after a change of ranking or decision policy costs only
the retrieval itself. The file is an .npz of the texts and their vectors, keyed by the model
name (another model never reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index.embedder import Embedder


class CachedEmbedder:
    """`inner`'s vectors, computed once per distinct text and kind (query or document)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self._vectors: dict[tuple[str, str], np.ndarray] = {}
        self._added = 0
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["model"]) == inner.name:
                    for kind, text, vector in zip(data["kinds"], data["texts"], data["vectors"], strict=True):
                        self._vectors[(str(kind), str(text))] = vector

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self._vectors))
        if missing:
            encode = self.inner.encode_queries if kind == "q" else self.inner.encode_documents
            for text, vector in zip(missing, encode(missing), strict=True):
                self._vectors[(kind, text)] = vector
            self._added += len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[(kind, t)] for t in texts])

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "d")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "q")

    def save(self) -> None:
        """Write the vectors back when this run computed new ones."""
        if not self._added:
            return
        keys = list(self._vectors)
        np.savez(
            self.path,
            model=np.array(self.inner.name),
            kinds=np.array([k for k, _ in keys]),
            texts=np.array([t for _, t in keys]),
            vectors=np.stack([self._vectors[k] for k in keys]),
        )
        self._added = 0
