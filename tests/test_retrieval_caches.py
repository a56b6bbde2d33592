"""What retrieval reads once and keeps (per reader: passage facts, copy groups, FAISS's own
vectors; per question: the title search) gives the answers reading afresh gives, and a new
version is answered from fresh reads. Real temporary indexes, fake embedder."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import HashEmbedder
from helpers import QUESTION, make_config, write_syndicated
from hypothesis import given, settings
from hypothesis import strategies as st

from index import publish
from index.backends import open_backend
from index.build import build_index
from index.text import normalize, terms
from retrieval import Retriever
from retrieval.fusion import title_matches
from settings import Config

ALIASED = """---
title: 气象部门提醒
source: 澎湃新闻
date: 2021-06-02
url: https://thepaper.example.cn/d
also:
  - {url: "https://weather.example.cn/e", source: 天气网, date: 2021-06-03}
---
气象部门提醒市民，六月上旬南方多地将出现持续强降雨，城市低洼地段需提前做好排水准备。
"""

QUESTIONS = [
    QUESTION,
    "新疆、青海的挖矿项目要怎么处理？",
    "6月9日之前挖矿企业要做什么？",  # a date: `dates.adjust` reads the best candidates' texts
    "最新的气象提醒说了什么？",  # recency
    "南方强降雨要做什么准备？",  # the aliased article
    "How many criminal gangs were broken up?",  # English: translation, sentence embeddings
]


@pytest.fixture
def corpus(tmp_path: Path) -> Config:
    """Copies (an edited and an exact one), an article with another URL, and an unrelated one."""
    write_syndicated(tmp_path / "corpus")
    (tmp_path / "corpus" / "weather.md").write_text(ALIASED, encoding="utf-8")
    config = make_config(tmp_path / "corpus", tmp_path / "index")
    build_index(config)
    return config


def fresh_answers(config: Config, k: int = 5) -> list:
    """Each question asked alone of a retriever opened for it: nothing cached."""
    out = []
    for question in QUESTIONS:
        retriever = Retriever.open(config.index.dir, config)
        try:
            out.append(retriever.answer(question, k))
        finally:
            retriever.close()
    return out


def test_warm_caches_and_batches_answer_like_fresh_reads(corpus: Config) -> None:
    expected = fresh_answers(corpus)
    assert any(hit.also for answer in expected for hit in answer.hits)  # copies are in play
    retriever = Retriever.open(corpus.index.dir, corpus)
    try:
        assert retriever.answer_many(QUESTIONS, 5) == expected  # cold
        assert retriever.answer_many(QUESTIONS, 5) == expected  # every fact now from the caches
        assert [retriever.answer(q, 5) for q in reversed(QUESTIONS)] == expected[::-1]
    finally:
        retriever.close()


class CountingEmbedder(HashEmbedder):
    """The test model, recording the texts of each document call (sentence embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.documents: list[list[str]] = []

    def encode_documents(self, texts):  # type: ignore[no-untyped-def]
        self.documents.append(list(texts))
        return super().encode_documents(texts)


def test_sentences_are_embedded_once_per_passage(corpus: Config) -> None:
    """An English question shares no term with most passages, so their best sentence is picked
    by sentence embeddings: the first time a passage needs them, never again for that version."""
    english = [q for q in QUESTIONS if q.isascii()]
    expected = fresh_answers(corpus)
    embedder = CountingEmbedder()
    retriever = Retriever.open(corpus.index.dir, corpus, embedder)
    try:
        first = retriever.answer_many(english, 5)
        assert embedder.documents, "the English question needs sentence embeddings"
        embedded = [sentence for call in embedder.documents for sentence in call]
        assert len(embedded) == len(set(embedded))
        calls = len(embedder.documents)
        again = [retriever.answer(q, 5) for q in english]
        assert len(embedder.documents) == calls  # asked alone, afterwards: every sentence known
        assert first == again == [a for a, q in zip(expected, QUESTIONS, strict=True) if q.isascii()]
        assert retriever.answer_many(QUESTIONS, 5) == expected
    finally:
        retriever.close()


def test_a_new_version_is_answered_from_fresh_reads(corpus: Config) -> None:
    """Renaming, redating and resourcing the article a question is answered from keeps its
    text (and maybe its passage ids); the next version must show the new citation."""
    retriever = Retriever.open(corpus.index.dir, corpus)
    try:
        before = retriever.answer_many(QUESTIONS, 5)
        path = Path(corpus.corpus.dir) / "z-daily.md"
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("新疆、青海叫停虚拟货币挖矿", "两省区叫停挖矿")
            .replace("区块链日报", "链闻日报")
            .replace("2021-06-10", "2021-06-08"),
            encoding="utf-8",
        )
        build_index(corpus)
        assert retriever.refresh()
        after = retriever.answer_many(QUESTIONS, 5)
    finally:
        retriever.close()
    assert after == fresh_answers(corpus)
    assert after != before
    cited = [h for a in after for h in a.hits if h.article_id == "z-daily.md"]
    assert cited and all(h.title == "两省区叫停挖矿" and h.source == "链闻日报" for h in cited)


