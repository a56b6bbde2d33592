"""The "not covered" decision (retrieval.decide): what a question asks for in three scripts,
answer-type expressions in passages, the features, the policy, and the decision on an index
of the default article built with the fake embedder."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from helpers import DEFAULT_CORPUS, make_config

from index.text import segment_for_index
from retrieval import Retriever
from retrieval.decide import FEATURES, Evidence, Policy, features, type_evidence
from retrieval.model import Confidence
from retrieval.question import KINDS, Question, answer_kind, kind_nouns


@pytest.mark.parametrize(
    ("questions", "kind"),
    [
        (("火币有多少用户？", "火幣有多少用戶？", "How many users does Huobi have?"), "count"),
        (("比特大陆的市值是多少？", "比特大陸的市值是多少？", "What is Bitmain's market value?"), "amount"),
        (("矿机的价格是多少？", "礦機的價格是多少？", "How much does a mining machine cost?"), "amount"),
        (("以太坊什么时候转PoS？", "以太坊什麼時候轉PoS？", "When will Ethereum switch to proof of stake?"), "date"),
        (("停产整顿要持续多久？", "停產整頓要持續多長時間？", "How long will the shutdown last?"), "duration"),
        (("币安的创始人是谁？", "幣安的創始人是誰？", "Who founded Binance?"), "person"),
        (("火币的总部在哪里？", "火幣的總部在哪裡？", "Where is Huobi headquartered?"), "place"),
        (("为什么交易很难取证？", "為什麼交易很難取證？", "Why is it hard to gather evidence?"), "reason"),
        (("如何把比特币卖成人民币？", "如何把比特幣賣成人民幣？", "How do I sell bitcoin for yuan?"), "procedure"),
        (("OTC交易是什么意思？", "OTC交易是什麼意思？", "What does OTC trading mean?"), "definition"),
        (("青海省禁止向挖矿项目提供什么？", "青海省禁止向挖礦項目提供什麼？", "What did Qinghai ban?"), None),
    ],
)
def test_answer_type_in_simplified_traditional_and_english(questions, kind):
    assert [getattr(answer_kind(q), "name", None) for q in questions] == [kind] * 3


@pytest.mark.parametrize(
    ("kind", "passage", "terms", "expected"),
    [
        ("count", "截至9日15时，共打掉违法犯罪团伙170余个。", ["团伙"], 1.0),
        ("count", "截至9日15時，共打掉違法犯罪團夥170餘個。", ["团伙"], 1.0),  # traditional passage
        ("count", "内蒙古发改委发布了八项措施。", ["措施"], 1.0),  # Chinese numeral with a unit
        ("count", "违法犯罪团伙被打掉。" + "监管越来越严。" * 6 + "北京等23个省区市参与。", ["团伙"], 0.5),  # far away
        ("count", "火币、抹茶等交易所不再对大陆新用户开放合约。", ["火币", "用户"], 0.0),
        ("count", "比特大陆将在成都举办一场会议，另一家厂商也宣布出海。", ["比特大陆"], 0.0),  # "一场" is no count
        ("date", "比特大陆将于6月19日在成都举办一场闭门会议。", ["比特大陆"], 1.0),
        ("date", "嘉楠科技宣布，6月上旬将在哈萨克斯坦启动自营挖矿。", ["嘉楠"], 1.0),
        ("date", "比特大陆会建设北美稳定优质的大负荷矿场。", ["比特大陆"], 0.0),
        ("duration", "昌吉州要求停产整顿三个月。", ["停产"], 1.0),
        ("duration", "條約有效期為二十年。", ["有效期"], 1.0),
        ("duration", "整改须在48小时内完成。", ["整改"], 1.0),
        ("duration", "昌吉州6月9日要求停产，2021年完成整顿。", ["停产"], 0.0),  # dates are no span of time
        ("amount", "当地电价约为每度0.3元。", ["电价"], 1.0),
        ("amount", "比特大陆会建设北美稳定优质的大负荷矿场。", ["比特大陆"], 0.0),
        ("person", "陈晓华向记者表示，这将是一项严峻的挑战。", ["挑战"], 1.0),
        ("person", "区块链专业委员会主任委员陈晓华接受采访。", ["区块链"], 1.0),
        ("person", "国务院金融稳定发展委员会召开第五十一次会议。", ["会议"], 0.0),  # a committee is no person
        ("reason", "因为碳中和的目标，挖矿不利于环境。", ["挖矿"], 1.0),
        (None, "任何段落。", [], 1.0),  # nothing asked: no evidence needed
    ],
)
def test_type_evidence_finds_numbers_dates_and_titles_near_the_question_words(kind, passage, terms, expected):
    assert type_evidence(KINDS.get(kind), passage, terms) == expected


def _evidence(question: str, passage: str, df: dict[str, int], passages: int = 40) -> Evidence:
    return Evidence(
        question=Question.analysed(question, question, list(df), df, passages),
        passage=passage,
        passage_terms=segment_for_index(passage),
        dense=np.array([0.4, 0.2, 0.1]),
        top_dense=0.4,
    )


def test_features_see_what_the_passage_lacks():
    passage = "今天（10日），记者从比特大陆相关方面获悉，比特大陆将于6月19日在成都举办一场闭门定向邀请会议。"
    asked = features(_evidence("比特大陆的会议在哪天举办？", passage, {"比特": 5, "大陆": 3, "会议": 2, "举办": 1}))
    near = features(_evidence("比特大陆的市值是多少？", passage, {"比特": 5, "大陆": 3, "市值": 0}))
    assert set(asked) == set(near) == set(FEATURES)
    assert all(0.0 <= v <= 1.0 for v in (*asked.values(), *near.values()))
    assert asked["number"] == 1.0 and asked["coverage"] == pytest.approx(1.0)
    assert asked["known"] == asked["focused"] == asked["rare"] == 1.0
    # 市值 is in no passage: the question's rarest term, its focus and a word no article uses;
    # and no amount of money stands in the passage
    assert near["rare"] < 1.0 and near["focused"] == 0.0 and near["known"] < 1.0 and near["number"] == 0.0
    assert near["coverage"] < asked["coverage"]


def test_gap_is_the_most_specific_thing_the_passage_lacks():
    """One missing role word ("厅长") is not made up for by the topic words present; a
    number written another way, or a word jieba glued from neighbours, is no gap."""
    passage = "青海省工信厅要求各市各州，对现有的各类虚拟货币“挖矿”项目全面关停。"
    df = {"青海省": 2, "工信厅": 2, "要求": 5, "厅长": 0}
    answered = features(_evidence("青海省工信厅要求什么？", passage, {t: df[t] for t in ("青海省", "工信厅", "要求")}))
    lacking = features(_evidence("青海省工信厅厅长是谁？", passage, {t: df[t] for t in ("青海省", "工信厅", "厅长")}))
    assert answered["gap"] == 1.0 and lacking["gap"] < 0.5
    assert lacking["coverage"] > 0.5  # a share of the question's words still looks fine
    dated = "5月25日，内蒙古发改委发布八项措施。"
    numbered = _evidence("五月二十五日内蒙古发改委发布了什么？", dated, {"五月二十五日": 0, "内蒙古": 3})
    assert features(numbered)["gap"] == 1.0
    # "会为": jieba's unknown-word model gluing 会 and 为; only common characters
    glued = _evidence("比特大陆会为矿工提供什么？", "比特大陆为矿工提供便利。", {"会为": 0, "比特大陆": 2, "矿工": 3})
    assert features(glued)["gap"] > 0.5


def test_nouns_naming_the_kind_of_answer_need_not_be_in_the_passage():
    """The "职务" of "担任什么职务" is answered by a title, not repeated; "厅长" must be there."""
    passage = "中国移动通信联合会区块链专业委员会主任委员陈晓华接受记者采访。"
    role = features(_evidence("陈晓华担任什么职务？", passage, {"陈晓华": 2, "担任": 3, "职务": 0}))
    asked = features(_evidence("陈晓华的厅长职务是什么？", passage, {"陈晓华": 2, "厅长": 0, "职务": 0}))
    assert role["gap"] > asked["gap"] and asked["gap"] < 0.5


@pytest.mark.parametrize(
    ("question", "nouns"),
    [
        ("嘉楠科技要在哪個國家啟動自營挖礦？", {"国家"}),
        ("币安是哪一家公司？", {"公司"}),
        ("陈晓华担任什么职务？", {"职务"}),
        ("Which country will Canaan mine in?", {"country"}),
        ("什么是区块链？", set()),
        ("青海省要求什么？", set()),
        ("What did Binance say?", set()),
    ],
)
def test_the_word_after_a_determining_question_word_names_the_kind_of_answer(question, nouns):
    assert kind_nouns(question) == nouns


def test_a_passage_answering_which_country_need_not_say_country():
    passage = "此前另一家矿机制造商嘉楠科技也宣布，6月上旬将在哈萨克斯坦启动自营挖矿。"
    df = {"嘉楠": 1, "科技": 3, "国家": 2, "启动": 1, "自营": 1, "挖矿": 9}
    which = features(_evidence("嘉楠科技要在哪个国家启动自营挖矿？", passage, df))
    assert which["gap"] == which["coverage"] == 1.0
    lacking = features(_evidence("嘉楠科技在哪个国家的工厂启动自营挖矿？", passage, df | {"工厂": 2}))
    assert lacking["gap"] < 1.0 and lacking["coverage"] < 1.0


def test_a_noun_asked_for_by_name_must_be_in_the_passage_a_class_noun_need_not():
    """ "哪个城市" is answered by "成都"; "哪家酒店" only by a passage naming a hotel."""
    passage = "比特大陆将于6月19日在成都举办出海会议。"
    df = {"比特大陆": 2, "会议": 3, "举办": 2}
    city = features(_evidence("比特大陆的会议在哪个城市举办？", passage, df | {"城市": 1}))
    hotel = features(_evidence("比特大陆的会议在哪家酒店举办？", passage, df | {"酒店": 1}))
    named = features(_evidence("比特大陆的会议在哪家酒店举办？", "比特大陆的会议在成都某酒店举办。", df | {"酒店": 1}))
    assert city["gap"] == city["coverage"] == 1.0
    assert hotel["gap"] < 0.5 and hotel["coverage"] < 1.0
    assert named["gap"] == 1.0


def test_an_expression_the_question_holds_is_not_its_answer():
    """ "第五轮" in the passage repeats the question's own words; it does not say how many."""
    df = {"断卡": 2, "行动": 3, "收网": 2}
    question = "断卡行动第五轮收网抓了多少人？"
    repeats = features(_evidence(question, "全国断卡行动开展第五轮集中收网。", df))
    answers = features(_evidence(question, "全国断卡行动开展第五轮集中收网，抓获1200人。", df))
    assert repeats["number"] == 0.0
    assert answers["number"] == 1.0


