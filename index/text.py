"""Text normalisation and word segmentation shared by indexing and querying.

Both sides must segment identically or BM25 finds nothing, so there is exactly one
function for each: `normalize` (NFKC, traditional → simplified, lower case) and `terms`
(jieba search-mode segmentation with punctuation and stop words dropped). The jieba
dictionary and the OpenCC converter load once, on first use, not at import.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from corpus.splitter import split_sentences, strip_span

_lock = threading.Lock()
_WORDLIKE = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)
# Zero-width and other format characters that users paste in and that would split words.
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_SPACES = re.compile(r"\s+")

# Function words and question words: frequent in questions, useless as evidence.
STOP_WORDS = frozenset(
    """
    的 了 是 在 和 与 及 或 也 就 都 而 被 把 对 于 从 向 将 让 给 以 之 其 这 那 这些 那些 这个 那个
    有 没有 会 能 可以 要 还 又 再 很 最 更 并 并且 而且 但 但是 如果 因为 所以 由于 等 等等 着 过 吗 呢 吧 啊 呀
    么 嘛 哦 什么 为什么 为何 怎么 怎么样 怎样 如何 哪 哪里 哪儿 哪些 哪个 哪家 谁 几 多少 多久 何时 什么时候
    是否 是不是 有没有 能不能 会不会 请问 一下 一个 个 一 我 你 他 她 它 我们 你们 他们 她们 它们 自己
    说 表示 认为 现在 目前 后 前 中 上 下 里 时 时候 方面 情况 问题 事 事情 东西 做 进行 发生 接下来 具体
    a an the of to in on at for by with from as is are was were be been being do does did
    what which who whom whose when where why how that this these those it its they them their
    there here and or not no yes can could will would should may might must have has had
    about into than then so such any all some me my we our you your he she his her i
    """.split()
)


@lru_cache(maxsize=4)
def _opencc(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    with _lock:
        jieba.initialize()
    return jieba


def clean(text: str) -> str:
    """Remove invisible characters and control characters; collapse whitespace."""
    text = _INVISIBLE.sub("", text)
    # Printable text holds no control/format characters (category C): skip the per-character
    # pass, the costly part of normalising a sentence.
    if not text.isprintable():
        text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACES.sub(" ", text).strip()


def to_simplified(text: str) -> str:
    return _opencc("t2s").convert(text)


SIMPLIFIED, TRADITIONAL = "hans", "hant"
# Chinese characters (CJK unified ideographs, extensions A-F, compatibility ideographs): the one
# definition every layer uses.
HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")


def script_of(texts: Iterable[str]) -> str:
    """`TRADITIONAL` when over 5 % of the Chinese characters of `texts` change under
    traditional → simplified conversion (about a third do in traditional text, next to none in
    simplified), else `SIMPLIFIED`."""
    han = "".join(ch for text in texts for ch in HAN.findall(text))
    if not han:
        return SIMPLIFIED
    changed = sum(a != b for a, b in zip(han, to_simplified(han), strict=False))
    return TRADITIONAL if changed > 0.05 * len(han) else SIMPLIFIED


def in_script(question: str, script: str) -> str:
    """The question in the script of the articles it is asked of.

    The sentence model scores a question in the passages' own script markedly higher (on the
    CMRC-2018 questions against a traditional copy of its paragraphs, dense hit@1 0.72 → 0.77
    and "not covered" 18 % → 8 % when converted; a cosine of 0.32 → 0.53 on one question of the
    simplified article), and BM25 needs the article's word. Traditional questions for simplified
    articles get OpenCC's Taiwan phrase table too (伺服器 → 服务器); simplified questions for
    traditional articles only the characters (Taiwan and Hong Kong wording differ). A question
    already in the right script is returned unchanged, so the tables never touch it.
    """
    if script == TRADITIONAL:
        return question if to_simplified(question) != question else _opencc("s2t").convert(question)
    if to_simplified(question) == question:
        return question
    return _opencc("tw2sp").convert(question)


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), traditional → simplified, lower case."""
    return to_simplified(unicodedata.normalize("NFKC", clean(text))).lower()


def sentence_spans(text: str) -> list[tuple[int, int, str]]:
    """The sentences a passage's highlight is chosen from: (start, end, normalised text), the
    spans trimmed of surrounding whitespace; the whole text when no sentence is left. They do
    not depend on the question, so the index stores them (`index.store`)."""
    spans = [strip_span(text, s, e) for s, e in split_sentences(text)]
    spans = [(s, e) for s, e in spans if e > s] or [(0, len(text))]
    return [(s, e, normalize(text[s:e])) for s, e in spans]


