"""A question, analysed once: what every stage of retrieval reads.

`Question.parse` turns the asker's text into one object: the text as searched (cleaned,
truncated, in the articles' script), its index terms (for an English question its words and
their Chinese translations, `retrieval.crosslingual`), the kind of answer it asks for (a count,
an amount, a date, a person…), the nouns that name that kind ("国家" in "在哪个国家"), the focus
words next to its question word, and the dates it names. Ranking, highlighting and the "not
covered" decision all read this object; none of them parses the question again.

The vocabulary a question is read with lives here too, once: the question words
(`QUESTION_WORD`) and the answer kinds (`ANSWER_KINDS`), each with how a question asks for it
and what an answer of that kind looks like in a passage. The follow-up rule
(`retrieval.conversation`) reads its question words from here as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from index.text import HAN, STOP_WORDS, clean, cut, in_script, normalize, terms
from retrieval import dates
from retrieval.crosslingual import Lexicon, Translation, translate

# ------------------------------------------------------------------ question words
# Question words, as normalised text (simplified, lower case). A Chinese one may carry a
# measure word or more ("几个", "哪家", "什么时候"): any word holding one is a question word,
# except the ordinary words that contain their characters ("几乎", "哪怕").
QUESTION_WORD = re.compile(
    r"多少|几(?!乎)|什么|哪(?!怕)|谁|怎|何时|为何|如何|是否|多久|多大|多长|吗|呢"
    r"|\b(?:what|which|who|whom|whose|when|where|why|how|many|much)\b"
)


# A question word with the word it governs, whose characters search terms would keep as a
# topic of their own ("哪天" → 天, "几号").
QUESTION_PHRASE = re.compile(r"哪一?[天年月日个些里儿位家种次]|几[号月点年天日次]|多少|什么时候|何时|何日")


def is_question_word(word: str) -> bool:
    """Whether a word (a jieba token or an index term, normalised) is or holds a question word."""
    return bool(QUESTION_WORD.search(word))


# ------------------------------------------------------------------ answer kinds
_NUM = r"\d+(?:[.,]\d+)*"
_CN_NUM = r"[一二三四五六七八九十百千万亿两]{1,6}"
# A count in words, but not a lone "一": "一场会议", "另一家" are articles, not counts.
_CN_COUNT = r"(?:[一二三四五六七八九十两][一二三四五六七八九十百千万亿两]{1,5}|[二三四五六七八九十两])"
# Counting and measuring units after a number ("170余个", "八项", "3000米", "40%").
_UNIT = (
    r"(?:个|名|家|人|位|次|项|种|台|张|座|起|条|枚|户|倍|轮|批|部|本|首|届|场|所|艘|辆|架|只|头|棵|"
    r"米|公里|千米|厘米|毫米|英尺|英里|平方|公顷|亩|吨|公斤|千克|克|磅|升|度|瓦|伏|岁|个月|天|周|小时|分钟|秒|"
    r"元|美元|美金|港元|欧元|英镑|日元|块|万|亿|%|％)"
)
# Units of a span of time after a number ("3年", "两个月", "48小时"); not 月 or 日 alone, which
# name a date ("6月", "19日").
_SPAN = r"(?:年(?![\d底初末代])|个多?月|周|星期|天|小时|分钟)"
_MONEY_UNIT = r"(?:元|美元|美金|港元|欧元|英镑|日元|块钱|度|千瓦时|瓦|kwh|btc|usdt|比特币|%|％)"


@dataclass(frozen=True)
class AnswerKind:
    """A kind of answer: how a question asks for it and how an answer of it looks in a passage.
    `crisp` kinds (counts, amounts, dates, spans of time) have expressions a passage either
    holds or not; the others only loose cues (a title, a place suffix, a causal word)."""

    name: str
    asks: re.Pattern[str]
    looks: re.Pattern[str]
    crisp: bool


# What a question asks for, on its normalised text (traditional questions are normalised to
# simplified first); the first match wins (a reason first: "why are prices…" asks why, not a
# price). Loose cues are chosen so that a passage that answers is rarely taken for one that
# does not.
ANSWER_KINDS: tuple[AnswerKind, ...] = (
    AnswerKind(
        # What a term means ("OTC是什么意思", "what does OTC stand for"): a passage defining it
        # ("OTC即…", "“非柜”（非柜台业务）", "所谓…").
        "definition",
        re.compile(
            r"什么意思|的意思|的含义|含义是|的定义|指的是什么|是指什么|指什么|什么是|"
            r"\bwhat does .+ (?:mean|stand for)\b|\bmeaning of\b|\bwhat is meant by\b|\bdefinition of\b"
        ),
        re.compile(r"即|是指|指的是|意思是|意为|也就是|所谓|[（(]|\bstands? for\b|\bmeans\b"),
        crisp=False,
    ),
    AnswerKind(
        "reason",
        re.compile(r"为什么|为何|原因|怎么会|\bwhy\b|reason"),
        re.compile(r"因|由于|为了|导致|所以|从而|以便|致使|使得|目的"),
        crisp=False,
    ),
    AnswerKind(
        # How long: a span of time, not a point in it ("持续多久", "工作了几年", "how long").
        "duration",
        re.compile(
            r"多久|多长时间|多长的|多少年|几年|多少天|几天|几个月|多少个月|几个小时|多少小时|几周|几个星期|"
            r"how long|how many (?:years|months|weeks|days|hours)"
        ),
        re.compile(
            rf"(?<![\d.,])(?!(?:19|20)\d\d年){_NUM}\s*(?:余|多)?\s*(?:万|亿)?\s*{_SPAN}|"
            rf"[一二三四五六七八九十两半百千万]+(?:余|多)?{_SPAN}|半年|长期|永久"
        ),
        crisp=True,
    ),
    AnswerKind(
        "date",
        re.compile(
            r"什么时候|何时|哪天|哪一天|哪年|哪一年|几月|几号|几点|哪个月|日期|期限|截止|"
            r"\bwhen\b|what time|what date|which day|which year|which month|deadline"
        ),
        re.compile(
            rf"{_NUM}\s*(?:年|月|日|号|时|点)|[一二三四五六七八九十〇零]{{1,4}}(?:年|月|日)|[上中下]旬|世纪|年代|"
            r"昨天|今天|明天|去年|今年|明年|\d{4}-\d{2}-\d{2}"
        ),
        crisp=True,
    ),
    AnswerKind(
        "amount",
        re.compile(
            r"多少钱|价格|价钱|股价|电价|币价|市值|估值|费用|成本|资金|罚款|罚金|税|收入|利润|营收|交易量|交易额|金额|"
            r"耗电|用电|电量|how much|price|cost|worth|value|\bfees?\b|\bfines?\b|\btax|revenue|volume"
        ),
        re.compile(rf"{_NUM}\s*(?:万|亿)?\s*{_MONEY_UNIT}|[$¥￥]\s*\d|{_CN_NUM}\s*{_MONEY_UNIT}"),
        crisp=True,
    ),
    AnswerKind(
        "count",
        re.compile(
            r"多少|(?<!哪)几(?:个|家|名|位|次|项|种|台|张|人|座|万|亿|十|百|千|轮|岁)|数量|人数|比例|占比|年龄|年纪|多大|"
            r"how many|how old|number of|share of|proportion|percentage"
        ),
        re.compile(rf"{_NUM}\s*(?:余|多)?\s*{_UNIT}|{_CN_COUNT}(?:余|多)?{_UNIT}"),
        crisp=True,
    ),
    AnswerKind(
        "person",
        re.compile(
            r"谁|哪位|什么人|创始人|创办人|ceo|总裁|董事长|负责人|行长|厅长|局长|部长|主席|"
            r"\bwho\b|\bwhom\b|founder|founded|head of|chief"
        ),
        re.compile(
            r"主任|委员(?!会)|研究员|记者|总裁|ceo|创始人|董事长|局长|厅长|部长|主席|负责人|人士|教授|行长|经理|演员|歌手|作家|"
            r"[\u4e00-\u9fff]·[\u4e00-\u9fff]|[\u4e00-\u9fff]{2,4}(?:表示|指出|称|认为|说|担任|出任|饰演|演唱|创作|所著|发明)"
        ),
        crisp=False,
    ),
    AnswerKind(
        "place",
        re.compile(
            r"哪里|哪儿|在哪(?![部个些一种年天位次家本首])|何处|何地|哪个国家|哪个城市|哪座城市|什么地方|哪些地方|"
            r"哪些地区|总部|\bwhere\b|headquarter"
        ),
        re.compile(
            r"[\u4e00-\u9fff](?:省|市|州|县|区|国|岛|洲|镇|村|乡|港|湾|山|河|湖|路|街|站|城)|北美|海外|境外|境内|国内|各地"
        ),
        crisp=False,
    ),
    AnswerKind(
        "procedure",
        re.compile(r"如何|怎么办|怎样才能|怎么才能|步骤|流程|手续|how (?:do|can|should|to)\b"),
        re.compile(r"首先|其次|然后|步骤|流程|手续|需要|必须|要求|通过|办理|申请|可以|应当|方法"),
        crisp=False,
    ),
)
KINDS = {kind.name: kind for kind in ANSWER_KINDS}


# The words an English definition question is phrased with ("mean", "stand for"): its form,
# not its topic, so they are not translated ("mean" → 意味着 would find "这意味着…").
_DEFINITION_FORM = re.compile(r"\b(?:mean|means|meant|meaning|stands? for|refers? to|definition)\b", re.IGNORECASE)


def answer_kind(question: str) -> AnswerKind | None:
    """The kind of answer `question` asks for, or None ("what…")."""
    text = normalize(question)
    return next((kind for kind in ANSWER_KINDS if kind.asks.search(text)), None)


def kind_spans(kind: AnswerKind, text: str) -> list[tuple[int, int]]:
    """Where `text` (normalised) holds an expression of `kind`."""
    return [(m.start(), m.end()) for m in kind.looks.finditer(text)]


# ------------------------------------------------------------------ structure
# A question word used as a determiner: the word after it names the kind of answer ("哪个国家",
# "什么职务", "which country"), which the answer itself instantiates.
_DETERMINERS = re.compile(r"哪(?:个|些|几个|几|家|位|种|类|一个|一家|一位|一种)?|什么|which|what")
# Measure words between the determiner and its noun ("哪一家公司", "哪几个省份").
_MEASURES = re.compile(r"[一几]?(?:个|家|位|种|类|项|座|所)")
# Words that ask "how many" ("多少", "几个") rather than name a kind of answer.
_QUANTITY = re.compile(r"多少|几(?:个|家|名|位|次|项|种|万|亿)?|how many|how much|数量|规模|比例")


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    """The jieba words of a normalised question, blanks dropped."""
    return tuple(t.strip() for t in cut(text) if t.strip())


@lru_cache(maxsize=4096)
def kind_nouns(question: str) -> frozenset[str]:
    """Words of `question` that name the kind of answer it asks for: the content word right
    after a determining question word ("国家" in "在哪个国家", "country" in "which country").
    A passage naming Kazakhstan answers "which country" without the word "country"."""
    tokens = _tokens(normalize(question))
    found: set[str] = set()
    for i, token in enumerate(tokens[:-1]):
        if not _DETERMINERS.fullmatch(token):
            continue
        following = tokens[i + 1 :]
        if following and _MEASURES.fullmatch(following[0]) and len(following) > 1:
            following = following[1:]
        noun = following[0]
        content = noun.isalnum() and noun not in STOP_WORDS and not is_question_word(noun)
        if content and not _QUANTITY.fullmatch(noun):
            found.add(noun)
    return frozenset(found)


@dataclass(frozen=True)
class Focus:
    """Each term's weight by its distance from the question word (1 far, 2 next to it), and the
    terms right next to it: what the question asks about, not only its topic."""

    weights: Mapping[str, float]
    terms: frozenset[str]


@lru_cache(maxsize=4096)
def focus_of(question: str, query_terms: tuple[str, ...]) -> Focus:
    """The focus of `question` among `query_terms` (distance counted in content words, so
    particles such as 了, 的, 是 do not push a word away)."""
    tokens = _tokens(normalize(question))
    wh_positions = [i for i, t in enumerate(tokens) if is_question_word(t) or _QUANTITY.fullmatch(t)]
    content = [i for i, t in enumerate(tokens) if t not in STOP_WORDS and not is_question_word(t)]
    weights: dict[str, float] = {}
    focus: set[str] = set()
    for term in query_terms:
        positions = [i for i, t in enumerate(tokens) if term in t]
        if not positions or not wh_positions:
            weights[term] = 1.0
            continue
        distance = min(sum(1 for c in content if min(p, w) < c < max(p, w)) for p in positions for w in wh_positions)
        weights[term] = 1.0 + 1.0 / (1.0 + distance)
        if distance == 0:
            focus.add(term)
    return Focus(weights, frozenset(focus))


# ------------------------------------------------------------------ the question
@dataclass(frozen=True)
class Vocabulary:
    """What a question is read against: one state of the index (its script, its terms' document
    frequencies, its pinyin table, its newest article's date) and the English lexicon."""

    passages: int
    script: str
    document_frequencies: Callable[[Sequence[str]], dict[str, int]]
    pinyin: Callable[[], dict[str, tuple[str, ...]]]
    lexicon: Callable[[], Lexicon]
    reference_date: date | None
    max_chars: int


@dataclass(frozen=True)
class Question:
    """One question as every stage of retrieval reads it."""

    asked: str  # as the asker wrote it
    text: str  # as searched: cleaned, truncated, in the articles' script
    normalized: str  # `index.text.normalize(text)`
    terms: tuple[str, ...]  # index terms (an English question: its words, then their translations)
    df: Mapping[str, int]  # passages holding each term
    idf: Mapping[str, float]  # IDF of each term in the index
    translation: Translation | None  # an English question's words as Chinese index terms
    kind: AnswerKind | None  # the kind of answer asked for
    kind_nouns: frozenset[str]  # nouns naming that kind ("国家" in "在哪个国家")
    focus: Focus  # the terms next to the question word
    dates: dates.DateQuery = field(default_factory=dates.DateQuery)  # dates and recency asked about

    @property
    def foreign(self) -> bool:
        """No Chinese character: an English question, read through its translation."""
        return self.translation is not None

    @classmethod
    def parse(cls, asked: str, vocabulary: Vocabulary) -> Question:
        """Read `asked` against one state of the index."""
        text = in_script(clean(asked)[: vocabulary.max_chars], vocabulary.script)
        query_terms = terms(text)
        translation = None
        if text and not HAN.search(text):
            topic = text
            kind = answer_kind(text)
            if kind is not None and kind.name == "definition":
                topic = _DEFINITION_FORM.sub(" ", text)
                query_terms = terms(topic)
            translation = translate(topic, vocabulary.lexicon(), vocabulary.pinyin(), vocabulary.document_frequencies)
            query_terms += translation.terms
        unique = list(dict.fromkeys(query_terms))
        df = vocabulary.document_frequencies(unique) if unique else {}
        return cls.analysed(asked, text, unique, df, vocabulary.passages, translation, vocabulary.reference_date)

    @classmethod
    def analysed(
        cls,
        asked: str,
        text: str,
        query_terms: Sequence[str],
        df: Mapping[str, int],
        passages: int,
        translation: Translation | None = None,
        reference_date: date | None = None,
    ) -> Question:
        """The analysis of a question whose index terms and their document frequencies among
        `passages` are known."""
        unique = tuple(dict.fromkeys(query_terms))
        return cls(
            asked=asked,
            text=text,
            normalized=normalize(text),
            terms=unique,
            df=df,
            idf=inverse_document_frequencies(passages, df),
            translation=translation,
            kind=answer_kind(text),
            kind_nouns=kind_nouns(text),
            focus=focus_of(text, unique),
            dates=dates.parse_question(text, reference_date) if reference_date else dates.DateQuery(),
        )


def inverse_document_frequencies(passages: int, df: Mapping[str, int]) -> dict[str, float]:
    """BM25's IDF of each term: rare terms (names) weigh most."""
    n = max(passages, 1)
    return {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
