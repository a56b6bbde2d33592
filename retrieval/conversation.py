"""Follow-up questions: which question a message continues, and the conversations behind it.

`rewrite` is the policy, a pure function of the previous (resolved) questions and the new one:
a follow-up is searched as the question it continues, anything else unchanged, so a question
that stands on its own ranks exactly as if asked alone. How people write follow-ups:

- elliptical, naming only the new topic: "内蒙古呢？", "那OKEx呢", "火幣怎麼樣？", "What about
  Huobi?", "And Xinjiang?" → the previous question with its topic replaced by the new one;
- pronoun-led, the topic left out: "他怎么看碳中和？", "该通知要求什么？", "What did he say…?",
  "When did they…?" → the pronoun replaced by the previous topic (appended when there is none);
- bare questions with no subject at all: "什么时候？", "谁说的？", "When?", "Who said that?" →
  asked together with the previous question;
- a short question naming nothing of its own that alone finds no covered answer ("第二条是什么？",
  "Why so difficult?") → tried with the previous topic, kept only if that answer is covered
  (`Rewritten.tentative`, `adopt`).

`ConversationStore` keeps the recent resolved questions per caller-chosen key in memory.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from functools import lru_cache
from typing import Any

from index.text import HAN, normalize, terms, to_simplified
from retrieval.model import Answer
from retrieval.question import QUESTION_PHRASE, is_question_word

MAX_TURNS = 4  # resolved questions kept per conversation


@dataclass(frozen=True)
class Limits:
    """The rule's parameters, chosen by 5-fold cross-validation over the conversations of
    bench/data/conversations.jsonl (bench/conversations.py)."""

    topic_words: int = 4  # longest "X" of "X呢" / "what about X" (Chinese characters + Latin words)
    fallback_words: int = 6  # longest question retried with context when alone it finds nothing (0: never)
    # The retried question's answer is kept only when this share of its (IDF-weighted) terms,
    # its own words and the topic together, is in the passage: a cosine lifted by the topic's
    # name alone is not an answer to "今天天气怎么样？".
    adopt_coverage: float = 0.5


LIMITS = Limits()

_END = r"\s*[?？!！。.…~～]*\s*$"
# "(那)X呢", "X怎么样", "至于X呢", "X也是吗", "那X怎么说" (simplified and traditional).
_ZH_ELLIPTICAL = re.compile(
    r"^(?:那么|那|还有|還有|至于|至於|而|另外)?\s*[,，]?\s*(?P<x>.+?)\s*"
    r"(?:的情况|的情況|方面|那边|那邊)?\s*"
    r"(?:呢|怎么样|怎麼樣|怎样|怎樣|如何|又如何|又怎样|又怎樣|也是吗|也是嗎|也一样吗|也一樣嗎)"
    + _END
    # "那X怎么说": only after 那/还有, since "业内人士怎么看？" alone asks a question of its own
    + r"|^(?:那么|那|还有|還有|而)\s*[,，]?\s*(?P<y>.+?)\s*(?:怎么说|怎麼說|怎么看|怎麼看)"
    + _END
)
# "what/how about X", "and X?", "what of X", "same for X", "X too?".
_EN_ELLIPTICAL = re.compile(
    r"^(?:(?:and|but|so|ok|okay|then)\s*,?\s*)?(?:(?:what|how)\s+about|what\s+of|same\s+for|and(?:\s+for)?)\s+"
    r"(?P<x>.+?)" + _END + r"|^(?P<y>.+?)\s*,?\s+(?:too|as well)" + _END,
    re.IGNORECASE,
)
# Chinese pronouns standing for the topic (not 其他/其中/其实…, which are ordinary words).
_ZH_PRONOUN = re.compile(
    r"(?<![其吉])(?:他们|她们|它们|他們|她們|它們|[他她它](?![人国國乡鄉]))|其(?![他它中实實余餘次])"
)
# A leading demonstrative, with its measure word: "该通知", "这次行动", "那份文件". A bare 那
# before a name is "then" ("那OKEx怎么说？"), not "that".
_ZH_DEMONSTRATIVE = re.compile(
    r"^(?:那么|那)?\s*(?:(?:该|該|此|这|這)(?:[个個次项項份些家位种種里裡])?|那[个個次项項份些家位种種里裡])(?=\S)"
)
# ("it" not as the dummy subject of "is it true/possible that…")
_EN_PRONOUN = re.compile(
    r"\b(?:he|she|him|his|her|hers|they|them|their|theirs|its|it(?!\s+(?:true|possible|likely|that)\b))\b",
    re.IGNORECASE,
)
# "this/that" as a pronoun: last word, or right after a question word or auxiliary ("Who said that?").
_EN_DEMONSTRATIVE = re.compile(
    r"\b(?:this|that|these|those)" + _END
    + r"|\b(?:who|what|when|where|why|how|did|does|do|was|were|is|are|has|have)\s+(?:this|that|these|those)\b",
    re.IGNORECASE,
)  # fmt: skip
# Words that carry no topic of their own in a bare follow-up ("什么时候发布的？", "When was it held?").
_GENERIC = frozenset(
    "发布 提出 宣布 发生 开始 举行 举办 回复 回应 时间 日期 地点 原因 具体 人 事 "
    "said say says tell told happen happened exactly announce announced start started begin began held hold "
    "date time place reason people much many long ago mean means meant so".split()
)
# Capitalised words that open a question rather than name something.
_EN_OPENERS = frozenset(
    "what which who whom whose when where why how did does do is are was were has have had can could will would "
    "should and but so then ok okay the a an in on at for of about to".split()
)
_PARTIAL_WORD = re.compile(r"[A-Za-z0-9]+$")
_NOUN_JOINERS = frozenset("和 与 與 及".split())
_PROPER_FLAGS = frozenset(("nr", "ns", "nt", "nz", "nrt", "nrfg", "eng", "j"))
_NOUN_FLAGS = ("n", "vn", "j", "eng", "m")  # jieba tag prefixes: nouns and names (n*), numbers, dates


@dataclass(frozen=True)
class Rewritten:
    """The question as it is to be searched. `used_context`: it continues the previous one.
    `tentative`: only worth it if it finds a covered answer (the question alone did not)."""

    text: str
    used_context: bool
    rule: str = "standalone"
    tentative: bool = False


def word_count(text: str) -> int:
    """Length in words: Chinese characters plus Latin/digit words."""
    return len(HAN.findall(text)) + len(re.findall(r"[A-Za-z0-9]+", HAN.sub(" ", text)))


def rewrite(
    previous: Sequence[str],
    question: str,
    *,
    alone_answered: bool | None = None,
    limits: Limits = LIMITS,
) -> Rewritten:
    """`question` as the question it continues, given the earlier resolved questions (oldest
    first); unchanged when it stands on its own or there is no previous question.

    `alone_answered` is whether the question alone found a covered answer: pass it (after a
    first search) only for a question this returned unchanged, to try the "finds nothing"
    rule; cue-less questions otherwise never cost a second search.
    """
    asked, question = question, " ".join(question.split())
    previous = [p for p in previous if p.strip()]
    if not previous or not question:
        return Rewritten(asked, False)
    last = previous[-1]
    topic = _elliptical_topic(question, limits.topic_words)
    if topic is not None:
        return Rewritten(_replace_topic(last, topic), True, "elliptical")
    if _is_bare(question):
        return Rewritten(f"{last} {question}", True, "bare")
    if _ZH_DEMONSTRATIVE.match(question) or _ZH_PRONOUN.search(question) or _english_pronoun(question):
        if _names_its_antecedent(question):
            return Rewritten(asked, False)
        return Rewritten(_resolve_pronoun(previous, question), True, "pronoun")
    if alone_answered is False and word_count(question) <= limits.fallback_words and not _names_something(question):
        return Rewritten(_attach(previous, question), True, "not-covered", tentative=True)
    return Rewritten(asked, False)


def retry(
    previous: Sequence[str], question: str, first: Rewritten, answer: Answer, limits: Limits = LIMITS
) -> Rewritten | None:
    """After searching `first`: the rewrite to try when the question alone found no covered
    answer, or None. Its answer replaces the first only if it is covered (`adopt`)."""
    if first.used_context or answer.answered or not previous:
        return None
    second = rewrite(previous, question, alone_answered=False, limits=limits)
    return second if second.used_context else None


def adopt(answer: Answer, limits: Limits = LIMITS) -> bool:
    """Whether a tentative rewrite's answer replaces the question's own: only a covered one
    that holds enough of the rewritten question's terms."""
    return answer.answered and answer.coverage >= limits.adopt_coverage


