"""The fake embedder the tests build their indexes with, registered as `[model] name = "test-hash"`.

It lives here, not in `index/`: a production config cannot choose it. `conftest.py` registers it
in the test process and `launch.py` in the processes the tests start.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

import numpy as np

from index.embedder import normalise_rows, register_embedder

HASH_MODEL = "test-hash"


@functools.lru_cache(maxsize=1 << 18)
def _gram_hash(gram: str) -> tuple[int, float]:
    """A gram's hash (its bucket modulo the dimension) and sign; grams repeat, so kept."""
    digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), 1.0 if digest[4] & 1 else -1.0


class HashEmbedder:
    """Deterministic character n-gram hashing: a fake model for fast tests.

    Texts sharing characters get similar vectors, which is enough to exercise the whole
    pipeline (build, FAISS, fusion) without loading a real model.
    """

    name = HASH_MODEL

    def __init__(self, dim: int = 64) -> None:
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self._dim, dtype=np.float32)
        chars = re.sub(r"\s+", "", text.lower())
        grams = list(chars) + [chars[i : i + 2] for i in range(len(chars) - 1)]
        if grams:
            hashes, signs = zip(*map(_gram_hash, grams), strict=True)
            np.add.at(vec, np.array(hashes) % self._dim, np.array(signs, dtype=np.float32))
        return vec

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return normalise_rows(np.stack([self._vector(t) for t in texts]))

    encode_queries = encode_documents


def register_fakes() -> None:
    """Make `[model] name = "test-hash"` load `HashEmbedder` in this process."""
    register_embedder(HASH_MODEL, lambda config: HashEmbedder())
