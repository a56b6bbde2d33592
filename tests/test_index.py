"""Index layer: incremental builds, re-embedding rules, atomic publish and version cleanup.

Everything is built with the fast fake embedder ("test-hash") into temporary directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import HashEmbedder
from helpers import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import read_article, split_article
from index import publish, store, vectors
from index.backends import RebuildRequiredError
from index.build import BuildError, build_index
from index.embedder import load_embedder, register_embedder
from index.text import clean, normalize, sentence_spans
from retrieval import Retriever
from settings import PROJECT_ROOT, Config, ModelConfig

ARTICLE_A = """---
title: 云南清退水电挖矿
source: 测试日报
date: 2021-06-11
---

云南省能源局通知，水电站配套的虚拟货币挖矿项目须在六月底前全部退出，逾期将被断电处理。

业内人士表示，云南丰水期电价低廉，曾吸引大量矿场入驻，此次清退影响较大。
"""
ARTICLE_A_CHANGED = ARTICLE_A + "\n另据了解，部分矿场已经开始把矿机打包运往哈萨克斯坦，准备重新开工。\n"
ARTICLE_B = """# 甘肃排查比特币矿场

甘肃省酒泉市对辖区内的比特币矿场开展排查，共发现隐蔽矿场十二处，已全部责令关停。
"""
ARTICLE_C = """# 贵州数据中心禁止托管矿机