def answer_turns(
    answer_many: Callable[[Sequence[str], int | None], list[Answer]],
    items: Sequence[tuple[Sequence[str], str]],
    k: int | None = None,
    limits: Limits = LIMITS,
    max_chars: int = 0,
) -> list[tuple[Answer, Rewritten]]:
    """Answer (previous resolved questions, question) pairs in at most two `answer_many`
    calls: every question (rewritten when it is a follow-up), then those that alone found
    nothing, with context. Each answer's `question` is the one asked; each rewrite is held to
    `max_chars` (`within`). This is the one follow-up path: the bot, the console, the CLI and
    the bench all answer through it."""
    rewrites = [within(rewrite(previous, question, limits=limits), question, max_chars) for previous, question in items]
    answers = answer_many([r.text for r in rewrites], k)
    second = {
        i: r
        for i, ((previous, question), first, answer) in enumerate(zip(items, rewrites, answers, strict=True))
        if (r := retry(previous, question, first, answer, limits)) is not None
    }
    second = {i: within(r, items[i][1], max_chars) for i, r in second.items()}
    if second:
        for (i, rewritten), answer in zip(
            second.items(), answer_many([r.text for r in second.values()], k), strict=True
        ):
            if adopt(answer, limits):
                rewrites[i], answers[i] = rewritten, answer
    return [
        (dataclass_replace(answer, question=question), rewritten)
        for (_, question), answer, rewritten in zip(items, answers, rewrites, strict=True)
    ]


