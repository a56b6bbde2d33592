"""Score fusion: put BM25 and cosine on one scale and combine them linearly.

Raw BM25 is unbounded and cosine lives in [-1, 1]; normalising each over the candidate
set first (z-score or min-max) makes the `dense_weight` mean the same thing for every
question. A side with no spread (e.g. no query term matched, as for an English question
over Chinese text) contributes nothing, so the other side decides alone.
"""

from __future__ import annotations

import numpy as np


def normalise(scores: np.ndarray, method: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    if method == "minmax":
        low, high = float(scores.min()), float(scores.max())
        return np.zeros_like(scores) if high - low < 1e-12 else (scores - low) / (high - low)
    if method == "zscore":
        std = float(scores.std())
        return np.zeros_like(scores) if std < 1e-12 else (scores - scores.mean()) / std
    raise ValueError(f"unknown normalisation {method!r}")


def fuse(dense: np.ndarray, lexical: np.ndarray, dense_weight: float, method: str = "zscore") -> np.ndarray:
    """Fused scores for aligned candidate arrays (higher is better)."""
    return dense_weight * normalise(dense, method) + (1.0 - dense_weight) * normalise(lexical, method)