贵州省要求数据中心不得为虚拟货币挖矿提供托管服务，违者将被列入失信名单并断电。
"""


# ---------------------------------------------------------------- helpers


def live_version(config: Config) -> publish.Version:
    version = publish.current_version(Path(config.index.dir))
    assert version is not None
    return version


def passage_rows(config: Config) -> dict[tuple[str, int], tuple[int, str]]:
    """(article id, ordinal) → (row id, text) in the live version."""
    db = store.open_db(live_version(config).db_path, readonly=True)
    try:
        rows = db.execute("select article_id, ordinal, id, text from passages").fetchall()
    finally:
        db.close()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def assert_consistent(config: Config) -> None:
    """SQLite integrity, FTS rows and FAISS ids all agree with the passages table."""
    version = live_version(config)
    db = store.open_db(version.db_path, readonly=True)
    try:
        ids = vectors.faiss_ids(vectors.read_faiss(version.faiss_path))
        assert store.integrity_problems(db, ids) == []
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def expected_passages(config: Config, *names: str) -> int:
    root = Path(config.corpus.dir)
    return sum(
        len(split_article(read_article(root / n, root), config.corpus.max_chars, config.corpus.min_chars))
        for n in names
    )


def version_dirs(config: Config) -> list[str]:
    return sorted(p.name for p in (Path(config.index.dir) / publish.VERSIONS).iterdir())


def with_index(config: Config, **changes) -> Config:
    return replace(config, index=replace(config.index, **changes))


def with_model(config: Config, **changes) -> Config:
    return replace(config, model=replace(config.model, **changes))


# ---------------------------------------------------------------- first build


def test_first_build_publishes_a_consistent_version(hash_config):
    report = build_index(hash_config)
    n = expected_passages(hash_config, "blockchain-daily-2021-06-10-crackdown.md")
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 0, 0, 0)
    assert report.passages == report.embedded == n
    assert report.published and report.model == "test-hash" and report.faiss == "flat"
    pointer = json.loads((Path(hash_config.index.dir) / publish.POINTER).read_text(encoding="utf-8"))
    assert pointer["version"] == report.version == live_version(hash_config).name
    assert version_dirs(hash_config) == [report.version]
    db = store.open_db(live_version(hash_config).db_path, readonly=True)
    try:
        meta = store.get_meta(db)
        article = db.execute("select title, source, date, passages from articles").fetchall()
    finally:
        db.close()
    assert meta["model"] == "test-hash" and meta["passages"] == n and meta["articles"] == 1
    assert meta["dim"] == HashEmbedder().dim and meta["version"] == report.version
    assert article == [
        (
            "新疆、青海叫停虚拟货币挖矿，交易所遭屏蔽，OTC商家银行卡被冻：监管三大思路清晰",
            "区块链日报",
            "2021-06-10",
            n,
        )
    ]
    assert_consistent(hash_config)


def test_build_errors_are_reported_not_crashed(tmp_path, hash_config):
    with pytest.raises(BuildError, match="corpus directory not found"):
        build_index(make_config(tmp_path / "missing", tmp_path / "idx"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.md").write_text("")
    (bad / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(BuildError, match="no readable") as info:
        build_index(make_config(bad, tmp_path / "idx"))
    assert {s.path: s.reason for s in info.value.skipped} == {
        "empty.md": "empty file",
        "x.pdf": "unsupported file type .pdf; use .md, .txt or .html",
    }
    assert publish.current_version(tmp_path / "idx") is None


# ---------------------------------------------------------------- embedders by name


def test_a_registered_embedder_is_what_its_name_loads(tmp_path):
    """`register_embedder` is how a config chooses an embedder of another kind: the factory gets
    the `[model]` section, and a build embeds with what it returns."""
    made: list[ModelConfig] = []
    register_embedder("small-hash", lambda model: made.append(model) or HashEmbedder(dim=16))
    assert load_embedder(ModelConfig(name="small-hash", query_prompt="q: ")).dim == 16
    assert made[-1].query_prompt == "q: "
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text(ARTICLE_A, encoding="utf-8")
    config = with_model(make_config(tmp_path / "corpus", tmp_path / "index"), name="small-hash")
    report = build_index(config)
    assert report.published and report.model == "small-hash"
    db = store.open_db(live_version(config).db_path, readonly=True)
    try:
        assert store.get_meta(db)["dim"] == 16
    finally:
        db.close()


@pytest.mark.slow
def test_the_fake_embedder_is_not_built_in() -> None:
    """Without the tests' registration (`tests/fakes.py`) "test-hash" is just a model name that
    sentence-transformers would be asked for: no production config can choose the fake."""
    code = (
        "from index.embedder import load_embedder\n"
        "from settings import ModelConfig\n"
        "print(type(load_embedder(ModelConfig(name='test-hash'))).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "SentenceTransformerEmbedder"


# ---------------------------------------------------------------- incremental builds


def test_add_change_delete_is_incremental(hash_config):
    corpus = Path(hash_config.corpus.dir)
    build_index(hash_config)
    (corpus / "a.md").write_text(ARTICLE_A, encoding="utf-8")
    (corpus / "b.md").write_text(ARTICLE_B, encoding="utf-8")
    report = build_index(hash_config)
    assert (report.added, report.updated, report.removed, report.unchanged) == (2, 0, 0, 1)
    assert report.embedded == expected_passages(hash_config, "a.md", "b.md")
    before = passage_rows(hash_config)

    retriever = Retriever.open(hash_config.index.dir, hash_config)
    hits = retriever.search("酒泉市排查出多少隐蔽矿场？", k=3)
    assert hits[0].article_id == "b.md" and "十二处" in hits[0].text
    retriever.close()

    (corpus / "a.md").write_text(ARTICLE_A_CHANGED, encoding="utf-8")
    (corpus / "b.md").unlink()
    (corpus / "c.md").write_text(ARTICLE_C, encoding="utf-8")
    report = build_index(hash_config)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 1)
    assert report.embedded == expected_passages(hash_config, "a.md", "c.md")
    assert report.passages == expected_passages(hash_config, "blockchain-daily-2021-06-10-crackdown.md", "a.md", "c.md")
    after = passage_rows(hash_config)

    # The unchanged article keeps its rows (same ids, so its embeddings were reused) ...
    kept = {key: row for key, row in before.items() if key[0] == "blockchain-daily-2021-06-10-crackdown.md"}
    assert kept and all(after[key] == row for key, row in kept.items())
    # ... new rows get new ids, never those of deleted or replaced passages ...
    new_ids = [row[0] for key, row in after.items() if key[0] in {"a.md", "c.md"}]
    assert min(new_ids) > max(row[0] for row in before.values())
    # ... and the deleted article is gone.
    assert not any(key[0] == "b.md" for key in after)
    assert_consistent(hash_config)

    retriever = Retriever.open(hash_config.index.dir, hash_config)
    try:
        hits = retriever.search("酒泉市排查出多少隐蔽矿场？", k=10)
        assert hits and all(h.article_id != "b.md" for h in hits)
        assert all("酒泉" not in h.text for h in hits)
        assert "b.md" not in {a["id"] for a in retriever.articles()}
        hits = retriever.search("矿机打包运往哪里？", k=3)
        assert any(h.article_id == "a.md" and "哈萨克斯坦" in h.text for h in hits)
    finally:
        retriever.close()


def test_no_change_rebuild_publishes_nothing(built_hash_index):
    index_dir = Path(built_hash_index.index.dir)
    pointer = (index_dir / publish.POINTER).read_text(encoding="utf-8")
    dirs = version_dirs(built_hash_index)
    report = build_index(built_hash_index)
    assert not report.published and report.version is None
    assert report.embedded == 0 and report.unchanged == 1 and report.added == report.updated == 0
    assert report.passages == expected_passages(built_hash_index, "blockchain-daily-2021-06-10-crackdown.md")
    assert "nothing changed" in report.summary()
    assert (index_dir / publish.POINTER).read_text(encoding="utf-8") == pointer
    assert version_dirs(built_hash_index) == dirs


def test_changed_faiss_settings_rebuild_only_the_vectors_index(built_hash_index):
    """A new `[index] faiss` choice applies at the next build even with no article changed:
    same passage rows and embeddings, a new FAISS index, published; then nothing to do again."""
    before = passage_rows(built_hash_index)
    hnsw = with_index(built_hash_index, faiss="hnsw")
    report = build_index(hnsw)
    assert report.published and report.faiss == "hnsw" and report.embedded == 0
    assert "FAISS index rebuilt" in report.summary()
    assert passage_rows(hnsw) == before
    assert_consistent(hnsw)
    assert not build_index(hnsw).published
    assert build_index(with_index(hnsw, hnsw_m=8)).published  # a build parameter of the same kind
    assert not build_index(with_index(hnsw, hnsw_m=8, hnsw_ef_search=16)).published  # a query-time one


def test_touching_a_file_without_changing_it_is_no_change(built_hash_index):
    path = Path(built_hash_index.corpus.dir) / "blockchain-daily-2021-06-10-crackdown.md"
    path.write_bytes(path.read_bytes())
    assert not build_index(built_hash_index).published


def test_article_without_passages_is_recorded_once(built_hash_index):
    """A file with headings only yields no passage; it must still count as indexed, or every
    later build sees it as new and publishes again."""
    corpus = Path(built_hash_index.corpus.dir)
    (corpus / "headings.md").write_text("# 只有标题\n\n## 还有小节\n", encoding="utf-8")
    report = build_index(built_hash_index)
    assert report.published and report.added == 1 and report.embedded == 0
    assert not build_index(built_hash_index).published
    (corpus / "a.md").write_text(ARTICLE_A, encoding="utf-8")
    build_index(built_hash_index)
    (corpus / "a.md").write_text("# 内容被删光了\n", encoding="utf-8")
    report = build_index(built_hash_index)
    assert report.published and report.updated == 1 and report.embedded == 0
    assert not build_index(built_hash_index).published
    assert not any(key[0] == "a.md" for key in passage_rows(built_hash_index))
    assert_consistent(built_hash_index)


def test_full_rebuild_reembeds_everything_with_fresh_ids(built_hash_index):
    before = passage_rows(built_hash_index)
    report = build_index(built_hash_index, full=True)
    assert report.published
    assert report.embedded == report.passages == len(before)
    after = passage_rows(built_hash_index)
    assert [row[1] for _, row in sorted(after.items())] == [row[1] for _, row in sorted(before.items())]
    # A passage id never names two passages across versions, even after a full rebuild.
    assert min(row[0] for row in after.values()) > max(row[0] for row in before.values())
    assert_consistent(built_hash_index)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: with_model(c, document_prompt="passage: "), id="document_prompt"),
        pytest.param(lambda c: replace(c, corpus=replace(c.corpus, max_chars=80)), id="splitter"),
    ],
)
def test_embedding_settings_change_reembeds_all(built_hash_index, change):
    config = change(built_hash_index)
    report = build_index(config)
    assert report.published and report.embedded == report.passages > 0
    assert not build_index(config).published  # and the next build is incremental again


def test_model_change_reembeds_all_and_queries_must_match(built_hash_index):
    running = Retriever.open(built_hash_index.index.dir, built_hash_index)
    answer = running.answer("断卡行动打掉了多少个犯罪团伙？")
    other = with_model(built_hash_index, name="other-model")
    # The embedder is injected so no real model is loaded; the index records the config's name.
    report = build_index(other, embedder=HashEmbedder())
    assert report.published and report.embedded == report.passages > 0 and report.model == "other-model"

    # A running reader refuses to switch to vectors of another model and keeps its snapshot.
    with pytest.raises(RebuildRequiredError):
        running.refresh()
    assert running.answer("断卡行动打掉了多少个犯罪团伙？") == answer
    running.close()

    with pytest.raises(RebuildRequiredError, match="other-model") as info:
        Retriever.open(built_hash_index.index.dir, built_hash_index)
    assert "test-hash" in str(info.value) and "python -m index build" in str(info.value)

    retriever = Retriever.open(other.index.dir, other, embedder=HashEmbedder())
    try:
        assert retriever.meta["model"] == "other-model"
        assert retriever.search("断卡行动打掉了多少个犯罪团伙？")
    finally:
        retriever.close()

    back = build_index(built_hash_index)  # back to test-hash: everything again
    assert back.embedded == back.passages


# ---------------------------------------------------------------- atomic publish


def test_open_retriever_keeps_its_version_until_refresh(built_hash_index):
    config = with_index(built_hash_index, keep_versions=5)
    question = "云南水电站配套的挖矿项目什么时候退出？"
    retriever = Retriever.open(config.index.dir, config)
    try:
        old_version = retriever.version
        old_hits = retriever.search(question, k=5)
        assert all(h.article_id != "a.md" for h in old_hits)
        assert not retriever.refresh()

        (Path(config.corpus.dir) / "a.md").write_text(ARTICLE_A, encoding="utf-8")
        report = build_index(config)
        assert live_version(config).name == report.version != old_version

        # Still the old snapshot: same version, same answers.
        assert retriever.version == old_version
        assert retriever.search(question, k=5) == old_hits
        assert retriever.answer(question).version == old_version

        assert retriever.refresh()
        assert retriever.version == report.version
        assert not retriever.refresh()
        hits = retriever.search(question, k=5)
        assert hits[0].article_id == "a.md" and "六月底前全部退出" in hits[0].text
    finally:
        retriever.close()


def test_old_versions_are_cleaned_to_keep_versions(built_hash_index):
    config = with_index(built_hash_index, keep_versions=2)
    corpus = Path(config.corpus.dir)
    published = [live_version(config).name]
    for i, text in enumerate([ARTICLE_A, ARTICLE_B, ARTICLE_C]):
        (corpus / f"n{i}.md").write_text(text, encoding="utf-8")
        published.append(build_index(config).version)
    assert version_dirs(config) == sorted(published[-2:])
    assert live_version(config).name == published[-1]
    assert_consistent(config)


def test_retriever_answers_after_its_version_was_cleaned_away(built_hash_index):
    config = with_index(built_hash_index, keep_versions=1)
    question = "断卡行动打掉了多少个犯罪团伙？"
    retriever = Retriever.open(config.index.dir, config)
    try:
        answer = retriever.answer(question)
        for i, text in enumerate([ARTICLE_A, ARTICLE_B]):
            (Path(config.corpus.dir) / f"n{i}.md").write_text(text, encoding="utf-8")
            build_index(config)
        assert answer.version not in version_dirs(config)
        assert retriever.answer(question) == answer  # its open files still answer
        assert retriever.refresh() and retriever.version == live_version(config).name
    finally:
        retriever.close()


def test_next_build_removes_staging_leftovers(built_hash_index):
    index_dir = Path(built_hash_index.index.dir)
    stale = index_dir / publish.VERSIONS / "v20000101T000000000000Z-1.tmp"
    stale.mkdir()
    (stale / publish.DB_FILE).write_bytes(b"half a database")
    stray_pointer = index_dir / f".{publish.POINTER}.k2x9q1.tmp"
    stray_pointer.write_text("{", encoding="utf-8")
    live = live_version(built_hash_index).name

    report = build_index(built_hash_index)  # even a build that publishes nothing cleans up
    assert not report.published
    assert not stale.exists() and not stray_pointer.exists()
    assert version_dirs(built_hash_index) == [live]


def test_version_renamed_but_never_pointed_to_is_ignored(built_hash_index):
    """The state a build killed between renaming its staging directory and replacing CURRENT
    leaves behind: a complete version nobody points to."""
    config = with_index(built_hash_index, keep_versions=2)
    index_dir = Path(config.index.dir)
    live = live_version(config)
    name, staging = publish.new_version_dir(index_dir)
    for file in live.path.iterdir():
        shutil.copy2(file, staging / file.name)
    os.replace(staging, index_dir / publish.VERSIONS / name)
    assert live_version(config) == live
    retriever = Retriever.open(index_dir, config)
    try:
        assert retriever.version == live.name and not retriever.refresh()
    finally:
        retriever.close()
    corpus = Path(config.corpus.dir)
    for i, text in enumerate([ARTICLE_A, ARTICLE_B]):
        (corpus / f"n{i}.md").write_text(text, encoding="utf-8")
        report = build_index(config)
        assert live_version(config).name == report.version != name
        assert_consistent(config)
    assert name not in version_dirs(config)  # aged out like any old version


def test_damaged_live_database_is_rebuilt_not_fatal(built_hash_index):
    damaged = live_version(built_hash_index)
    damaged.db_path.write_bytes(b"not a database at all" * 100)
    report = build_index(built_hash_index)  # an incremental build would read it: must not crash
    assert report.published and report.version != damaged.name
    assert report.embedded == report.passages > 0
    assert_consistent(built_hash_index)


def test_unreadable_pointer_means_fresh_build(built_hash_index):
    index_dir = Path(built_hash_index.index.dir)
    (index_dir / publish.POINTER).write_text("not json", encoding="utf-8")
    assert publish.current_version(index_dir) is None
    report = build_index(built_hash_index)
    assert report.published and report.embedded == report.passages
    assert_consistent(built_hash_index)


def test_index_dir_with_uri_special_characters(tmp_path, corpus_dir):
    """Read-only SQLite opens use a URI: '?', '#' and '%' in the path must not break it."""
    config = make_config(corpus_dir, tmp_path / "idx #1 ?50% off")
    build_index(config)
    (corpus_dir / "a.md").write_text(ARTICLE_A, encoding="utf-8")
    assert build_index(config).embedded == expected_passages(config, "a.md")  # copies the live db
    assert_consistent(config)
    retriever = Retriever.open(config.index.dir, config)
    try:
        assert "170余个" in retriever.search("断卡行动打掉了多少个犯罪团伙？")[0].text
    finally:
        retriever.close()


def test_copied_index_directory_still_works(built_hash_index, tmp_path):
    """Versions are self-contained: an index directory can be moved or copied."""
    moved = tmp_path / "moved"
    shutil.copytree(built_hash_index.index.dir, moved)
    config = with_index(built_hash_index, dir=moved)
    retriever = Retriever.open(moved, config)
    try:
        assert "170余个" in retriever.search("断卡行动打掉了多少个犯罪团伙？")[0].text
    finally:
        retriever.close()
    assert not build_index(config).published


# ---------------------------------------------------------------- FAISS kinds


def test_auto_is_flat_below_the_threshold_and_ivf_from_it(hash_config):
    index = replace(hash_config.index, faiss="auto", ivf_threshold=50_000)
    assert vectors.choose_kind(index, 49_999) == "flat"
    assert vectors.choose_kind(index, 50_000) == "ivf"
    for kind in ("flat", "ivf", "hnsw"):
        assert vectors.choose_kind(replace(index, faiss=kind), 10) == kind


def test_small_ivf_index_builds_without_faiss_warnings(hash_config, capfd):
    """`faiss = "ivf"` on a 31-passage corpus: one list, trained quietly, answers right."""
    config = with_index(hash_config, faiss="ivf")
    report = build_index(config)
    assert report.faiss == "ivf"
    assert "WARNING" not in capfd.readouterr().err
    assert_consistent(config)
    retriever = Retriever.open(config.index.dir, config)
    try:
        assert "170余个" in retriever.answer("断卡行动打掉了多少个犯罪团伙？").hits[0].text
    finally:
        retriever.close()


def test_ivf_build_finds_each_passage_by_its_own_embedding(hash_config):
    """A real `faiss = "ivf"` build with several inverted lists, one probed per query: a passage's
    own embedding still finds it first (it sits in the list of its nearest centroid), and the
    retriever answers from the IVF index."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(3)
    for a in range(4):  # 160 passages of random CJK characters: well spread vectors
        paragraphs = [
            f"第{a}篇第{i}段：" + "".join(chr(c) for c in rng.integers(0x4E00, 0x4E00 + 3000, 36)) + "。"
            for i in range(40)
        ]
        (hash_config.corpus.dir / f"generated-{a}.md").write_text(
            f"# 生成的文章{a}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8"
        )
    config = with_index(hash_config, faiss="ivf", ivf_nprobe=1)
    report = build_index(config)
    assert report.faiss == "ivf" and report.passages > 160
    assert_consistent(config)
    version = live_version(config)
    index = vectors.read_faiss(version.faiss_path)
    inner = faiss.downcast_index(index.index)
    assert isinstance(inner, faiss.IndexIVFFlat) and inner.nlist > 1 and inner.nprobe == 1
    db = store.open_db(version.db_path, readonly=True)
    try:
        assert store.get_meta(db)["faiss"] == "ivf"
        ids, embeddings = (np.concatenate(parts) for parts in zip(*store.iter_embeddings(db), strict=True))
    finally:
        db.close()
    _, found = index.search(np.ascontiguousarray(embeddings, dtype=np.float32), 1)
    assert found[:, 0].tolist() == ids.tolist()
    retriever = Retriever.open(config.index.dir, config)
    try:
        assert "170余个" in retriever.answer("断卡行动打掉了多少个犯罪团伙？").hits[0].text
    finally:
        retriever.close()


