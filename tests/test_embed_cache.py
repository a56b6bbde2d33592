"""bench/embed_cache.py: the fitters' on-disk vector cache returns the model's own vectors,
keeps them across runs, and never serves one model's vectors to another."""

from __future__ import annotations

import numpy as np
from fakes import HashEmbedder

from bench.embed_cache import CachedEmbedder


def test_cached_vectors_are_the_models_and_survive_a_restart(tmp_path):
    path = tmp_path / "vectors.npz"
    model = HashEmbedder()
    texts = ["比特大陆将于6月19日在成都举办会议。", "Who is Cai Kailong?", "比特大陆将于6月19日在成都举办会议。"]
    cache = CachedEmbedder(model, path)
    assert np.array_equal(cache.encode_documents(texts), model.encode_documents(texts))
    assert np.array_equal(cache.encode_queries(texts[:1]), model.encode_queries(texts[:1]))
    assert cache.encode_queries([]).shape == (0, model.dim)
    cache.save()
    reopened = CachedEmbedder(HashEmbedder(), path)
    assert reopened.name == model.name and reopened.dim == model.dim
    assert np.array_equal(reopened.encode_documents(texts), model.encode_documents(texts))


def test_a_cache_of_another_model_is_not_read(tmp_path):
    path = tmp_path / "vectors.npz"
    cache = CachedEmbedder(HashEmbedder(dim=64), path)
    cache.encode_documents(["挖矿"])
    cache.save()

    class OtherModel(HashEmbedder):
        name = "other"

    other = OtherModel(dim=32)  # were the cache read, its 64-dimensional vectors would come back
    vectors = CachedEmbedder(other, path).encode_documents(["挖矿"])
    assert vectors.shape == (1, 32) and np.array_equal(vectors, other.encode_documents(["挖矿"]))