def terms(text: str) -> list[str]:
    """Segmented, normalised search terms of `text`, stop words and punctuation removed."""
    return list(_cached_terms(text))


@lru_cache(maxsize=50_000)
def _cached_terms(text: str) -> tuple[str, ...]:
    # Cached: highlighting re-segments the sentences of popular passages on every question.
    words = _search_words(normalize(text))
    return tuple(w for w in (w.strip() for w in words) if w and _WORDLIKE.search(w) and w not in STOP_WORDS)


@lru_cache(maxsize=4096)
def cut(text: str) -> tuple[str, ...]:
    """jieba's words of `text` (accurate mode, HMM for unknown words), cut once: a question's
    search terms and its analysis for highlighting (`retrieval.highlight`) both start from it."""
    return tuple(_jieba().cut(text))


def _search_words(text: str) -> Iterator[str]:
    """jieba's search mode (`Tokenizer.cut_for_search`, the same order) over `cut`: each word,
    preceded by its two- and three-character parts that the dictionary holds."""
    known = _jieba().dt.FREQ
    for word in cut(text):
        if len(word) > 2:
            yield from (word[i : i + 2] for i in range(len(word) - 1) if known.get(word[i : i + 2]))
        if len(word) > 3:
            yield from (word[i : i + 3] for i in range(len(word) - 2) if known.get(word[i : i + 3]))
        yield word


def general_idf(term: str) -> float:
    """How informative `term` is in general Chinese, in [0, 1]: -log of its relative frequency
    in jieba's dictionary, scaled so that a word the dictionary lacks (a rare name, an English
    word) scores 1. Weighs what a question names independently of the articles indexed
    (`retrieval.decide`)."""
    dictionary = _jieba().dt
    return math.log(dictionary.total / (dictionary.FREQ.get(term, 0) + 1)) / math.log(dictionary.total)


def segment_for_index(text: str) -> str:
    """The space-joined term string stored in the FTS5 table."""
    return " ".join(terms(text))


def _segment_files(source: str, target: str) -> None:
    """Child-process entry point of `BackgroundSegmenter`: JSON list of texts in, of term strings out."""
    import json

    with open(source, encoding="utf-8") as f:
        texts = json.load(f)
    out = [segment_for_index(t) for t in texts]
    with open(target, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


class BackgroundSegmenter:
    """`segment_for_index` over many texts in a child process, started now, collected later.

    jieba is pure Python, so a thread would only take turns with the caller under the GIL; a
    process really runs beside it. The index build starts one before it loads the embedding
    model, seconds of mostly single-threaded imports that leave the other core idle. The child
    is a fresh `python -c` (not multiprocessing: fork is unsafe once torch or OpenMP threads
    exist, and spawn would re-run the caller's main script). Texts and results go through
    temporary files. If the child fails for any reason, `result()` segments in this process.
    """

    def __init__(self, texts: list[str]) -> None:
        import json
        import os
        import subprocess
        import sys
        import tempfile

        self._texts = texts
        self._process: Any = None
        self._dir = tempfile.TemporaryDirectory(prefix="index-segment-")
        self._source = os.path.join(self._dir.name, "texts.json")
        self._target = os.path.join(self._dir.name, "terms.json")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        code = f"from index.text import _segment_files; _segment_files({self._source!r}, {self._target!r})"
        try:
            with open(self._source, "w", encoding="utf-8") as f:
                json.dump(texts, f, ensure_ascii=False)
            self._process = subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except Exception as exc:  # no process could be started: segment inline later
            logging.getLogger(__name__).warning("segmenting in this process: %s", exc)

    def result(self) -> list[str]:
        import json

        out: Any = None
        process = self._process
        if process is not None:
            _, err = process.communicate()
            if process.returncode == 0:
                try:
                    with open(self._target, encoding="utf-8") as f:
                        out = json.load(f)
                except (OSError, ValueError) as exc:
                    err = str(exc).encode()
            if out is None:
                lines = err.decode("utf-8", "replace").strip().splitlines() or [f"exit {process.returncode}"]
                logging.getLogger(__name__).warning("segmenter process failed (%s); segmenting here", lines[-1])
        self.close()
        if not isinstance(out, list) or len(out) != len(self._texts):
            out = [segment_for_index(t) for t in self._texts]
        return out

    def close(self) -> None:
        """Stop the child if it still runs (e.g. the build was interrupted) and remove the
        temporary files. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
                process.communicate()
            elif process.stderr is not None:
                process.stderr.close()
        self._dir.cleanup()


def warm_up() -> None:
    """Load the dictionary and converter now (e.g. while a bot starts) instead of on the first question."""
    terms("预热")