# ---------------------------------------------------------------- BM25 postings


def bm25_postings(config: Config) -> tuple[dict[str, tuple[list[int], list[float]]], dict[int, list[str]]]:
    """term → (passage ids, weights) from the live version's postings, and id → stored terms."""
    import numpy as np

    db = store.open_db(live_version(config).db_path, readonly=True)
    try:
        ids = np.frombuffer(db.execute("select ids from bm25_docs").fetchone()[0], dtype="<i8")
        postings = {
            term: (ids[np.frombuffer(docs, "<u4")].tolist(), np.frombuffer(weights, "<f4").tolist())
            for term, docs, weights in db.execute("select term, docs, weights from bm25_terms")
        }
        stored = {r[0]: r[1].split() for r in db.execute("select id, terms from passages")}
    finally:
        db.close()
    return postings, stored


def test_bm25_postings_follow_incremental_builds(hash_config):
    """Every build rewrites the postings from the passages it keeps: a term's postings list
    exactly the passages holding it, an added article's terms appear and a removed one's go."""
    corpus = Path(hash_config.corpus.dir)
    build_index(hash_config)
    postings, _ = bm25_postings(hash_config)
    assert "贵州省" not in postings and "青海省" in postings

    (corpus / "c.md").write_text(ARTICLE_C, encoding="utf-8")
    build_index(hash_config)
    assert_consistent(hash_config)
    postings, stored = bm25_postings(hash_config)
    for term in ("贵州省", "青海省", "挖矿"):
        ids, weights = postings[term]
        assert ids == sorted(i for i, words in stored.items() if term in words)
        assert all(w > 0 for w in weights)
    assert sum(len(ids) for ids, _ in postings.values()) == sum(len(set(words)) for words in stored.values())

    (corpus / "c.md").unlink()
    build_index(hash_config)
    assert_consistent(hash_config)
    postings, _ = bm25_postings(hash_config)
    assert "贵州省" not in postings and "青海省" in postings


