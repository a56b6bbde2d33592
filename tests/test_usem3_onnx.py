"""The ONNX Runtime path of USE-m3 (index.usem3_onnx) against the torch path: the same
vectors (cosine >= 0.99999, so indexes built with either stay valid), exported on the first
forward pass only, cached and reused, rebuilt when broken, torch when onnxruntime is missing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import CMRC, SOURCE_ARTICLE, cosines

from settings import PROJECT_ROOT

EDGE_CASES = [
    "",
    "   ",
    "?",
    "Hello, world!",
    "emoji 😀🎉👍🏽 测试 🇨🇳",
    "ＡＢＣ１２３，全角字符！",
    "！！！！！！！！",
    "\t换行\n和制表符\r\n",
]


def _texts() -> list[str]:
    """~300 zh-Hans, zh-Hant and English texts, questions to 5,000-character documents."""
    import opencc

    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    contexts = [p["context"] for a in data for p in a["paragraphs"]]
    questions = [q["question"] for a in data for p in a["paragraphs"] for q in p["qas"]]
    rng = random.Random(0)
    zh = rng.sample(contexts, 40) + rng.sample(questions, 100)
    hant = [opencc.OpenCC("s2t").convert(t) for t in rng.sample(contexts, 20) + rng.sample(questions, 40)]
    english = [
        row["q"]
        for name in ("article-heldout.jsonl", "article-answerable.jsonl", "near-topic.jsonl")
        for row in map(json.loads, (PROJECT_ROOT / "bench" / "data" / name).read_text(encoding="utf-8").splitlines())
        if row.get("lang") == "en"
    ]
    article = SOURCE_ARTICLE.read_text(encoding="utf-8")
    long_texts = [article, "".join(contexts[:10])[:5000], " ".join(english) * 3]
    return zh + hant + english + long_texts + EDGE_CASES


def test_importing_exports_and_loads_nothing() -> None:
    code = (
        "import sys, index.usem3_torch, index.usem3_onnx\n"
        "print(sorted({'torch', 'numpy', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_unknown_runtime_is_refused() -> None:
    from index.usem3_torch import load_usem3_model

    with pytest.raises(ValueError, match="runtime must be"):
        load_usem3_model(runtime="tensorflow")


@pytest.fixture(scope="module")
def torch_model() -> Any:
    from index.usem3_torch import load_usem3_model

    return load_usem3_model(runtime="torch")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


@pytest.mark.slow
def test_onnx_vectors_match_torch(torch_model: Any, texts: list[str], tmp_path: Path) -> None:
    """Batched (one session thread and two, with several token and dedup chunks) and one
    text at a time, with the id cache cold and warm."""
    from index.usem3_torch import load_usem3_model

    expected = torch_model.encode(texts)
    onnx = load_usem3_model(threads=2, runtime="onnx", onnx_cache=str(tmp_path))
    chunked = load_usem3_model(threads=1, token_budget=64, dedup_budget=300, runtime="onnx", onnx_cache=str(tmp_path))
    results = {
        "batched": onnx.encode(texts),
        "one at a time": np.stack([onnx.encode([t])[0] for t in texts]),
        "small chunks": chunked.encode(texts),
    }
    assert onnx.runtime_used == chunked.runtime_used == "onnx"
    assert len(torch_model.tokenize(texts)["input_ids"]) > 2 * 2048  # so the batch ran on two threads
    assert sorted(onnx._onnx._sessions) == [1, 2]
    for label, vectors in results.items():
        assert vectors.shape == (len(texts), 512)
        cos = cosines(vectors, expected)
        assert cos.min() >= 0.99999, (label, texts[int(cos.argmin())][:80], float(cos.min()))
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_graphs_are_exported_on_first_use_then_reused(torch_model: Any, tmp_path: Path) -> None:
    from index.usem3_torch import load_usem3_model

    texts = ["比特币挖矿被禁止了吗？", "Was crypto mining banned?"]
    first = load_usem3_model(runtime="onnx", onnx_cache=str(tmp_path))
    assert list(tmp_path.iterdir()) == [] and first.runtime_used is None  # nothing before a forward pass
    first.encode(texts)
    graphs = sorted(tmp_path.glob("*.onnx"))
    assert [p.name.split("-")[1] for p in graphs] == ["id_rows", "tokens"]
    stamps = {p: p.stat().st_mtime_ns for p in graphs}

    second = load_usem3_model(runtime="onnx", onnx_cache=str(tmp_path))
    vectors = second.encode(texts)
    assert second.runtime_used == "onnx"
    assert {p: p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*.onnx"))} == stamps  # read, not re-exported
    assert cosines(vectors, torch_model.encode(texts)).min() >= 0.99999


@pytest.mark.slow
def test_a_broken_cached_graph_is_exported_again(
    torch_model: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from index.usem3_torch import load_usem3_model

    load_usem3_model(runtime="onnx", onnx_cache=str(tmp_path)).encode(["x"])
    tokens = next(tmp_path.glob("*tokens*.onnx"))
    good = tokens.read_bytes()
    tokens.write_bytes(good[: len(good) // 3])
    model = load_usem3_model(runtime="onnx", onnx_cache=str(tmp_path))
    vectors = model.encode(["比特币挖矿被禁止了吗？"])
    assert model.runtime_used == "onnx"
    assert "exporting again" in caplog.text
    assert tokens.stat().st_size == len(good)
    assert cosines(vectors, torch_model.encode(["比特币挖矿被禁止了吗？"])).min() >= 0.99999


@pytest.mark.slow
def test_unwritable_cache_dir_exports_for_the_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from index.usem3_torch import load_usem3_model

    (tmp_path / "a-file").write_text("not a folder")
    model = load_usem3_model(runtime="onnx", onnx_cache=str(tmp_path / "a-file" / "cache"))
    model.encode(["比特币"])
    assert model.runtime_used == "onnx"
    assert "cannot cache the ONNX graphs" in caplog.text


@pytest.mark.slow
def test_without_onnxruntime_torch_embeds_with_one_log_line(torch_model: Any, tmp_path: Path) -> None:
    texts = ["比特币挖矿被禁止了吗？", "Was crypto mining banned?"]
    code = (
        "import sys, json, numpy as np\n"
        "sys.modules['onnxruntime'] = None  # as if not installed: importing it raises ImportError\n"
        "from index.usem3_torch import load_usem3_model\n"
        f"model = load_usem3_model(runtime='onnx', onnx_cache={str(tmp_path)!r})\n"
        f"np.save({str(tmp_path / 'v.npy')!r}, model.encode({texts!r}))\n"
        "model.encode(['again'])\n"
        "print(model.runtime_used)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "torch"
    warnings = [line for line in done.stderr.splitlines() if "ONNX Runtime path unavailable" in line]
    assert len(warnings) == 1 and "embedding with torch" in warnings[0]
    assert list(tmp_path.glob("*.onnx")) == []
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), torch_model.encode(texts), atol=1e-6)