def test_copies_are_whole_groups_from_the_first_read_and_the_cache(corpus: Config) -> None:
    db = sqlite3.connect(publish.current_version(corpus.index.dir).db_path)
    try:
        group_of = dict(db.execute("select passage_id, group_id from passage_groups"))
        aliased = {a for (a,) in db.execute("select distinct article_id from article_aliases")}
        article_of = dict(db.execute("select id, article_id from passages"))
        alias_rows = db.execute("select article_id, source, date, url from article_aliases").fetchall()
    finally:
        db.close()
    assert group_of and aliased
    members: dict[int, set[int]] = {}
    for passage_id, group_id in group_of.items():
        members.setdefault(group_id, set()).add(passage_id)
    with open_backend(corpus) as backend:
        reader = backend.open_reader()
        try:
            rows = reader.rows(list(article_of))
            every = sorted(article_of)
            for ids in (every[:3], every[::2], every, every[-4:], every[:3]):
                expected = set()
                for i in ids:
                    if i in group_of:
                        expected |= {(group_of[i], m) for m in members[group_of[i]]}
                    elif article_of[i] in aliased:
                        expected.add((0, i))
                got = reader.copies(ids)
                assert sorted((c.group_id, c.passage_id) for c in got) == sorted(expected)
                for c in got:
                    row = rows[c.passage_id]
                    assert (c.article_id, c.source, c.date, c.title, c.url) == (
                        row.article_id,
                        row.source,
                        row.date,
                        row.title,
                        row.url,
                    )
                    assert sorted(c.aliases) == sorted(tuple(a[1:]) for a in alias_rows if a[0] == c.article_id)
        finally:
            reader.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_cosines_equal_the_stored_embeddings_products(corpus: Config, kind: str) -> None:
    """Flat and HNSW indexes answer `cosines` from FAISS's vectors, IVF from SQLite: the
    same numbers either way, and ids that name no passage are left out."""
    config = replace(corpus, index=replace(corpus.index, faiss=kind, dir=Path(corpus.index.dir).parent / kind))
    build_index(config)
    with open_backend(config) as backend:
        reader = backend.open_reader()
        try:
            ids = [int(i) for i in reader.dense(np.ones((1, int(reader.meta["dim"])), np.float32), 40)[1][0] if i >= 0]
            rows = reader.rows(ids)
            qvec = rows[ids[0]].embedding + rows[ids[-1]].embedding
            got = reader.cosines([*ids[::-1], ids[0], 10**9], qvec)
            assert set(got) == set(ids)
            for i in ids:
                assert got[i] == pytest.approx(float(rows[i].embedding @ qvec), rel=1e-6, abs=1e-7)
        finally:
            reader.close()


WORDS = ["艾纳香", "长柄", "分布", "地区", "中国", "国", "covid", "19", "co", "vid", "the", "史"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=5, unique=True),
    st.lists(st.lists(st.sampled_from([*WORDS, " ", "的", "-", "與"]), max_size=6).map("".join), max_size=6),
    st.lists(st.floats(0.0, 5.0), min_size=len(WORDS), max_size=len(WORDS)),
)
def test_title_matches_is_title_match_of_each_title(question: list[str], titles: list[str], weights: list[float]):
    """The one search per term over all titles gives what the definition says of each title:
    the IDF share of the question's terms it holds, Chinese terms also as substrings."""
    idf = dict(zip(WORDS, weights, strict=True))
    total = sum(idf[t] for t in question)
    expected = []
    for title in titles:
        text, words = normalize(title), set(terms(title))
        held = [t for t in question if t in words or (not t.isascii() and t in text)]
        expected.append(sum(idf[t] for t in held) / total if total and title else 0.0)
    assert title_matches(question, idf, titles) == expected