def test_ivf_probes_enough_lists_to_scan_about_6000_vectors():
    assert vectors.auto_nprobe(1_000_000, 4096) == 25
    assert vectors.auto_nprobe(100_000, 2048) == 123
    assert vectors.auto_nprobe(190, 4) == 4  # small indexes: every list


def test_bm25_postings_of_an_empty_index(tmp_path):
    db = store.open_db(tmp_path / "empty.db")
    try:
        store.create_schema(db)
        store.write_bm25(db)
        assert db.execute("select count(*) from bm25_terms").fetchone()[0] == 0
        assert db.execute("select length(ids) from bm25_docs").fetchone()[0] == 0
        assert store.integrity_problems(db, []) == []
    finally:
        db.close()


@pytest.mark.parametrize("name", ["../../etc", "/etc", "..", "v1/../../x", "v1.tmp", "", 42, "a" * 200])
def test_a_pointer_naming_anything_but_a_version_directory_is_refused(built_hash_index, name):
    index_dir = Path(built_hash_index.index.dir)
    (index_dir / publish.POINTER).write_text(json.dumps({"version": name}), encoding="utf-8")
    assert publish.current_version(index_dir) is None
    with pytest.raises(publish.IndexMissingError, match="no index in"):
        Retriever.open(index_dir, built_hash_index)


