"""What the test modules share: paths and questions, test configs, running an entry point (in
this process or as a process), JSON lines, the syndicated corpus, reading the bot's replies.

One home: test modules import this module (and the fakes), never each other.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fakes import HASH_MODEL

from loopback.fake_telegram import Call, Payloads, parse_html
from settings import PROJECT_ROOT, Config, CorpusConfig, IndexConfig, ModelConfig, load_config

# The verbatim source article (as received: broken paragraphs, no front matter) and the
# benchmark data; all inside the repository, nothing is read from beside it.
SOURCE_ARTICLE = PROJECT_ROOT / "tests" / "data" / "blockchain-daily-2021-06-10-crackdown.txt"
CMRC = PROJECT_ROOT / "bench" / "data" / "cmrc2018_trial.json"
DEFAULT_CORPUS = PROJECT_ROOT / "corpus" / "articles"
ORIGINAL = DEFAULT_CORPUS / "blockchain-daily-2021-06-10-crackdown.md"
LAUNCHER = PROJECT_ROOT / "tests" / "launch.py"

# The question most tests ask of the default corpus, and the fact its answer quotes.
QUESTION = "断卡行动打掉了多少个犯罪团伙？"
FACT = "170余个"


# ---------------------------------------------------------------- configs
def make_config(corpus_dir: Path, index_dir: Path, model: str = HASH_MODEL) -> Config:
    """A config like the committed one, pointed at temporary directories (the bot's state in
    `state/` beside the index)."""
    base = load_config()
    return replace(
        base,
        corpus=replace(base.corpus, dir=corpus_dir) if base.corpus else CorpusConfig(dir=corpus_dir),
        index=replace(base.index, dir=index_dir) if base.index else IndexConfig(dir=index_dir),
        model=replace(base.model, name=model) if base.model else ModelConfig(name=model),
        telegram=replace(base.telegram, state_dir=index_dir.parent / "state"),
    )


def write_config(
    path: Path,
    *,
    corpus: Path,
    index: Path,
    telegram: dict[str, Any] | None = None,
    index_settings: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Path:
    """A config.toml for tests: the fake embedder, temporary corpus and index, the bot's state in
    `state/` beside the file (`index_settings`: more `[index]` keys, e.g. the backend; `sections`:
    other tables, e.g. `retrieval={"max_k": 5}`)."""
    tables = {
        "model": {"name": HASH_MODEL},
        "index": {"dir": str(index), **(index_settings or {})},
        "corpus": {"dir": str(corpus)},
        "telegram": {"state_dir": str(path.parent / "state"), **(telegram or {})},
        **sections,
    }
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return write_toml(path, "\n".join(lines) + "\n")


def copy_index(config: Config, root: Path) -> Config:
    """A writable copy of `config`'s corpus and index under `root`, the bot's state beside them:
    for a test that changes what a shared fixture built."""
    shutil.copytree(config.corpus.dir, root / "corpus")
    shutil.copytree(config.index.dir, root / "index")
    return replace(
        config,
        corpus=replace(config.corpus, dir=root / "corpus"),
        index=replace(config.index, dir=root / "index"),
        telegram=replace(config.telegram, state_dir=root / "state"),
    )


def write_toml(path: Path, text: str) -> Path:
    """A config file holding exactly `text` (for the loader's own tests and broken files)."""
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- entry points
@dataclass(frozen=True)
class Exit:
    """What an entry point left: exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    def one_clear_error(self, *fragments: str) -> str:
        """A user error: exit status 2, nothing on stdout, one line on stderr holding `fragments`."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert self.code == 2 and self.out == "", (self.code, self.out)
        assert "Traceback" not in self.err and len(lines) == 1, self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def launch_argv(*args: str) -> list[str]:
    """The argv of `python <args>` with the fake embedder registered (`tests/launch.py`), for
    the tests that need a real process: `launch_argv("-m", "index", "build", ...)`."""
    return [sys.executable, str(LAUNCHER), *args]


def json_lines(text: str) -> list[dict[str, Any]]:
    """JSON Lines are separated by "\\n" only (U+2028 may legally appear inside a string)."""
    assert text.endswith("\n")
    return [json.loads(line) for line in text[:-1].split("\n")]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------- a story told by several outlets
def article(meta: dict[str, str], body: str) -> str:
    front = "".join(f"{key}: {value}\n" for key, value in meta.items())
    return f"---\n{front}---\n\n{body}\n"


def original_body() -> str:
    return ORIGINAL.read_text(encoding="utf-8").split("---", 2)[2].strip()


def edited_copy(body: str) -> str:
    """A 转载 of the article: a byline in front, commas changed, a sentence added to the
    paragraph with the answer, the last paragraph dropped."""
    paragraphs = [p for p in body.split("\n\n") if p.strip()][:-1]
    edited = []
    for p in paragraphs:
        if FACT in p:
            p = p.replace("，", ",", 2) + "此事引发业内广泛关注。"
        edited.append(p)
    edited[0] = "（新浪财经 记者 王磊）" + edited[0]
    return "\n\n".join(edited)


def write_syndicated(corpus: Path) -> None:
    """The article (区块链日报, 06-10), an edited copy (新浪财经, 06-11), an exact copy under
    another URL (金色财经, 06-12, listed first by name) and an unrelated article."""
    body = original_body()
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "z-daily.md").write_text(
        article({"title": "新疆、青海叫停虚拟货币挖矿", "source": "区块链日报", "date": "2021-06-10",
                 "url": "https://daily.example.cn/a"}, body), encoding="utf-8")  # fmt: skip
    (corpus / "sina.md").write_text(
        article({"title": "新疆青海叫停挖矿", "source": "新浪财经", "date": "2021-06-11",
                 "url": "https://sina.example.cn/b"}, edited_copy(body)), encoding="utf-8")  # fmt: skip
    (corpus / "a-jinse.md").write_text(
        article({"title": "新疆、青海叫停虚拟货币挖矿", "source": "金色财经", "date": "2021-06-12",
                 "url": "https://jinse.example.cn/c"}, body), encoding="utf-8")  # fmt: skip
    (corpus / "other.md").write_text(
        article({"title": "天气", "source": "澎湃新闻", "date": "2021-06-01"},
                "今年夏天江南地区的梅雨季比往年来得更早，气象部门提醒市民注意防范强降雨带来的城市内涝。"),
        encoding="utf-8",
    )  # fmt: skip


# ---------------------------------------------------------------- the bot's replies
def assert_valid_answer_html(call: Call) -> str:
    """The text is valid Telegram HTML within the limit; returns the text after entity parsing."""
    assert call.params["parse_mode"] == "HTML"
    parsed = parse_html(call.params["text"])
    assert parsed.length <= 4096
    assert set(parsed.tags) <= {"b", "a", "blockquote"}
    return parsed.text


def buttons(call: Call) -> list[dict[str, str]]:
    markup = call.params.get("reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]


def keys(call: Call) -> dict[str, str]:
    """Button label -> callback data."""
    return {b["text"]: b["callback_data"] for b in buttons(call)}


def shown(call: Call, p: Payloads) -> dict[str, Any]:
    """The message as the client holds it (text and keyboard), for button presses."""
    message = p.bot_message(
        call.result["text"], chat_id=int(call.params["chat_id"]), message_id=call.result["message_id"]
    )
    return {**message, "reply_markup": call.params["reply_markup"]}


def chat_texts(calls: list[Call], chat_id: int) -> list[str]:
    """What the chat saw, in order: every message sent or edited, as plain text."""
    return [
        parse_html(c.params["text"]).text
        for c in calls
        if c.ok and c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == str(chat_id)
    ]