def answer_conversations(
    answer_many: Callable[[Sequence[str], int | None], list[Answer]],
    conversations: Sequence[tuple[Sequence[str], Sequence[str]]],
    k: int | None = None,
    limits: Limits = LIMITS,
    max_chars: int = 0,
) -> list[list[tuple[Answer, Rewritten]]]:
    """Answer whole conversations, each (earlier resolved questions, its questions in order),
    together turn by turn: the n-th questions of all of them in one `answer_turns` round."""
    histories = [list(previous)[-MAX_TURNS:] for previous, _ in conversations]
    results: list[list[tuple[Answer, Rewritten]]] = [[] for _ in conversations]
    for turn in range(max((len(questions) for _, questions in conversations), default=0)):
        live = [c for c, (_, questions) in enumerate(conversations) if turn < len(questions)]
        turns = [(histories[c], conversations[c][1][turn]) for c in live]
        answered = answer_turns(answer_many, turns, k, limits, max_chars)
        for c, (answer, rewritten) in zip(live, answered, strict=True):
            histories[c] = [*histories[c], rewritten.text][-MAX_TURNS:]
            results[c].append((answer, rewritten))
    return results


def within(searched: Rewritten, question: str, limit: int) -> Rewritten:
    """`searched` cut to `limit` characters (0: no limit). It is what is searched, stored for
    "More" and the answer log, and continued by the next follow-up, so the context a follow-up
    adds must not grow it turn after turn. The user's own words stay whole; the context gives
    way from its end, keeping its head: the topic the conversation started with."""
    text = searched.text
    if limit <= 0 or len(text) <= limit:
        return searched
    at = text.rfind(question)  # the context may hold the same words (a repeated follow-up)
    if at < 0:  # the question itself was rewritten (a pronoun replaced by the topic)
        return dataclass_replace(searched, text=text[:limit])
    room = limit - len(question)
    before = text[:at]
    if len(before) > room:
        head = before[: max(0, room - 1)]
        if before[len(head)].isalnum():
            head = _PARTIAL_WORD.sub("", head)  # no half a Latin word
        before = head.rstrip() + " " if head.strip() else ""
    after = text[at + len(question) :][: room - len(before)]
    return dataclass_replace(searched, text=before + question + after)


def _elliptical_topic(question: str, limit: int) -> str | None:
    """X of "X呢" / "what about X", or None. X is a bare noun phrase, a name: "内蒙古", "OKEx",
    "八项措施", not "今天天气" or "交易所的跨境监管难度", which ask something of their own."""
    match = _ZH_ELLIPTICAL.match(question) if HAN.search(question) else None
    if match is None:
        match = _EN_ELLIPTICAL.match(question)
    if match is None:
        return None
    topic = next((group for group in match.groups() if group), "").strip()
    topic = re.sub(r"^(?:(?:about|the|in|for|at|on)\s+|那么|那)", "", topic, flags=re.IGNORECASE)
    topic = topic.strip(" ,，").removesuffix("的")
    # A question word inside "X" means it is a whole question ("为什么要关停呢？"), not a topic.
    if not topic or is_question_word(normalize(topic)) or word_count(topic) > limit:
        return None
    if HAN.search(topic) and not all(_noun_like(word, flag) for word, flag in _tagged(topic) if word.strip()):
        return None
    return topic