def _publish_copy(index_dir: Path, live: publish.Version) -> publish.Version:
    """Publish a copy of the live version under a new name, as a concurrent build would."""
    name, staging = publish.new_version_dir(index_dir)
    for file in live.path.iterdir():
        shutil.copy2(file, staging / file.name)
    return publish.publish(index_dir, name, staging)


def test_a_version_deleted_between_reading_current_and_opening_it_is_retried_once(built_hash_index):
    """The race of a build with keep_versions = 1: the version CURRENT named is gone by the time
    the reader opens it; the reader reads CURRENT again and opens the new one."""
    index_dir = Path(built_hash_index.index.dir)
    opened: list[str] = []

    def racing_open(version: publish.Version) -> str:
        if not opened:
            _publish_copy(index_dir, version)
            shutil.rmtree(version.path)
        opened.append(version.name)
        store.open_db(version.db_path, readonly=True).execute("select count(*) from passages").fetchone()
        return version.name

    name = publish.open_current(index_dir, racing_open)
    assert len(opened) == 2 and name == opened[1] != opened[0]
    assert name == publish.require_current(index_dir).name


def test_a_version_that_keeps_vanishing_is_one_missing_index_error(built_hash_index):
    index_dir = Path(built_hash_index.index.dir)

    def always_raced(version: publish.Version) -> None:
        _publish_copy(index_dir, version)
        shutil.rmtree(version.path)
        store.open_db(version.db_path, readonly=True).execute("select 1").fetchone()

    with pytest.raises(publish.IndexMissingError, match="changed while it was being opened"):
        publish.open_current(index_dir, always_raced)


