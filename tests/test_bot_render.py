"""The HTML builder: always valid Telegram HTML, within 4096 units, trimmed at sentences.

Validity is judged by the independent Telegram-HTML parser in `fake_telegram`, not by the
renderer's own bookkeeping.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopback.fake_telegram import parse_html, utf16_len
from retrieval import Hit, PassageRow, format_citation
from telegram_bot import render
from telegram_bot.pipeline import Kind, Library, Reply

ALLOWED = {"b", "a", "blockquote"}

# Text that stresses escaping, sentence splitting and UTF-16 counting.
_PIECES = st.one_of(
    st.sampled_from(
        [
            "<",
            ">",
            "&",
            "&amp;",
            "&lt;",
            "<b>",
            "</b>",
            "</blockquote>",
            "<script>",
            '"',
            "'",
            "。",
            "！",
            "？",
            ".",
            "…",
            "；",
            "，",
            "\n",
            " ",
            "😀",
            "𠀀",
            "\u200b",
            "\x00",
            "\x1b",
            "\ud800",
            "中文",
            "abc ",
        ]
    ),
    st.text(max_size=30),
    st.text(alphabet="断卡行动打掉了多少个犯罪团伙。", min_size=1, max_size=200),
)
TEXT = st.lists(_PIECES, max_size=120).map("".join)
LONG_TEXT = st.one_of(TEXT, st.builds(lambda s, n: s * n, TEXT, st.integers(1, 200)))


@st.composite
def hits(draw: st.DrawFn, rank: int) -> Hit:
    text = draw(LONG_TEXT)
    a, b = sorted(draw(st.tuples(st.integers(0, len(text) + 3), st.integers(0, len(text) + 3))))
    title, section, source = draw(TEXT), draw(TEXT), draw(TEXT)
    date = draw(st.sampled_from(["2021-06-10", "", "<2021>"]))
    url = draw(
        st.sampled_from(
            [
                "",
                "https://example.com/x?a=1&b=2",
                'javascript:alert("x")',
                "https://example.com/" + "a" * 3000,
                'https://e.com/"><script>',
            ]
        )
    )
    paragraph = draw(st.integers(1, 500))
    return Hit(
        rank=rank,
        score=1.0,
        text=text,
        title=title,
        article_id="a.md",
        section=section,
        paragraph=paragraph,
        paragraph_end=paragraph + draw(st.integers(0, 2)),
        citation=format_citation(source, date, title, section, paragraph, paragraph),
        url=url,
        date=date,
        source=source,
        passage_id=rank,
        ordinal=rank,
        highlight_start=a,
        highlight_end=b,
        dense=0.5,
        lexical=1.0,
    )


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    kind = draw(st.sampled_from(list(Kind)))
    count = draw(st.integers(1, 12)) if kind in (Kind.ANSWER, Kind.UNSURE, Kind.WEAK) else 0
    found = tuple(draw(hits(i + 1)) for i in range(count))
    question = draw(TEXT)
    return Reply(
        kind,
        draw(st.sampled_from(["zh", "en", "fr"])),
        question=question,
        hits=found,
        offset=draw(st.integers(0, 40)),
        has_more=draw(st.booleans()),
        truncated=draw(st.booleans()),
    )


def check(markup: str) -> str:
    parsed = parse_html(markup)  # raises on anything Telegram would reject
    assert parsed.length <= 4096, parsed.length
    assert set(parsed.tags) <= ALLOWED, parsed.tags
    assert parsed.text.strip()
    return parsed.text


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(replies())
def test_answer_html_is_always_valid_balanced_and_within_4096(reply: Reply) -> None:
    markup = render.to_html(render.answer_doc(reply))
    text = check(markup)
    assert markup.count("<blockquote>") <= max(len(reply.hits), 0)
    if reply.kind is Kind.WEAK:
        assert markup.count("<blockquote>") <= 1
    assert "<script>" not in markup
    plain = render.html_to_plain(render.answer_doc(reply))
    assert utf16_len(plain) <= 4096 and plain == text


def as_row(hit: Hit, passage_id: int) -> PassageRow:
    return PassageRow(
        id=passage_id,
        article_id=hit.article_id,
        ordinal=passage_id,
        section=hit.section,
        paragraph=hit.paragraph,
        paragraph_end=hit.paragraph_end,
        text=hit.text,
        terms="",
        embedding=np.zeros(4, dtype=np.float32),
        title=hit.title,
        source=hit.source,
        date=hit.date,
        url=hit.url,
        sentences="[]",
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hits(1), min_size=1, max_size=5), st.integers(0, 4))
def test_context_source_and_inline_messages_are_valid(found: list[Hit], focus: int) -> None:
    rows = [as_row(hit, i) for i, hit in enumerate(found)]
    check(render.to_html(render.context_doc("en", rows, focus)))
    check(render.to_html(render.source_doc("zh", rows[0])))
    reply = Reply(Kind.ANSWER, "zh", hits=tuple(found))
    check(render.to_html(render.passage_doc(reply, 0)))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"title": TEXT, "source": TEXT, "date": TEXT, "url": TEXT, "passages": st.integers(0, 10**6)}
        ),
        max_size=400,
    )
)
def test_sources_list_is_valid_and_says_how_many_were_left_out(articles: list[dict[str, object]]) -> None:
    library = Library("v1", tuple(articles))
    text = check(render.to_html(render.sources_doc("en", library)))
    shown = text.count("\n•") + text.startswith("•")
    page = min(len(articles), render.SOURCES_PAGE)  # the first page
    if shown < page:
        assert f"…and {page - shown} more." in text


SENTENCES = st.lists(
    st.text(alphabet="区块链挖矿监管交易所", min_size=5, max_size=80).map(lambda s: s + "。"),
    min_size=2,
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(SENTENCES, st.data(), st.integers(30, 4096))
def test_quotes_are_trimmed_at_sentence_boundaries_around_the_highlight(
    sentences: list[str], data: st.DataObject, budget: int
) -> None:
    text = "".join(sentences)
    index = data.draw(st.integers(0, len(sentences) - 1))
    start = sum(len(s) for s in sentences[:index])
    end = start + len(sentences[index])
    fitted = render.fit_quote(render.Quote(text, start, end), budget)
    assert fitted is not None
    assert fitted.units <= budget
    if len(sentences[index]) + 2 > budget:
        return  # the highlighted sentence alone is too long: it is cut, covered elsewhere
    assert fitted.mark == sentences[index]  # the answering sentence survives whole
    head = fitted.head.removeprefix("…")
    tail = fitted.tail.removesuffix("…")
    shown = head + fitted.mark + tail
    assert shown in text
    # Whole sentences only: the shown text starts and ends at sentence boundaries.
    offset = text.index(shown, max(0, start - len(head)))
    boundaries = {0, *(sum(len(s) for s in sentences[: i + 1]) for i in range(len(sentences)))}
    assert offset in boundaries and offset + len(shown) in boundaries
    assert fitted.head.startswith("…") == (offset > 0)
    assert fitted.tail.endswith("…") == (offset + len(shown) < len(text))


def test_a_highlight_longer_than_the_message_is_cut_with_an_ellipsis() -> None:
    text = "前言。" + "很长的句子，" * 2000 + "结尾。"
    fitted = render.fit_quote(render.Quote(text, 3, len(text) - 3), 500)
    assert fitted is not None and fitted.units <= 500
    assert fitted.head == "…" and fitted.mark.endswith("…") and fitted.tail == ""
    assert fitted.mark.removesuffix("…").endswith("，")  # at a clause boundary


def test_units_count_astral_characters_twice() -> None:
    assert render.units("a中😀") == 4 == utf16_len("a中😀")


def test_hostile_text_is_escaped_not_interpreted() -> None:
    hit = Hit(
        rank=1,
        score=1,
        text='<b>x</b> & <script>alert("x")</script>。第二句。',
        title="<i>T</i> & co",
        article_id="a",
        section="",
        paragraph=1,
        paragraph_end=1,
        citation="",
        url='https://e.com/?a=1&b="2"',
        date="2021-06-10",
        source="S&P",
        passage_id=1,
        ordinal=1,
        highlight_start=0,
        highlight_end=41,
        dense=1,
        lexical=1,
    )
    markup = render.to_html(render.answer_doc(Reply(Kind.ANSWER, "en", hits=(hit,))))
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in markup
    assert "<i>" not in markup and "&lt;i&gt;T&lt;/i&gt; &amp; co" in markup
    assert "<a " not in markup  # a URL with a quote in it is never put into an attribute
    text = check(markup)
    assert '<b>x</b> & <script>alert("x")</script>。' in text


def test_console_rendering_uses_the_same_document() -> None:
    hit = Hit(
        rank=1,
        score=1,
        text="第一句。答案句。第三句。",
        title="标题",
        article_id="a",
        section="节",
        paragraph=3,
        paragraph_end=3,
        citation="",
        url="https://example.com/a",
        date="2021-06-10",
        source="区块链日报",
        passage_id=1,
        ordinal=1,
        highlight_start=4,
        highlight_end=8,
        dense=1,
        lexical=1,
    )
    doc = render.answer_doc(Reply(Kind.ANSWER, "zh", hits=(hit,)))
    plain = render.to_text(doc)
    assert "> 第一句。**答案句。**第三句。" in plain
    assert "— 《区块链日报》2021-06-10 · 标题 · 节 · ¶3 <https://example.com/a>" in plain
    assert "\x1b[" in render.to_text(doc, ansi=True)
    markup = render.to_html(doc)
    assert "<blockquote>第一句。<b>答案句。</b>第三句。</blockquote>" in markup
    assert '<a href="https://example.com/a">《区块链日报》2021-06-10 · 标题 · 节 · ¶3</a>' in markup


def test_long_passages_share_the_message_and_keep_their_answering_sentences() -> None:
    found = []
    for i in range(3):
        filler = "".join(f"第{i}篇第{n}句的背景内容相当冗长。" for n in range(200))
        answer = f"答案句{i}：共打掉违法犯罪团伙170余个。"
        text = filler + answer + filler
        found.append(
            Hit(
                rank=i + 1,
                score=1,
                text=text,
                title="标题",
                article_id="a",
                section="",
                paragraph=i + 1,
                paragraph_end=i + 1,
                citation="",
                url="",
                date="2021-06-10",
                source="区块链日报",
                passage_id=i,
                ordinal=i,
                highlight_start=len(filler),
                highlight_end=len(filler) + len(answer),
                dense=1,
                lexical=1,
            )
        )
    markup = render.to_html(render.answer_doc(Reply(Kind.ANSWER, "zh", hits=tuple(found))))
    text = check(markup)
    assert utf16_len(text) > 3500  # the room is used, not wasted
    assert markup.count("<blockquote>…") == 3 and markup.count("…</blockquote>") == 3
    for i in range(3):
        assert f"<b>答案句{i}：共打掉违法犯罪团伙170余个。</b>" in markup


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("usem3", "usem3"),
        ("intfloat/multilingual-e5-small", "intfloat/multilingual-e5-small"),  # a hub name
        ("/srv/private/models/e5-small", "e5-small"),
        ("~/models/e5-small", "e5-small"),
        ("./models/e5-small", "e5-small"),
    ],
)
def test_about_names_a_local_model_by_its_folder_only(model: str, shown: str) -> None:
    library = Library("v1", (), {"model": model, "passages": 3})
    text = render.html_to_plain(render.about_doc("en", library, "1.0"))
    assert shown in text
    assert "/srv" not in text and "~" not in text and "./" not in text