def _noun_like(word: str, flag: str) -> bool:
    return flag.startswith(_NOUN_FLAGS) or (flag == "x" and word.isalnum())


def _names_something(question: str) -> bool:
    """Whether the question names its own topic (a place, person, organisation, Latin name):
    then finding nothing alone means the articles lack it, not that it continues the last one."""
    if HAN.search(question):
        return any(flag in _PROPER_FLAGS for _, flag in _tagged(question))
    return _subject_span(question) is not None


def _is_bare(question: str) -> bool:
    """A question with no subject or topic word: only question words and generic verbs
    ("哪天發布的？": the search terms of 哪天 and 几号 keep their 天 and 几号)."""
    return all(t in _GENERIC for t in terms(QUESTION_PHRASE.sub(" ", to_simplified(question))))


def _names_its_antecedent(question: str) -> bool:
    """Whether the question names what its pronoun or demonstrative stands for: a name before
    the pronoun ("What did Binance say about its merchants?", "陈晓华认为他们…"), or a specific
    noun phrase after the demonstrative ("这次断卡行动…", "那次国务院金融委会议…"; "该通知" and
    "这次行动" only point back). Such a question is about its own subject: it ranks as if asked
    alone."""
    if HAN.search(question):
        match = _ZH_DEMONSTRATIVE.match(question)
        if match:
            nouns = []
            for word, flag in _tagged(question[match.end() :]):
                if not _noun_like(word, flag):
                    break
                nouns.append(flag)
            return len(nouns) > 1 or any(flag in _PROPER_FLAGS for flag in nouns)
        pronoun = _ZH_PRONOUN.search(question)
        before = question[: pronoun.start()] if pronoun else ""
        return bool(before.strip()) and _subject_span(before) is not None
    pronoun = _EN_PRONOUN.search(question)
    return pronoun is not None and _subject_span(question[: pronoun.start()]) is not None


def _english_pronoun(question: str) -> bool:
    return not HAN.search(question) and bool(_EN_PRONOUN.search(question) or _EN_DEMONSTRATIVE.search(question))


def _replace_topic(last: str, topic: str) -> str:
    """The previous question about `topic` instead: its subject replaced, else `topic` added."""
    span = None
    if not HAN.search(last) and not topic[:1].isupper():  # "And about exchanges?": not a name
        span = _about_span(last)
    span = span or _subject_span(last)
    if span is None:
        return f"{last} {topic}"
    start, end = span
    return last[:start] + topic + last[end:]


def _resolve_pronoun(previous: Sequence[str], question: str) -> str:
    """The pronoun (or leading demonstrative) replaced by the previous topic, or that topic appended."""
    subject = next((s for s in (_subject(p) for p in reversed(previous)) if s), None)
    if subject is None:
        return _attach(previous, question)
    if HAN.search(question):
        match = _ZH_DEMONSTRATIVE.match(question)
        if match:
            rest = question[match.end() :]
            # "这次行动" after "断卡行动…": the subject already ends with the noun.
            rest = next((rest[len(w) :] for w in _leading_nouns(rest) if subject.endswith(w)), rest)
            return subject + rest
        return _ZH_PRONOUN.sub(subject, question, count=1)

    def name(match: re.Match[str]) -> str:
        word = match.group(0).lower()
        return subject + "'s" if word in ("his", "her", "its", "their", "theirs", "hers") else subject

    if _EN_PRONOUN.search(question):
        return _EN_PRONOUN.sub(name, question, count=1)
    return _attach(previous, question)


def _attach(previous: Sequence[str], question: str) -> str:
    """The question with the previous topic appended: its subject, else its content words."""
    last = previous[-1]
    topic = _subject(last) or " ".join(dict.fromkeys(terms(last)))
    return f"{question} ({topic})" if topic else question


def _subject(question: str) -> str | None:
    span = _subject_span(question)
    return question[span[0] : span[1]] if span else None


