"""ONNX Runtime sessions for ``USEm3Model``'s two stages (the fast path on CPU).

Why: on a question at a time the model is a dozen small GEMMs (one to a few dozen rows)
over ~9 MB of weights. torch's MKL runs them at ~5 GB/s on an AMD EPYC (its kernels for
such shapes are slow off Intel); ONNX Runtime's MLAS runs the same shapes ~2.5x faster,
and batch shapes at least as fast. The model's numpy planning stays in ``usem3_torch``: the
graphs take its index arrays as inputs.

The two graphs are exported from torch modules that compute exactly what the torch path
computes, in ops ONNX has (the torch path's ``embedding_bag`` windows become gathers from a
table with one zero row appended, summed over the window; the per-text token sum is a
product with a pooling matrix), so the vectors agree up to float rounding order
(cosine >= 0.99999, tested):

* ``id_rows``: distinct-id embeddings (U, 512) -> projection, layernorm, conv-1 slot
  products (U, 13 * 256), as ``USEm3Model._id_rows``;
* ``tokens``: everything after, per token chunk, as ``USEm3Model._token_stage``, with the
  output projection and the head's first GEMM folded into one matrix (linear in between).

Export happens on the first forward pass, never at import: the ``.onnx`` files go to
``cache_dir`` (default ``$XDG_CACHE_HOME/usem3-onnx`` or ``~/.cache/usem3-onnx``) under a
key hashing the weights file, the model's source and the torch version, so a changed model
or exporter never reads a stale graph. An unwritable cache dir means exporting in memory
for this process; a cached file ORT cannot load is exported again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

_OPSET = 18
_GRAPHS = ("id_rows", "tokens")


def default_cache_dir() -> Path:
    """Where exported graphs live unless the model is given a ``cache_dir``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "usem3-onnx"


def graph_key(weights_path: str) -> str:
    """Hash of what an exported graph depends on: weights, this code, the exporter."""
    import torch

    from index import usem3_torch

    digest = hashlib.sha256()
    with open(weights_path, "rb") as f:
        digest.update(hashlib.file_digest(f, "sha256").digest())
    for source in (__file__, usem3_torch.__file__):
        digest.update(Path(source).read_bytes())
    digest.update(f"torch {torch.__version__} opset {_OPSET}".encode())
    return digest.hexdigest()[:24]


def _export_modules(model: Any) -> dict[str, tuple[torch.nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]]:
    """The two export-friendly torch modules with example inputs and dynamic axes."""
    import torch
    import torch.nn.functional as F

    from index.usem3_torch import _CNN_DIM, _FEAT_DIM, _HEAD_DIM, _ID_ROW, _ORDERS, _SLOT_BASE, _SLOTS, EMBEDDING_DIM

    blocks = _ID_ROW // _CNN_DIM
    eps = model.eps

    class IdRows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name in ("proj_w", "proj_b", "ln_g_proj", "ln_b_proj", *(f"w1_{n}" for n, _ in _ORDERS)):
                self.register_buffer(name, getattr(model, name).clone())

        def forward(self, emb: torch.Tensor) -> torch.Tensor:
            x = torch.addmm(self.proj_b, emb, self.proj_w)
            x = F.layer_norm(x, (3 * _CNN_DIM,), self.ln_g_proj, self.ln_b_proj, eps)
            parts = [x]
            for b, (n, _) in enumerate(_ORDERS):
                parts.append(x[:, b * _CNN_DIM : (b + 1) * _CNN_DIM] @ getattr(self, f"w1_{n}"))
            return torch.cat(parts, dim=1)

    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name in ("b1", "b2", "d1", "d2_p3", "d3", *(f"w2_{n}" for n, _ in _ORDERS)):
                self.register_buffer(name, getattr(model, name).clone())
            # mean @ d0_p1 with mean = sums @ cnn_w_g + len * cnn_bias: one GEMM
            w, d0 = model.cnn_w_g.double(), model.d0_p1.double()
            self.register_buffer("pool_d0_p1", (w @ d0).float())
            self.register_buffer("bias_d0_p1", (model.cnn_bias.double() @ d0).float())
            self.register_buffer("zero", torch.zeros((1, _CNN_DIM)))

        def forward(
            self,
            emb: torch.Tensor,
            rows: torch.Tensor,
            inv: torch.Tensor,
            gather1: torch.Tensor,
            gather2: torch.Tensor,
            pool: torch.Tensor,
            root_len: torch.Tensor,
        ) -> torch.Tensor:
            # rows as 256-wide blocks (x per branch, then conv-1 slot products), zero block last
            table1 = torch.cat([rows.reshape(-1, _CNN_DIM), self.zero])
            g = table1[gather1]
            feats = [emb[inv]]
            for b, (n, _) in enumerate(_ORDERS):
                s = blocks - _SLOTS + _SLOT_BASE[b]
                h = (g[:, s : s + n].sum(dim=1) + self.b1[b]).relu() + g[:, b]
                table2 = (torch.cat([h, self.zero]) @ getattr(self, f"w2_{n}")).reshape(-1, _CNN_DIM)
                c2 = table2[gather2[:, _SLOT_BASE[b] : _SLOT_BASE[b] + n]].sum(dim=1)
                feats.append((c2 + self.b2[b]).relu() + h)
            f = torch.cat(feats, dim=1)
            f = F.layer_norm(f, (_FEAT_DIM,), None, None, eps)
            y = torch.addmm(root_len * self.bias_d0_p1, pool @ f, self.pool_d0_p1)
            y0 = y[:, :_HEAD_DIM].relu()
            y1 = (y[:, _HEAD_DIM:] + y0 @ self.d1).relu()
            y = y1 @ self.d2_p3
            y2 = y[:, :EMBEDDING_DIM].relu()
            z = (y[:, EMBEDDING_DIM:] + y2 @ self.d3).tanh()
            return z / (z * z).sum(dim=1, keepdim=True).clamp(min=eps).sqrt()

    u, t, s = 4, 6, 2
    long = torch.int64
    token_inputs = (
        torch.zeros((u, EMBEDDING_DIM)),
        torch.zeros((u, _ID_ROW)),
        torch.zeros(t, dtype=long),
        torch.zeros((t, blocks), dtype=long),
        torch.zeros((t, _SLOTS), dtype=long),
        torch.zeros((s, t)),
        torch.ones((s, 1)),
    )
    token_axes = {
        "emb": {0: "u"},
        "rows": {0: "u"},
        "inv": {0: "t"},
        "gather1": {0: "t"},
        "gather2": {0: "t"},
        "pool": {0: "s", 1: "t"},
        "root_len": {0: "s"},
        "out": {0: "s"},
    }
    return {
        "id_rows": (IdRows(), (torch.zeros((u, EMBEDDING_DIM)),), {"emb": {0: "u"}, "out": {0: "u"}}),
        "tokens": (Tokens(), token_inputs, token_axes),
    }


