"""Dates in questions: parsing (zh-Hans, zh-Hant, en, relative, recency) and the preference
they give passages of a story that develops over weeks (real temporary index, fake embedder)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from helpers import make_config

from bench.many import STORY, STORY_QUESTIONS
from bench.many import generate as generate_corpus
from index.backends import open_backend
from index.build import build_index
from retrieval import Retriever
from retrieval.dates import DateQuery, Period, adjust, parse_question, periods_in, reference_date

NEWEST = date(2021, 7, 20)


def day(text: str) -> Period:
    d = date.fromisoformat(text)
    return Period(d, d)


def month(year: int, m: int, last: int) -> Period:
    return Period(date(year, m, 1), date(year, m, last))


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("5月12日管理办法有什么消息？", DateQuery((day("2021-05-12"),))),
        ("2021年5月27日有什么进展？", DateQuery((day("2021-05-27"),))),
        ("六月九日发生了什么", DateQuery((day("2021-06-09"),))),
        ("6月15日有什麼進展？", DateQuery((day("2021-06-15"),))),
        ("2021年5月的消息", DateQuery((month(2021, 5, 31),))),
        ("7月份执行得怎么样？", DateQuery((month(2021, 7, 31),))),
        ("十二月有什么消息", DateQuery((month(2020, 12, 31),))),  # after the newest article: the year before
        ("上个月有什么消息？", DateQuery((month(2021, 6, 30),))),
        ("上個月有什麼消息？", DateQuery((month(2021, 6, 30),))),
        ("What happened on June 15?", DateQuery((day("2021-06-15"),))),
        ("What happened on 9 June 2021?", DateQuery((day("2021-06-09"),))),
        ("What was announced in May 2021?", DateQuery((month(2021, 5, 31),))),
        ("What happened last month?", DateQuery((month(2021, 6, 30),))),
        ("What happened yesterday?", DateQuery((day("2021-07-19"),))),
        ("最新的进展是什么？", DateQuery(recency=1)),
        ("最近有什么消息", DateQuery(recency=1)),
        ("What is the latest on the rules?", DateQuery(recency=1)),
        ("最早是什么时候提出的？", DateQuery(recency=-1)),
        ("When were the rules first proposed?", DateQuery(recency=-1)),
        # no date: "May" the verb, a duration, plain questions
        ("May I ask who regulates mining?", DateQuery()),
        ("过渡期是六个月吗？", DateQuery()),
        ("断卡行动打掉了多少个犯罪团伙？", DateQuery()),
    ],
)
def test_questions_name_dates_periods_and_recency(question: str, expected: DateQuery) -> None:
    assert parse_question(question, NEWEST) == expected


def test_passages_mention_dates_relative_to_their_article() -> None:
    text = "也是在昨天，虚拟货币交易所被屏蔽。截至9日15时，共打掉团伙170余个。此前的5月21日，会议强调。"
    found = periods_in(text, date(2021, 6, 10), days_alone=True)
    assert set(found) == {day("2021-06-09"), day("2021-05-21")}
    assert periods_in("28日", date(2021, 6, 10), days_alone=True) == [day("2021-05-28")]


@pytest.fixture(scope="module")
def story_index(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The generated multi-article corpus (copies, commentaries, the dated story)."""
    tmp = tmp_path_factory.mktemp("story")
    corpus = generate_corpus(tmp / "corpus", seed=5)
    config = make_config(tmp / "corpus", tmp / "index")
    build_index(config)
    retriever = Retriever.open(config.index.dir, config)
    yield corpus, config, retriever
    retriever.close()


def test_date_questions_prefer_the_passages_of_that_date(story_index) -> None:  # type: ignore[no-untyped-def]
    corpus, _, retriever = story_index
    answers = retriever.answer_many([q for q, _ in STORY_QUESTIONS], 3)
    top = [a.hits[0].article_id for a in answers]
    expected = [corpus.story_ids[step] for _, step in STORY_QUESTIONS]
    right = sum(t == e for t, e in zip(top, expected, strict=True))
    assert right >= len(STORY_QUESTIONS) - 2, list(zip(top, expected, strict=True))
    latest = retriever.answer("最新的数字资产交易平台管理办法进展是什么？", 3)
    assert latest.hits[0].date == STORY[-1][0]


def _dated(reader):  # type: ignore[no-untyped-def]
    """What `adjust` reads from an index: its newest date, and passage id → (text, date)."""
    reference = reference_date(a["date"] for a in reader.articles())
    return reference, lambda ids: {i: (row.text, row.date) for i, row in reader.rows(ids).items()}


def test_recency_words_order_equally_relevant_passages_by_date(story_index) -> None:  # type: ignore[no-untyped-def]
    corpus, config, _ = story_index
    reader = open_backend(config).open_reader()
    try:
        ids = [i for article in sorted(corpus.story_ids, reverse=True) for i in reader.neighbours(article, 0, 0, 1000)]
        tied = np.zeros(len(ids))
        reference, rows = _dated(reader)
        latest = adjust(
            parse_question("最新的数字资产交易平台管理办法进展是什么？", reference), reference, ids, tied, rows
        )
        first = "When were the digital asset trading platform rules first proposed?"
        earliest = adjust(parse_question(first, reference), reference, ids, tied, rows)
    finally:
        reader.close()
    # The ids were read newest first (the story's file names are their dates).
    assert list(np.argsort(-latest, kind="stable")) == list(range(len(ids)))
    assert list(np.argsort(-earliest, kind="stable")) == list(reversed(range(len(ids))))


def test_questions_without_dates_keep_their_scores(story_index) -> None:  # type: ignore[no-untyped-def]
    corpus, config, _ = story_index
    reader = open_backend(config).open_reader()
    try:
        ids = [i for article in corpus.story_ids for i in reader.neighbours(article, 0, 0, 1000)][:20]
        fused = np.linspace(3.0, -1.0, len(ids))
        reference, rows = _dated(reader)
        same = adjust(parse_question("数字资产交易平台管理办法规定了什么？", reference), reference, ids, fused, rows)
        dated = adjust(
            parse_question("6月15日数字资产交易平台管理办法规定了什么？", reference), reference, ids, fused, rows
        )
    finally:
        reader.close()
    assert same is fused
    assert dated.shape == fused.shape and np.all(dated >= fused)


def test_dates_need_no_dated_articles(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("6月15日，海川市正式发布管理办法，自7月1日起施行。\n", encoding="utf-8")
    config = make_config(corpus, tmp_path / "index")
    build_index(config)
    retriever = Retriever.open(config.index.dir, config)
    try:
        assert "海川市" in retriever.answer("6月15日发布了什么？").hits[0].text
    finally:
        retriever.close()