def _subject_span(question: str) -> tuple[int, int] | None:
    """Where the question's topic entity is: in Chinese its leading noun phrase ("青海省工信厅"
    in "青海省工信厅要求什么？"), else its first proper noun; in English its first run of
    capitalised words ("Cai Kailong", "Inner Mongolia")."""
    if HAN.search(question):
        tokens = _tagged(question)
        end = position = 0
        for word, flag in tokens:
            # Nouns, names, dates; adjectives and 和/与 only between them ("工业和信息化厅").
            joins = flag == "a" or (flag == "c" and word in _NOUN_JOINERS)
            if not (_noun_like(word, flag) or joins):
                break
            position += len(word)
            if not joins:
                end = position
        if end:
            return 0, end
        position = 0
        for word, flag in tokens:
            if flag in _PROPER_FLAGS:
                return position, position + len(word)
            position += len(word)
        return None
    for match in re.finditer(r"(?:[A-Z][\w'’.-]*)(?:\s+[A-Z][\w'’.-]*)*", question):
        words = match.group(0).split()
        while words and words[0].lower() in _EN_OPENERS:
            words.pop(0)
        if words:
            text = " ".join(words)
            text = re.sub(r"['’]s$", "", text)
            start = question.index(text, match.start())
            return start, start + len(text)
    return None


def _about_span(question: str) -> tuple[int, int] | None:
    """The object of "…about X?" in an English question (what "And about exchanges?" replaces)."""
    match = re.search(r"\babout\s+(.+?)\s*[?？.!]*$", question, re.IGNORECASE)
    return match.span(1) if match else None


def _leading_nouns(text: str) -> list[str]:
    tagged = _tagged(text)
    return [word for word, flag in tagged[:1] if flag.startswith(_NOUN_FLAGS)]


def _tagged(text: str) -> list[tuple[str, str]]:
    """jieba part-of-speech tags of `text` (tagged in simplified characters, mapped back to
    the original ones when the conversion kept the length)."""
    simplified = to_simplified(text)
    tagged = _posseg(simplified if len(simplified) == len(text) else text)
    out, position = [], 0
    for word, flag in tagged:
        out.append((text[position : position + len(word)], flag))
        position += len(word)
    return out


@lru_cache(maxsize=4096)
def _posseg(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((pair.word, pair.flag) for pair in _pos_module().cut(text))


@lru_cache(maxsize=1)
def _pos_module() -> Any:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba.posseg


# ------------------------------------------------------------------ conversations
@dataclass
class _Conversation:
    turns: list[str]
    seen: float


class ConversationStore:
    """Recent resolved questions per conversation, in memory, bounded and expiring.

    Keys are opaque and built by the caller (the bot: (chat, user); a reply to one of its
    answers: the conversation that answer belongs to, via `link`/`conversation_of`). A
    conversation idle for `idle_seconds` is forgotten; beyond `max_conversations` the least
    recently used one is dropped, and the message→conversation links are bounded the same
    way. Thread-safe (one lock), so the bot may call it from handlers and worker threads.
    """

    def __init__(
        self,
        idle_seconds: float = 600.0,
        max_conversations: int = 10_000,
        max_turns: int = MAX_TURNS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_conversations = max(1, max_conversations)
        self.max_turns = max(1, max_turns)
        self._clock = clock
        self._lock = threading.Lock()
        self._conversations: OrderedDict[Hashable, _Conversation] = OrderedDict()
        self._links: OrderedDict[Hashable, Hashable] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._conversations)

    def turns(self, key: Hashable) -> tuple[str, ...]:
        """The conversation's resolved questions, oldest first; () when none or expired."""
        with self._lock:
            self._expire(self._clock())
            conversation = self._conversations.get(key)
            return tuple(conversation.turns) if conversation else ()

    def add(self, key: Hashable, resolved: str) -> None:
        """Record a question as it was understood; it becomes the context of the next one."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            conversation = self._conversations.pop(key, None) or _Conversation([], now)
            conversation.turns = [*conversation.turns, resolved][-self.max_turns :]
            conversation.seen = now
            self._conversations[key] = conversation
            while len(self._conversations) > self.max_conversations:
                self._conversations.popitem(last=False)

    def clear(self, key: Hashable) -> None:
        """Forget a conversation (/new)."""
        with self._lock:
            self._conversations.pop(key, None)

    def link(self, message: Hashable, key: Hashable) -> None:
        """Remember that a bot message (e.g. (chat id, message id)) answered conversation `key`."""
        with self._lock:
            self._links.pop(message, None)
            self._links[message] = key
            while len(self._links) > self.max_conversations:
                self._links.popitem(last=False)

    def conversation_of(self, message: Hashable) -> Hashable | None:
        """The conversation a replied-to bot message belongs to, if still known."""
        with self._lock:
            return self._links.get(message)

    def _expire(self, now: float) -> None:
        """Drop idle conversations: the oldest-used come first, so stop at the first live one."""
        while self._conversations:
            key, conversation = next(iter(self._conversations.items()))
            if now - conversation.seen < self.idle_seconds:
                break
            del self._conversations[key]