def _export(model: Any) -> dict[str, bytes]:
    import torch

    graphs = {}
    for name, (module, inputs, axes) in _export_modules(model).items():
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                inputs,
                buffer,
                input_names=[k for k in axes if k != "out"],
                output_names=["out"],
                dynamic_axes=axes,
                opset_version=_OPSET,
                dynamo=False,
            )
        graphs[name] = buffer.getvalue()
    return graphs


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the cache from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class OnnxStages:
    """ORT sessions of the two graphs: one single-threaded (questions, small batches) and,
    made on first need, one with ``threads`` intra-op threads (big batches)."""

    def __init__(self, graphs: dict[str, bytes | str], threads: int) -> None:
        self._graphs = graphs
        self.threads = max(1, threads)
        self._sessions: dict[int, dict[str, Any]] = {1: self._open(1)}

    def _open(self, threads: int) -> dict[str, Any]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The arena saves ~0.3 ms of a question's ~2.5 ms; on the batch session it would keep
        # ~150 MB more of a build's big chunks resident, at no speed gain.
        options.enable_cpu_mem_arena = threads == 1
        # idle pool threads sleep instead of spinning on a core other jobs need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return {
            name: ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            for name, graph in self._graphs.items()
        }

    def _session(self, name: str, threads: int) -> Any:
        n = 1 if threads <= 1 else self.threads
        if n not in self._sessions:
            self._sessions[n] = self._open(n)
        return self._sessions[n][name]

    def id_rows(self, emb: np.ndarray, threads: int) -> np.ndarray:
        return self._session("id_rows", threads).run(None, {"emb": emb})[0]

    def tokens(self, feeds: dict[str, np.ndarray], threads: int) -> np.ndarray:
        return self._session("tokens", threads).run(None, feeds)[0]


def load_stages(model: Any, weights_path: str, threads: int, cache_dir: str | os.PathLike[str] | None) -> OnnxStages:
    """The cached graphs of ``model`` (exported and stored on first use); raises when
    onnxruntime is missing or the export fails (the caller falls back to torch)."""
    import onnxruntime  # noqa: F401 (fail before exporting when it is missing)

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = graph_key(weights_path)
    paths = {name: folder / f"usem3-{name}-{key}.onnx" for name in _GRAPHS}
    if all(p.is_file() for p in paths.values()):
        try:
            return OnnxStages({name: str(p) for name, p in paths.items()}, threads)
        except Exception as exc:  # a truncated or foreign file: export again
            log.warning("cached ONNX graph unusable (%s); exporting again", exc)
    graphs = _export(model)
    try:
        for name, data in graphs.items():
            _write_atomically(paths[name], data)
    except OSError as exc:
        log.warning("cannot cache the ONNX graphs in %s (%s); exported for this process only", folder, exc)
    return OnnxStages(dict(graphs), threads)
