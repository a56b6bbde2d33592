"""The command lines, run as subprocesses: `python -m retrieval` (JSON, batch mode, --k) and
`python -m index build|check|info`, over an index built with the fake embedder."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest

from settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # every test here starts Python subprocesses

QUESTION = "断卡行动打掉了多少个犯罪团伙？"
FACT = "170余个"
RESULT_KEYS = {
    "rank", "score", "text", "title", "article_id", "section", "paragraph", "citation", "url", "date",
    "highlight_start", "highlight_end",
}  # fmt: skip


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "QA_INDEX_DIR"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
    )


def json_lines(result: subprocess.CompletedProcess[bytes]) -> list[dict]:
    """JSON Lines are separated by "\\n" only (U+2028 may legally appear inside a string)."""
    text = result.stdout.decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text[:-1].split("\n")]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """An index of the default corpus built by the CLI, and a config file pointing at it."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "config.toml"
    config.write_text(
        f'[corpus]\ndir = "{PROJECT_ROOT / "corpus" / "articles"}"\n'
        f'[index]\ndir = "{tmp / "index"}"\n'
        '[model]\nname = "test-hash"\n'
        "[retrieval]\nmax_k = 5\n",
        encoding="utf-8",
    )
    result = run_cli("index", "build", "--config", str(config))
    assert result.returncode == 0, result.stderr.decode()
    return {"config": str(config), "index": str(tmp / "index")}


def ask(cli_env, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = run_cli("retrieval", "--config", cli_env["config"], *args, stdin=stdin)
    assert "Traceback" not in result.stderr.decode("utf-8", "replace")
    return result


def test_index_build_cli_reports_progress_and_summary(cli_env, tmp_path):
    result = run_cli("index", "build", "--config", cli_env["config"], "--index", str(tmp_path / "fresh"))
    assert result.returncode == 0
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert stdout.startswith("articles: 1 added, 0 updated, 0 removed, 0 unchanged, 0 skipped;")
    assert "published v" in stdout
    progress = [line for line in stderr.splitlines() if line.startswith("embedding ")]
    assert progress and progress[-1].split()[1].split("/")[0] == progress[-1].split()[1].split("/")[1]

    again = run_cli("index", "build", "--config", cli_env["config"], "--index", str(tmp_path / "fresh"))
    assert again.returncode == 0 and "nothing changed, live index kept" in again.stdout.decode()
    assert "embedding" not in again.stderr.decode()  # no model work at all


def test_json_answer_has_the_documented_shape(cli_env):
    result = ask(cli_env, "--json", QUESTION)
    assert result.returncode == 0
    [data] = json_lines(result)
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


def test_readable_answer_quotes_and_cites(cli_env):
    result = ask(cli_env, QUESTION)
    assert result.returncode == 0
    out = result.stdout.decode()
    assert FACT in out and "《区块链日报》2021-06-10" in out and "¶" in out


@pytest.mark.parametrize(("k", "expected"), [("-3", 1), ("100000000000000000000", 5)])
def test_k_is_clamped_to_1_and_max_k(cli_env, k, expected):
    result = ask(cli_env, "--json", "--k", k, QUESTION)
    assert result.returncode == 0
    [data] = json_lines(result)
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


def test_batch_mode_answers_every_line_and_survives_hostile_input(cli_env):
    lines = [*HOSTILE_LINES, QUESTION.encode()]
    result = ask(cli_env, stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 0, result.stderr.decode()
    answers = json_lines(result)
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
    check = run_cli("index", "check", "--config", cli_env["config"])
    assert check.returncode == 0 and check.stdout.decode().rstrip().endswith(": ok")


def test_batch_mode_without_trailing_newline_and_with_k(cli_env):
    result = ask(cli_env, "--k", "0", stdin=f"{QUESTION}\n\n{QUESTION}".encode())
    assert result.returncode == 0
    answers = json_lines(result)
    assert [len(a["results"]) for a in answers] == [1, 0, 1]


def test_index_check_and_info(cli_env):
    check = run_cli("index", "check", "--config", cli_env["config"])
    assert check.returncode == 0
    assert check.stdout.decode().strip().endswith(": ok") and check.stderr == b""
    info = run_cli("index", "info", "--config", cli_env["config"])
    assert info.returncode == 0
    data = json.loads(info.stdout)
    assert data["meta"]["model"] == "test-hash"
    assert [a["id"] for a in data["articles"]] == ["blockchain-daily-2021-06-10-crackdown.md"]
    assert data["articles"][0]["passages"] == data["meta"]["passages"]


def test_model_mismatch_is_one_clear_error(cli_env):
    # The committed config names the real model; the index was built with test-hash.
    result = run_cli("retrieval", "--index", cli_env["index"], "--json", QUESTION)
    assert result.returncode == 2 and result.stdout == b""
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "'test-hash'" in stderr and "'usem3'" in stderr and "python -m index build" in stderr


def test_question_argument_with_invalid_utf8_gives_valid_json(cli_env):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval",
            "--config",
            cli_env["config"],
            "--json",
            os.fsdecode(b"\xff\xfe" + QUESTION.encode()),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=180,
    )
    assert result.returncode == 0
    [data] = json_lines(result)
    assert FACT in data["results"][0]["text"]


def test_batch_mode_keeps_order_over_many_batches(cli_env):
    """More lines than one batch (`retrieval.__main__.BATCH`), piped at once: one answer per line, in
    input order, each the same as when the question is asked alone."""
    from retrieval.__main__ import BATCH

    questions = [QUESTION, "青海省禁止向挖矿项目提供什么？", "", "Did Huobi reply?", "断卡\r"]
    lines = [f"{i} {q}" if q else q for i, q in ((i, questions[i % len(questions)]) for i in range(2 * BATCH + 5))]
    result = ask(cli_env, "--json", stdin=("\n".join(lines)).encode())  # no trailing newline
    assert result.returncode == 0, result.stderr.decode()
    answers = json_lines(result)
    assert [a["question"] for a in answers] == [line.rstrip("\r\n") for line in lines]
    for i in (0, 1, BATCH + 3):
        [alone] = json_lines(ask(cli_env, "--json", lines[i]))
        assert answers[i] == alone


def test_batch_mode_answers_a_line_before_the_next_arrives(cli_env):
    """Interactive use: a line (even one written in pieces) is answered while stdin stays open, so
    the CLI never waits for more input to fill a batch."""
    env = {k: v for k, v in os.environ.items() if k != "QA_INDEX_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval", "--config", cli_env["config"]],
        cwd=PROJECT_ROOT,
        env=env,
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