# ---------------------------------------------------------------- schema upgrades


def downgrade_to_schema_1(db_path: Path) -> None:
    """Make a version look built before `passages.sentences` existed (schema 1)."""
    db = store.open_db(db_path)
    try:
        db.execute("alter table passages drop column sentences")
        store.set_meta(db, {"schema": 1})
        db.conn.commit()
    finally:
        db.close()


def test_index_without_stored_sentences_is_refused_then_rebuilt(built_hash_index, tmp_path):
    """Highlights come from the sentences the build stored (exactly `sentence_spans` of each
    passage); an index from before them is refused with the rebuild command, and the next
    build rebuilds it in full."""
    from index.text import sentence_spans

    old_dir = tmp_path / "old-index"
    shutil.copytree(built_hash_index.index.dir, old_dir)
    downgrade_to_schema_1(publish.require_current(old_dir).db_path)
    old_config = with_index(built_hash_index, dir=old_dir)
    with pytest.raises(RebuildRequiredError, match="older version"):
        Retriever.open(old_dir, old_config)

    report = build_index(old_config)
    assert report.published and report.embedded == report.passages > 0
    db = store.open_db(publish.require_current(old_dir).db_path, readonly=True)
    try:
        assert store.get_meta(db)["schema"] == store.SCHEMA_VERSION
        stored = [(text, json.loads(spans)) for text, spans in db.execute("select text, sentences from passages")]
    finally:
        db.close()
    assert len(stored) == report.passages
    assert all([list(s) for s in sentence_spans(text)] == spans for text, spans in stored)
    Retriever.open(old_dir, old_config).close()


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=80))
def test_clean_turns_every_control_or_format_character_into_space(text):
    """`clean` skips its per-character pass for printable text; the result is the same."""
    visible = re.sub(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]", "", text)
    spaced = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in visible)
    assert clean(text) == re.sub(r"\s+", " ", spaced).strip()


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(list('断卡行动。！？；… \n\u3000abc12"”')), min_size=1, max_size=80))
def test_stored_sentences_are_ordered_nonempty_spans_with_their_normal_form(text):
    spans = sentence_spans(text)
    assert spans
    for (s, e, norm), following in zip(spans, [*spans[1:], None], strict=True):
        assert 0 <= s < e <= len(text) or (s, e) == (0, len(text))
        assert norm == normalize(text[s:e])
        assert following is None or e <= following[0]
