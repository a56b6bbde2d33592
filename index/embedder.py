"""Embedders: the bundled USE-multilingual-v3 port, any sentence-transformers model, and any
embedder registered under a name with `register_embedder`.

All of them return L2-normalised float32 rows so FAISS inner product is cosine. Models load
on first use, never at import time, so `--help`, a no-change rebuild or listing sources do
not pay for torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from settings import BUILTIN_MODEL, ModelConfig


class Embedder(Protocol):
    """What the index and the retriever need from a model."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32: what every embedder returns."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class _LazyModel:
    """A model named by `[model]`, loaded on first use, once, thread-safely (`_load`)."""

    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        raise NotImplementedError


class SentenceTransformerEmbedder(_LazyModel):
    """Any sentence-transformers model, with optional query/document prompts (e.g. e5's
    "query: " / "passage: ")."""

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def _load(self) -> Any:
        _set_torch_threads(self._config)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(self._config.name, device="cpu")

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompt = self._config.query_prompt if query else self._config.document_prompt
        encode = self.model.encode_query if query else self.model.encode_document
        kwargs: dict[str, Any] = {
            "batch_size": self._config.batch_size,
            "convert_to_numpy": True,
            "normalize_embeddings": True,
            "show_progress_bar": False,
        }
        if prompt:
            kwargs["prompt"] = prompt
        return normalise_rows(encode(list(texts), **kwargs))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=True)


class USEm3Embedder(_LazyModel):
    """The bundled USE-multilingual-v3 through `USEm3Model` (`index.usem3_torch`; its stages run
    in ONNX Runtime when installed, else torch).

    Same vectors as the sentence-transformers module `USEm3Encoder` (tested), without
    importing sentence-transformers, which alone takes longer than a one-article rebuild
    spends on everything else. The model packs a whole call into token-budget
    micro-batches itself (no padding), so a call is never cut into `batch_size` pieces.
    """

    @property
    def dim(self) -> int:
        from index.usem3_torch import EMBEDDING_DIM

        return EMBEDDING_DIM

    def _load(self) -> Any:
        from index.usem3_torch import load_usem3_model

        # The model sets its own intra-op thread count around every forward pass.
        return load_usem3_model(threads=_set_torch_threads(self._config))

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        return normalise_rows(self.model.encode([prompt + t for t in texts] if prompt else list(texts)))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._config.document_prompt)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._config.query_prompt)


def _set_torch_threads(config: ModelConfig) -> int:
    """[model] threads, or one per core this process may run on (affinity-aware)."""
    import torch

    from index.usem3_torch import default_threads

    threads = config.threads or default_threads()
    torch.set_num_threads(threads)
    return threads


EmbedderFactory = Callable[[ModelConfig], Embedder]
_REGISTERED: dict[str, EmbedderFactory] = {}


def register_embedder(name: str, factory: EmbedderFactory) -> None:
    """Make `[model] name = "<name>"` load `factory(model_config)` in this process.

    The extension point for an embedder that is neither the bundled model nor a
    sentence-transformers name (an in-house model, a remote service, a test fake). A
    registered name takes precedence over both; registering it again replaces the factory.
    """
    _REGISTERED[name] = factory


def loads_on_first_use(embedder: Embedder) -> bool:
    """Whether the first call of `embedder` loads model weights (seconds of imports), which a
    build overlaps with other work."""
    return isinstance(embedder, _LazyModel) and embedder._model is None


def load_embedder(config: ModelConfig) -> Embedder:
    """The embedder a config names: a registered one, the bundled model, or a sentence-transformers model."""
    factory = _REGISTERED.get(config.name)
    if factory is not None:
        return factory(config)
    if config.name == BUILTIN_MODEL:
        return USEm3Embedder(config)
    return SentenceTransformerEmbedder(config)
