"""Follow-up questions: the rewrite rule in simplified/traditional Chinese and English, the
conversation store (expiry on an injected clock, bounds), standalone questions ranking exactly
as alone over a real (fake-embedder) index, the CLI's `--json --conversation` and the console."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Exit, json_lines, write_config

from retrieval import Retriever
from retrieval.conversation import ConversationStore, Limits, answer_conversations, answer_turns, rewrite
from settings import PROJECT_ROOT, Config, load_config
from telegram_bot import render
from telegram_bot.console import run_console
from telegram_bot.pipeline import QAService

QINGHAI = "青海省工信厅要求什么？"
BINANCE = "币安怎么回应银行卡被冻结？"
CAI = "Who is Cai Kailong?"
FSDC = "国务院金融稳定发展委员会"
CARBON = "carbon neutrality?"
WEIBO = "Which Weibo accounts were shut down?"
CONVERSATIONS = PROJECT_ROOT / "bench" / "data" / "conversations.jsonl"


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("previous", "question", "understood", "rule"),
    [
        # simplified Chinese
        (QINGHAI, "内蒙古呢？", "内蒙古要求什么？", "elliptical"),
        (BINANCE, "那OKEx呢？", "OKEx怎么回应银行卡被冻结？", "elliptical"),
        (BINANCE, "火币怎么样？", "火币怎么回应银行卡被冻结？", "elliptical"),
        ("蔡凯龙怎么看挖矿？", "他怎么评价交易所监管？", "蔡凯龙怎么评价交易所监管？", "pronoun"),
        ("断卡行动打掉了多少个犯罪团伙？", "这次行动抓了多少人？", "断卡行动抓了多少人？", "pronoun"),
        (f"{FSDC}强调了什么？", "它什么时候开的会？", f"{FSDC}什么时候开的会？", "pronoun"),
        (QINGHAI, "什么时候？", f"{QINGHAI} 什么时候？", "bare"),
        ("火币怎么回应关键词被屏蔽？", "那OKEx怎么说？", "OKEx怎么回应关键词被屏蔽？", "elliptical"),
        ("陈晓华怎么看交易所监管？", "那蔡凯龙怎么看？", "蔡凯龙怎么看交易所监管？", "elliptical"),
        ("青海省工信厅发布了什么通知？", "那份通知要求什么？", "青海省工信厅通知要求什么？", "pronoun"),
        ("内蒙古发改委发布了什么？", "哪天发布的？", "内蒙古发改委发布了什么？ 哪天发布的？", "bare"),
        # traditional Chinese
        ("青海省工業和信息化廳發布了什麼通知？", "該通知要求什麼？", "青海省工業和信息化廳通知要求什麼？", "pronoun"),
        ("青海省工業和信息化廳發布了什麼通知？", "新疆呢？", "新疆發布了什麼通知？", "elliptical"),
        ("昌吉州的通知叫什麼？", "青海省的呢？", "青海省的通知叫什麼？", "elliptical"),
        ("哪些幣圈大V的微博被封了？", "誰說的？", "哪些幣圈大V的微博被封了？ 誰說的？", "bare"),
        ("內蒙古發改委發布了什麼？", "幾號發布的？", "內蒙古發改委發布了什麼？ 幾號發布的？", "bare"),
        # English
        (CAI, "What did he say about carbon neutrality?", f"What did Cai Kailong say about {CARBON}", "pronoun"),
        ("How did Binance respond to the frozen bank cards?", "What about Huobi?",
         "How did Huobi respond to the frozen bank cards?", "elliptical"),
        ("What did Qinghai order?", "And Inner Mongolia?", "What did Inner Mongolia order?", "elliptical"),
        ("What did Cai Kailong say about carbon neutrality?", "And about exchanges?",
         "What did Cai Kailong say about exchanges?", "elliptical"),
        (WEIBO, "Who said that?", f"{WEIBO} Who said that?", "bare"),
        (WEIBO, "When?", f"{WEIBO} When?", "bare"),
    ],
)  # fmt: skip
def test_follow_ups_are_read_as_the_question_they_continue(
    previous: str, question: str, understood: str, rule: str
) -> None:
    result = rewrite([previous], question)
    assert (result.text, result.used_context, result.rule) == (understood, True, rule)
    assert not result.tentative


STANDALONE = [
    "断卡行动打掉了多少个犯罪团伙？",
    "其他交易所被屏蔽了吗？",  # 其他 is "other", not a pronoun
    "交易所的跨境监管难度如何？",  # "X如何" whose X asks something of its own
    "今天天气怎么样？",
    "业内人士怎么看？",  # "X怎么看" without 那 asks a question of its own
    "斷卡行動有多少個省區市參加？",
    "What did Chen Xiaohua say about exchanges?",
    "Is it true that Huobi replied?",  # a dummy "it"
    "How many gangs did the card-breaking operation break up?",
]
# Questions whose pronoun or demonstrative stands for something they name themselves.
NAMES_ITS_ANTECEDENT = [
    "What did Binance say about its OTC merchants?",
    "When did Bitmain say it would hold its meeting?",
    "What did Inner Mongolia's development commission say in its draft?",
    "陈晓华认为他们面临什么挑战？",
    "陳曉華認為他們面臨什麼挑戰？",
    "币安称其商家的银行卡怎么了？",
    "这次断卡行动抓了多少人？",
    "那次国务院金融委会议强调了什么？",
    "陈晓华说了什么？他是谁？",
]
STANDALONE += NAMES_ITS_ANTECEDENT


@pytest.mark.parametrize("question", STANDALONE)
def test_a_question_that_stands_on_its_own_is_unchanged(question: str) -> None:
    for previous in (QINGHAI, CAI, BINANCE):
        assert rewrite([previous], question) == rewrite([], question)
        assert rewrite([previous], question).text == question
        assert not rewrite([previous], question).used_context


def test_the_bench_topic_switches_are_unchanged() -> None:
    """Every later turn the benchmark marks as a topic switch, after its real previous question."""
    switches = 0
    for line in CONVERSATIONS.read_text(encoding="utf-8").splitlines():
        turns = json.loads(line)["turns"]
        for before, turn in itertools.pairwise(turns):
            if not turn.get("followup"):
                switches += 1
                assert rewrite([before["q"]], turn["q"]) == rewrite([], turn["q"]), turn["q"]
    assert switches >= 10


def test_no_previous_question_means_no_rewrite() -> None:
    assert rewrite([], "内蒙古呢？").text == "内蒙古呢？"
    assert rewrite(["  "], "He said what?").used_context is False


def test_a_short_question_that_alone_finds_nothing_is_tried_with_the_topic() -> None:
    previous = ["青海的通知有几条要求？"]
    assert not rewrite(previous, "第二条是什么？").used_context  # without the first search: unchanged
    tried = rewrite(previous, "第二条是什么？", alone_answered=False)
    assert tried.used_context and tried.tentative and tried.text == "第二条是什么？ (青海)"
    assert not rewrite(previous, "第二条是什么？", alone_answered=True).used_context
    # A question naming its own topic found nothing because the articles lack it.
    assert not rewrite(previous, "明天上海会下雨吗？", alone_answered=False).used_context
    assert not rewrite([CAI], "What is the capital of Australia?", alone_answered=False).used_context
    # The limit on length, and 0 turning the rule off.
    assert not rewrite(previous, "第二条是什么？", alone_answered=False, limits=Limits(fallback_words=0)).used_context


def test_pronouns_fall_back_to_the_previous_content_words_without_a_name() -> None:
    result = rewrite(["How many criminal gangs were taken down?"], "How many people did they arrest?")
    assert result.used_context and result.text.startswith("How many people did they arrest? (")
    assert "gangs" in result.text


def test_the_topic_comes_from_an_earlier_turn_when_the_last_names_none() -> None:
    result = rewrite(["蔡凯龙是谁？", "为什么说挖矿只能走海外？"], "他还说了什么挑战？")
    assert result.text == "蔡凯龙还说了什么挑战？"


# ---------------------------------------------------------------- the store
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_expires_idle_conversations() -> None:
    clock = Clock()
    store = ConversationStore(idle_seconds=600, clock=clock)
    store.add(("chat", 1), "青海省工信厅要求什么？")
    clock.now += 599
    assert store.turns(("chat", 1)) == ("青海省工信厅要求什么？",)
    store.add(("chat", 1), "内蒙古要求什么？")  # activity restarts the idle time
    clock.now += 599
    assert store.turns(("chat", 1)) == ("青海省工信厅要求什么？", "内蒙古要求什么？")
    clock.now += 601
    assert store.turns(("chat", 1)) == ()
    assert len(store) == 0


def test_store_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    store = ConversationStore(max_conversations=3, max_turns=2, clock=clock)
    for key in "abcd":
        clock.now += 1
        store.add(key, f"q-{key}")
    assert len(store) == 3 and store.turns("a") == ()
    store.add("b", "q-b2")  # b becomes the most recent: c goes next
    store.add("b", "q-b3")
    store.add("e", "q-e")
    assert store.turns("c") == () and store.turns("b") == ("q-b2", "q-b3")  # only max_turns kept
    store.clear("b")
    assert store.turns("b") == () and store.turns("d") == ("q-d",)


def test_replies_to_bot_messages_find_their_conversation() -> None:
    store = ConversationStore(max_conversations=2)
    store.link((-100, 11), (-100, 7))
    store.link((-100, 12), (-100, 8))
    assert store.conversation_of((-100, 11)) == (-100, 7)
    store.link((-100, 13), (-100, 9))  # bounded like the conversations
    assert store.conversation_of((-100, 11)) is None
    assert store.conversation_of((-100, 13)) == (-100, 9)


# ---------------------------------------------------------------- over an index
@pytest.fixture(scope="module")
def retriever(default_index: Config) -> Iterator[Retriever]:
    r = Retriever.open(default_index.index.dir, default_index)
    yield r
    r.close()


@pytest.mark.parametrize("question", ["断卡行动打掉了多少个犯罪团伙？", *NAMES_ITS_ANTECEDENT])
def test_a_topic_switch_ranks_exactly_as_asked_alone(retriever: Retriever, question: str) -> None:
    for previous in (QINGHAI, CAI):
        [(answer, rewritten)] = answer_turns(retriever.answer_many, [([previous], question)], 5)
        alone = retriever.answer(question, 5)
        assert not rewritten.used_context and rewritten.text == question
        assert [h.passage_id for h in answer.hits] == [h.passage_id for h in alone.hits]
        assert [h.score for h in answer.hits] == [h.score for h in alone.hits]


def test_a_follow_up_is_answered_as_the_question_it_continues(retriever: Retriever) -> None:
    [(answer, rewritten)] = answer_turns(retriever.answer_many, [([QINGHAI], "内蒙古呢？")], 3)
    assert rewritten.text == "内蒙古要求什么？" and answer.question == "内蒙古呢？"
    direct = retriever.answer("内蒙古要求什么？", 3)
    assert [h.passage_id for h in answer.hits] == [h.passage_id for h in direct.hits]
    assert any("内蒙古" in h.text for h in answer.hits)


def test_conversations_are_answered_turn_by_turn_and_apart(retriever: Retriever) -> None:
    results = answer_conversations(
        retriever.answer_many, [((), [QINGHAI, "内蒙古呢？", "什么时候？"]), ((BINANCE,), ["OKEx呢？"])], 3
    )
    assert [r.text for _, r in results[0]] == [QINGHAI, "内蒙古要求什么？", "内蒙古要求什么？ 什么时候？"]
    assert [r.text for _, r in results[1]] == ["OKEx怎么回应银行卡被冻结？"]
    assert [a.question for a, _ in results[0]] == [QINGHAI, "内蒙古呢？", "什么时候？"]


@pytest.mark.slow
def test_real_model_follow_ups_find_their_passages(real_retriever: Retriever) -> None:
    results = answer_conversations(
        real_retriever.answer_many,
        [((), [QINGHAI, "内蒙古呢？"]), ((), [CAI, "What did he say about carbon neutrality?"])],
        3,
    )
    assert any("举报平台" in h.text for h in results[0][1][0].hits)
    assert any("碳中和" in h.text for h in results[1][1][0].hits)


def test_service_keys_conversations_per_chat_user_and_replied_answer(default_config: Config) -> None:
    async def scenario() -> list[object]:
        retriever = Retriever.open(default_config.index.dir, default_config)
        qa = QAService(retriever, default_config)
        try:
            alice = qa.conversation_for(-100, 1)
            first = await qa.ask(QINGHAI, "zh", conversation=alice)
            qa.answered_in(-100, 501, alice)
            follow = await qa.ask("内蒙古呢？", "zh", conversation=alice)
            # Bob replies to the bot's answer to Alice: he continues her conversation.
            bob_reply = await qa.ask("新疆呢？", "zh", conversation=qa.conversation_for(-100, 2, replied_to=501))
            bob_alone = await qa.ask("新疆呢？", "zh", conversation=qa.conversation_for(-100, 2))
            more = await qa.ask(follow.question, "zh", offset=3)
            qa.conversations.clear(alice)  # /new
            fresh = await qa.ask("内蒙古呢？", "zh", conversation=alice)
            return [first, follow, bob_reply, bob_alone, more, fresh]
        finally:
            await qa.close()

    first, follow, bob_reply, bob_alone, more, fresh = asyncio.run(scenario())
    assert first.understood_as is None and first.question == QINGHAI
    assert follow.understood_as == "内蒙古要求什么？" == follow.question  # "More" pages continue it
    assert bob_reply.understood_as == "新疆要求什么？"
    assert bob_alone.understood_as is None and fresh.understood_as is None
    assert more.understood_as is None and more.offset == 3
    assert "理解为：内蒙古要求什么？" in render.to_text(render.answer_doc(follow))


# ---------------------------------------------------------------- CLI and console
def test_cli_json_conversation(default_index: Config, tmp_path: Path, cli: Callable[..., Exit]) -> None:
    config = str(write_config(tmp_path / "c.toml", corpus=default_index.corpus.dir, index=default_index.index.dir))
    stdin = f"{QINGHAI}\n内蒙古呢？\n\n内蒙古呢？\n  \nWho is Cai Kailong?\nWhat did he say?\n"
    result = cli("retrieval", "--json", "--conversation", "--config", config, stdin=stdin.encode())
    assert result.code == 0, result.err
    lines = json_lines(result.out)
    assert [d["question"] for d in lines] == [QINGHAI, "内蒙古呢？", "内蒙古呢？", CAI, "What did he say?"]
    assert [d["understood_as"] for d in lines] == [
        QINGHAI,
        "内蒙古要求什么？",
        "内蒙古呢？",  # a blank line started a new conversation
        CAI,
        "Who is Cai Kailong? What did he say?",
    ]
    assert all({"question", "answered", "confidence", "results", "understood_as"} == set(d) for d in lines)
    assert lines[1]["results"] and "citation" in lines[1]["results"][0]

    bad = cli("retrieval", "--conversation", "--config", config, "内蒙古呢？")
    assert bad.code == 2 and "Traceback" not in bad.err
    assert "--conversation reads its questions from stdin" in bad.err


def test_console_reads_follow_ups_in_context_and_new_clears_it(default_config: Config) -> None:
    lines = [QINGHAI, "内蒙古呢？", "/more", "/new", "内蒙古呢？", CAI, "What did he say about carbon neutrality?"]
    stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
    stdout = io.StringIO()
    assert asyncio.run(run_console(default_config, stdin=stdin, stdout=stdout)) == 0  # type: ignore[arg-type]
    out = stdout.getvalue()
    assert out.count("理解为：内蒙古要求什么？") == 1  # the follow-up, not /more's page nor after /new
    assert "更多段落（4–6）" in out
    assert "New conversation" in out or "已开始新的对话" in out
    assert "Understood as: What did Cai Kailong say about carbon neutrality?" in out
    assert out.index("理解为") > out.index("文章原文摘录")  # the first question stood alone


def test_config_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[conversation]\nidle_minutes = 2.5\nmax_conversations = 50\n", encoding="utf-8")
    config = load_config(path)
    assert (config.conversation.idle_minutes, config.conversation.max_conversations) == (2.5, 50)
    path.write_text("[conversation]\nmax_conversations = 0\n", encoding="utf-8")
    with pytest.raises(Exception, match="max_conversations"):
        load_config(path)
