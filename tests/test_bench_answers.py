"""bench/answers.py: two dumps of answers compared names what differs."""

from __future__ import annotations

import json
from pathlib import Path

from bench.answers import compare


def _dump(path: Path, highlight: tuple[int, int], confidence: str) -> Path:
    text = "截至9日15时，共打掉违法犯罪团伙170余个。全国“断卡”行动开展第五轮集中收网。"
    hit = {"passage_id": 7, "text": text, "highlight_start": highlight[0], "highlight_end": highlight[1]}
    same = hit | {"highlight_start": 0, "highlight_end": 22}
    answer = {"answered": True, "confidence": confidence, "results": [hit], "features": {"dense": 0.5}}
    rows = [
        {"set": "seed-dev", "i": 0, "q": "断卡行动打掉了多少个犯罪团伙？", "answer": answer},
        {"set": "seed-dev", "i": 1, "q": "同一个问题", "answer": answer | {"confidence": "sure", "results": [same]}},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_compare_counts_what_changed_per_set(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _dump(tmp_path / "before.jsonl", (0, 22), "sure")
    after = _dump(tmp_path / "after.jsonl", (22, 41), "unsure")
    report = compare(before, after, show=5)
    assert report["changed"]["seed-dev"] == {"grade": 1, "highlight": 1, "same": 1}
    printed = capsys.readouterr().out
    assert "seed-dev" in printed and "grade, highlight" in printed
