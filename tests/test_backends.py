"""One set of behaviour tests, run against both index backends: SQLite + FAISS (embedded) and
Milvus (Milvus Lite in a temporary file, through pymilvus: the client code a server gets).

The retriever, the build and the CLIs are the same code for both; only `[index] backend` differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import DEFAULT_CORPUS, FACT, QUESTION, Exit, make_config, write_config, write_syndicated

from index.backends import open_backend
from retrieval import Retriever
from settings import Config

BACKENDS = ("faiss", "milvus")
FACTS = [
    ("断卡行动打掉了多少个犯罪团伙？", "170余个"),
    ("青海省禁止向挖矿项目提供什么？", "场所、电力支持"),
    ("虚拟货币交易为什么很难取证？", "被动监测"),
    ("被封的微博账号现在显示什么？", "现已无法查看"),
]


def on_backend(config: Config, backend: str, workdir: Path) -> Config:
    """`config` storing its index in `backend` (Milvus Lite: a file in `workdir`)."""
    index = replace(config.index, backend=backend, milvus_uri=str(workdir / "milvus.db"), milvus_collection="qa_test")
    return replace(config, index=index)


def build(config: Config) -> None:
    with open_backend(config) as backend:
        assert backend.build().passages > 0


@pytest.fixture(params=BACKENDS)
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """The default corpus (a writable copy) indexed by one backend with the fake embedder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in DEFAULT_CORPUS.glob("*.md"):
        (corpus / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    config = on_backend(make_config(corpus, tmp_path / "index"), request.param, tmp_path)
    build(config)
    return config


def test_questions_are_answered_with_the_passage_that_holds_the_fact(backend_config: Config) -> None:
    retriever = Retriever.open(backend_config.index.dir, backend_config)
    try:
        assert retriever.reader.backend == backend_config.index.backend
        for question, fact in FACTS:
            answer = retriever.answer(question)
            assert answer.answered and fact in answer.hits[0].text, question
            assert answer.hits[0].citation and answer.hits[0].sentence
        assert retriever.answer("斷卡行動打掉了多少個犯罪團夥？").hits[0].text.count("170余个") == 1
        english = retriever.answer("What happened to the bank cards of OTC merchants?", 3)
        assert "银行卡" in english.hits[0].text and english.hits[0].lexical > 0
        assert not retriever.answer("明天巴黎的天气怎么样？").answered
    finally:
        retriever.close()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_lookups_by_id_agree_with_the_stored_rows(backend_config: Config, kind: str) -> None:
    """`cosines` and `article_of` (FAISS's vectors and an in-memory map in the embedded backend,
    whatever the FAISS kind) give what the stored rows hold; ids not in the index are left out."""
    if kind != "flat" and backend_config.index.backend != "faiss":
        pytest.skip("the FAISS kind only matters to the embedded backend")
    config = replace(backend_config, index=replace(backend_config.index, faiss=kind))
    build(config)  # a changed FAISS kind is rebuilt without re-embedding
    retriever = Retriever.open(config.index.dir, config)
    try:
        reader = retriever.reader
        rows = reader.rows(list(range(1, 2 * reader.count + 10)))
        assert len(rows) == reader.count > 10
        asked = [*sorted(rows), 10**9]
        assert reader.article_of(asked) == {i: row.article_id for i, row in rows.items()}
        qvec = retriever.embedder.encode_queries([FACTS[0][0]])[0]
        cosines = reader.cosines(asked, qvec)
        assert set(cosines) == set(rows)
        assert all(cosines[i] == pytest.approx(float(row.embedding @ qvec), abs=1e-6) for i, row in rows.items())
        assert reader.article_of([]) == {} and reader.cosines([], qvec) == {}
        if config.index.backend == "faiss":
            # A batch search (BLAS in FAISS) gives each question exactly what it gets alone:
            # its cosines, nearest first.
            qvecs = retriever.embedder.encode_queries([q for q, _ in FACTS] * 2)
            sims, ids = reader.dense(qvecs, 10)
            for row, vector in enumerate(qvecs):
                alone_sims, alone_ids = reader.dense(vector, 10)
                assert ids[row].tolist() == alone_ids[0].tolist() and sims[row].tolist() == alone_sims[0].tolist()
                found = ids[row].tolist()
                assert min(found) >= 0 and list(sims[row]) == sorted(sims[row], reverse=True)
                cosines = reader.cosines(found, vector)
                assert sims[row].tolist() == pytest.approx([cosines[i] for i in found], abs=1e-6)
    finally:
        retriever.close()


def test_both_backends_rank_alike(tmp_path: Path) -> None:
    """The same corpus in both: the same top passage for every fact, the same articles, the
    same document frequencies and neighbours."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in DEFAULT_CORPUS.glob("*.md"):
        (corpus / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    base = make_config(corpus, tmp_path / "index")
    faiss_config, milvus_config = on_backend(base, "faiss", tmp_path), on_backend(base, "milvus", tmp_path)
    build(faiss_config)
    build(milvus_config)  # the catalog is unchanged: its embeddings are synced, not recomputed
    a, b = Retriever.open(base.index.dir, faiss_config), Retriever.open(base.index.dir, milvus_config)
    try:
        assert a.reader.count == b.reader.count and a.version == b.version
        for question, _ in FACTS:
            assert a.answer(question).hits[0].passage_id == b.answer(question).hits[0].passage_id
        terms = a.question(FACTS[0][0]).terms
        assert a.reader.document_frequencies(terms) == b.reader.document_frequencies(terms)
        assert [x["id"] for x in a.articles()] == [x["id"] for x in b.articles()]
        first = a.answer(FACTS[1][0]).hits[0]
        assert [r.id for r in a.context(first.passage_id)] == [r.id for r in b.context(first.passage_id)]
        assert sorted(a.reader.vocabulary()) == sorted(b.reader.vocabulary())
    finally:
        a.close()
        b.close()


def test_an_edited_article_is_served_after_a_rebuild_and_the_index_checks_clean(backend_config: Config) -> None:
    retriever = Retriever.open(backend_config.index.dir, backend_config)
    try:
        before = retriever.version
        path = next(Path(backend_config.corpus.dir).glob("*.md"))
        path.write_text(path.read_text(encoding="utf-8").replace("170余个", "180余个"), encoding="utf-8")
        (Path(backend_config.corpus.dir) / "extra.md").write_text(
            "---\ntitle: 内蒙古\nsource: 新华网\ndate: 2021-06-20\n---\n\n"
            "内蒙古要求全面清理虚拟货币挖矿项目，限期退出。\n",
            encoding="utf-8",
        )
        build(backend_config)
        assert retriever.refresh() and retriever.version != before
        assert "180余个" in retriever.answer(QUESTION).hits[0].text
        assert not any("170余个" in h.text for h in retriever.answer(QUESTION, 10).hits)
        assert "限期退出" in retriever.answer("内蒙古要求清理什么项目？").hits[0].text
        with open_backend(backend_config) as backend:
            version, problems = backend.check()
        assert version == retriever.version and problems == []
    finally:
        retriever.close()


def test_copies_are_quoted_once_with_the_others_cited(backend_config: Config, tmp_path: Path) -> None:
    corpus = tmp_path / "syndicated"
    write_syndicated(corpus)
    config = replace(backend_config, corpus=replace(backend_config.corpus, dir=corpus))
    config = replace(config, index=replace(config.index, dir=tmp_path / "index2", milvus_collection="qa_copies"))
    build(config)
    retriever = Retriever.open(config.index.dir, config)
    try:
        top = retriever.search(QUESTION, k=3)[0]
        assert FACT in top.text and top.source == "区块链日报"
        assert {a.source for a in top.also} == {"新浪财经", "金色财经"}
        assert retriever.reader.duplicate_groups() > 0
    finally:
        retriever.close()


def test_the_clis_work_on_either_backend(
    backend_config: Config, tmp_path: Path, cli: Callable[..., Exit], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index info`, `index check` and `retrieval --json` on a config file naming the backend;
    info names it and never prints the token."""
    index = backend_config.index
    config_file = write_config(
        tmp_path / "config.toml",
        corpus=backend_config.corpus.dir,
        index=index.dir,
        index_settings={
            "backend": index.backend,
            "milvus_uri": index.milvus_uri,
            "milvus_collection": index.milvus_collection,
        },
    )
    monkeypatch.setenv("MILVUS_TOKEN", "root:s3cret-token")
    info = cli("index", "info", "--config", str(config_file))
    assert info.code == 0, info.err
    described = json.loads(info.out)
    assert described["backend"] == backend_config.index.backend and "s3cret" not in info.out
    assert described["summary"]["articles"] == 1
    check = cli("index", "check", "--config", str(config_file))
    assert check.code == 0 and check.out.strip().endswith(": ok"), check.err
    answer = cli("retrieval", "--json", QUESTION, "--config", str(config_file))
    assert answer.code == 0, answer.err
    assert FACT in json.loads(answer.out)["results"][0]["text"]


def test_switching_backends_re_embeds_nothing(tmp_path: Path) -> None:
    """faiss → milvus → faiss on one catalog: no passage is embedded again. In Milvus mode the
    catalog's FAISS file is exact (no IVF training per build); switching back rebuilds it for the
    [index] settings."""
    from index import publish, store

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in DEFAULT_CORPUS.glob("*.md"):
        (corpus / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    base = make_config(corpus, tmp_path / "index")
    base = replace(base, index=replace(base.index, faiss="ivf"))
    faiss_config, milvus_config = on_backend(base, "faiss", tmp_path), on_backend(base, "milvus", tmp_path)

    def build_kind(config: Config) -> tuple[int, str]:
        with open_backend(config) as backend:
            report = backend.build()
        db = store.open_db(publish.require_current(config.index.dir).db_path, readonly=True)
        try:
            return report.embedded, store.get_meta(db)["faiss"]
        finally:
            db.close()

    first = build_kind(faiss_config)
    assert first[0] > 0 and first[1] == "ivf"
    assert build_kind(milvus_config) == (0, "flat")
    assert build_kind(faiss_config) == (0, "ivf")
    retriever = Retriever.open(base.index.dir, faiss_config)
    try:
        assert FACTS[0][1] in retriever.answer(FACTS[0][0]).hits[0].text
    finally:
        retriever.close()