def test_focused_needs_the_answer_kind_next_to_what_is_asked_about():
    """A date next to the topic ("发布") does not say when the measures take effect ("实施")."""
    passage = "5月25日，内蒙古发改委发布八项措施，6月1日起正式实施。"
    published = "5月25日，内蒙古发改委发布八项措施（征求意见稿）。"
    df = {"内蒙古": 3, "措施": 4, "实施": 2}
    answers = features(_evidence("什么时候实施内蒙古的措施？", passage, df))
    lacks = features(_evidence("什么时候实施内蒙古的措施？", published, df))
    assert answers["focused"] == answers["number"] == 1.0
    assert lacks["number"] == 1.0 and lacks["focused"] == 0.0  # a date, but not the asked one


_TIED = """
import numpy as np
from index.text import segment_for_index
from retrieval.decide import Evidence, features
from retrieval.question import Question
passage = "矿场" + "监管越来越严。" * 6 + "北美6月19日开会。"
df = {"矿场": 2, "北美": 2}
q = Question.analysed("矿场和北美什么时候？", "矿场和北美什么时候？", list(df), df, 40)
e = Evidence(q, passage, segment_for_index(passage), np.array([0.4, 0.2]), 0.4)
print(features(e)["number"])
"""


def test_the_decision_does_not_depend_on_the_hash_seed():
    """Two shared terms equally rare: the anchor is the first in question order, in every
    process (a set's order follows PYTHONHASHSEED)."""
    processes = [  # started side by side: most of each is interpreter start-up
        subprocess.Popen(
            [sys.executable, "-c", _TIED],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(6)
    ]
    found = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert [process.returncode for process in processes] == [0] * 6
    assert found == {"0.5"}  # 矿场, asked first, is far from the date


def test_typed_features_need_the_answer_kind_and_the_questions_words_together():
    """`typed` is the answer-kind evidence times the coverage: a passage full of the question's
    words without the kind of answer asked scores 0, as does one with a number but none of them."""
    df = {"断卡": 2, "行动": 4, "团伙": 1}
    answers = features(_evidence("断卡行动打掉了多少个团伙？", "断卡行动共打掉违法犯罪团伙170余个。", df))
    words_only = features(_evidence("断卡行动打掉了多少个团伙？", "断卡行动打掉了违法犯罪团伙。", df))
    number_only = features(_evidence("断卡行动打掉了多少个团伙？", "另有170余个企业被关停。", df))
    assert answers["typed"] == pytest.approx(answers["coverage"]) and answers["typed"] > 0.9
    assert answers["typed_rare"] == pytest.approx(answers["rare"]) == pytest.approx(1.0)
    assert words_only["coverage"] == pytest.approx(answers["coverage"]) and words_only["typed"] == 0.0
    assert words_only["typed_rare"] == 0.0 and number_only["coverage"] == number_only["typed"] == 0.0


def test_policy_grades_the_weighted_features_against_two_thresholds():
    n = len(FEATURES)
    policy = Policy(weights=dict.fromkeys(FEATURES, 1.0), threshold=n - 2.5, sure=n - 0.5)
    everything = dict.fromkeys(FEATURES, 1.0)
    assert policy.confidence(everything) is Confidence.SURE
    assert policy.confidence(everything | {"number": 0.0}) is Confidence.UNSURE
    assert policy.confidence(everything | {"number": 0.0, "gap": 0.0, "rare": 0.0}) is Confidence.NOT_COVERED
    config = make_config(DEFAULT_CORPUS, DEFAULT_CORPUS).retrieval
    fitted = Policy.from_config(config)
    assert fitted.threshold == config.evidence_threshold > 0
    assert fitted.sure == config.sure_threshold > fitted.threshold
    assert all(fitted.weights[name] == getattr(config, f"evidence_{name}") >= 0 for name in FEATURES)
    # A sure threshold below the other one leaves no unsure grade, never an inverted one.
    assert Policy.from_config(replace(config, sure_threshold=0.0)).sure == config.evidence_threshold


@pytest.fixture(scope="module")
def retriever(default_index):
    r = Retriever.open(default_index.index.dir, default_index)
    yield r
    r.close()


def test_near_topic_question_is_flagged_and_an_answerable_one_is_not(retriever):
    near, answerable = retriever.answer_many(["比特大陆的市值是多少？", "断卡行动打掉了多少个犯罪团伙？"])
    assert "170余个" in answerable.hits[0].text and answerable.answered
    assert near.hits and not near.answered  # the closest passages are still there, as weak matches
    assert set(near.features) == set(FEATURES)
    assert near.features["number"] == 0.0 and answerable.features["number"] == 1.0


def test_the_flag_follows_the_configured_policy(retriever):
    """The same retrieval decided by another policy: only the flag changes."""
    strict = replace(
        retriever.config.retrieval, evidence_threshold=len(FEATURES) * 100, sure_threshold=len(FEATURES) * 100
    )
    other = Retriever.open(retriever.config.index.dir, replace(retriever.config, retrieval=strict))
    try:
        question = "断卡行动打掉了多少个犯罪团伙？"
        mine, theirs = retriever.answer(question), other.answer(question)
        assert mine.answered and theirs.confidence is Confidence.NOT_COVERED
        assert mine.hits == theirs.hits and mine.features == theirs.features
        lenient = replace(retriever.config.retrieval, evidence_threshold=0.0, sure_threshold=len(FEATURES) * 100)
        unsure = Retriever.open(retriever.config.index.dir, replace(retriever.config, retrieval=lenient))
        try:
            answer = unsure.answer(question)
        finally:
            unsure.close()
        assert answer.confidence is Confidence.UNSURE and answer.answered and answer.hits == mine.hits
        assert answer.to_dict()["confidence"] == "unsure"
    finally:
        other.close()
