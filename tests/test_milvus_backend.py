"""The Milvus backend against real Milvus Lite (a data directory in tmp_path; `milvus-lite
server` on loopback for the multi-process tests) and the fake "test-hash" embedder: what a
reader answers agrees with the SQLite catalog version it was synced from, syncs are
incremental, readers never see an article missing or mixed during a sync, and a killed sync
is reported and repaired by the next build."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import HashEmbedder
from helpers import DEFAULT_CORPUS, launch_argv, make_config, write_config

from bench.many import generate as generate_corpus
from bench.synth import make_corpus
from index import publish, store
from index.__main__ import main as index_main
from index.add import add_sources
from index.backends import milvus_owner, milvus_sync
from index.backends import milvus_store as ms
from index.backends.base import IndexUnavailableError, RebuildRequiredError
from index.backends.milvus import MilvusBackend, MilvusReader
from index.build import build_index
from settings import PROJECT_ROOT, Config


def milvus_config(corpus: Path, root: Path, uri: str | None = None) -> Config:
    config = make_config(corpus, root / "index")
    return replace(config, index=replace(config.index, backend="milvus", milvus_uri=uri or str(root / "milvus.db")))


class CountingEmbedder(HashEmbedder):
    """The fake embedder, remembering which texts it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode_documents(self, texts):  # type: ignore[no-untyped-def]
        self.texts += list(texts)
        return super().encode_documents(texts)


def catalog_db(config: Config) -> store.sqlite_utils.Database:
    return store.open_db(publish.require_current(config.index.dir).db_path, readonly=True)


def milvus_rows(reader: MilvusReader, expr: str, fields: list[str]) -> list[dict]:
    return list(ms.query_all(reader.client, reader.names.passages, fields, expr))


# ---------- one synced corpus with copies and aliases, read back ----------
@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, MilvusReader]]:
    root = tmp_path_factory.mktemp("milvus-many")
    generate_corpus(root / "corpus", seed=0)
    # The article again from two more outlets (`index add` records them as its other URLs).
    text = (DEFAULT_CORPUS / "blockchain-daily-2021-06-10-crackdown.md").read_text(encoding="utf-8")
    also = "also:\n  - {url: https://a.example.cn/1, source: 甲网, date: 2021-06-11}\n"
    also += "  - {url: https://b.example.cn/2, source: 乙网, date: 2021-06-12}\n"
    (root / "corpus" / "aliased.md").write_text(text.replace("---\n", "---\n" + also, 1), encoding="utf-8")
    config = milvus_config(root / "corpus", root)
    backend = MilvusBackend(config)
    report = backend.build()
    assert any(n.startswith("milvus: ") for n in report.notes)
    reader = backend.open_reader()
    yield config, reader
    reader.close()
    backend.close()


def test_reader_agrees_with_catalog(synced: tuple[Config, MilvusReader]) -> None:
    config, reader = synced
    db = catalog_db(config)
    meta = store.get_meta(db)
    assert reader.version == meta["version"] and reader.count == meta["passages"] > 200
    assert reader.meta["model_key"] == meta["model_key"]
    ids = [r[0] for r in db.execute("select id from passages order by id")]
    rows = reader.rows(ids)
    assert sorted(rows) == ids
    sql = (
        "select p.id, p.article_id, p.ordinal, p.section, p.paragraph, p.paragraph_end, p.text, p.terms, "
        "p.embedding, a.title, a.source, a.date, a.url, p.sentences "
        "from passages p join articles a on a.id = p.article_id"
    )
    for r in db.execute(sql):
        row = rows[r[0]]
        assert (row.article_id, row.ordinal, row.section, row.paragraph, row.paragraph_end, row.text, row.terms) == r[
            1:8
        ]
        assert (row.title, row.source, row.date, row.url, row.sentences) == r[9:14]
        assert np.allclose(row.embedding, np.frombuffer(r[8], dtype=np.float32))

    matrix = np.stack([rows[i].embedding for i in ids])
    rng = np.random.default_rng(0)
    queries = matrix[rng.choice(len(ids), 6)] + rng.normal(0, 0.05, (6, matrix.shape[1])).astype(np.float32)
    sims, found = reader.dense(queries, 10)
    exact = queries @ matrix.T
    for q in range(len(queries)):  # exact search: the same similarities (copies may tie)
        assert np.allclose(sims[q], np.sort(exact[q])[::-1][:10], atol=1e-4)
        assert np.allclose(sims[q], exact[q][[ids.index(i) for i in found[q]]], atol=1e-4)
    cos = reader.cosines([*ids[:30], 10**9], queries[0])
    assert sorted(cos) == ids[:30] and np.allclose([cos[i] for i in ids[:30]], exact[0][:30], atol=1e-4)

    article_id, ordinal = db.execute("select article_id, ordinal from passages where ordinal = 2 limit 1").fetchone()
    assert reader.neighbours(article_id, ordinal, 1, 2) == [
        r[0]
        for r in db.execute(
            "select id from passages where article_id = ? and ordinal between 1 and 4 order by ordinal", [article_id]
        )
    ]
    fields = "id, path, title, source, author, date, url, lang, passages"
    assert reader.articles() == list(db.query(f"select {fields} from articles order by date, id"))
    vocabulary = dict(db.execute("select term, df from bm25_terms").fetchall())
    assert sorted(reader.vocabulary()) == sorted(vocabulary)
    sample = sorted(vocabulary)[::7]
    assert reader.document_frequencies([*sample, "不存在的词"]) == {
        **{t: vocabulary[t] for t in sample},
        "不存在的词": 0,
    }
    texts = reader.sample_texts(40)
    assert 20 <= len(texts) <= 40 and set(texts) <= {r[0] for r in db.execute("select text from passages")}
    assert reader.script == "hans"


def test_copies_agree_with_catalog(synced: tuple[Config, MilvusReader]) -> None:
    config, reader = synced
    db = catalog_db(config)
    groups = dict(db.execute("select passage_id, group_id from passage_groups").fetchall())
    aliased = {r[0] for r in db.execute("select distinct article_id from article_aliases")}
    assert groups and aliased and reader.duplicate_groups() == len(set(groups.values()))
    in_group = sorted(groups)[::5]
    alone_aliased = [
        r[0] for r in db.execute("select id from passages where article_id in (select article_id from article_aliases)")
        if r[0] not in groups
    ][:3]  # fmt: skip
    alone = [r[0] for r in db.execute("select id from passages") if r[0] not in groups][-3:]
    copies = reader.copies([*in_group, *alone_aliased, *alone])
    members = {p for p, g in groups.items() if g in {groups[i] for i in in_group}}
    assert {(c.group_id, c.passage_id) for c in copies} == {(groups[p], p) for p in members} | {
        (0, p) for p in alone_aliased
    }
    articles = {r["id"]: r for r in db.query("select * from articles")}
    aliases: dict[str, list] = {}
    for a, source, date, url in db.execute("select article_id, source, date, url from article_aliases order by url"):
        aliases.setdefault(a, []).append((source, date, url))
    for c in copies:
        a = articles[c.article_id]
        assert (c.source, c.date, c.title, c.url) == (a["source"], a["date"], a["title"], a["url"])
        assert c.aliases == tuple(aliases.get(c.article_id, ()))


def test_lexical_counts_our_terms(synced: tuple[Config, MilvusReader]) -> None:
    """Each term is one BM25 token: a one-term search finds exactly the passages holding it,
    and multi-term rankings overlap the catalog's BM25 (FTS5's weights, summed)."""
    config, reader = synced
    db = catalog_db(config)
    postings = db.execute("select ids from bm25_docs").fetchone()[0]
    doc_ids = np.frombuffer(postings, dtype="<i8")
    terms = {t: (np.frombuffer(d, "<u4"), np.frombuffer(w, "<f4")) for t, d, w in db.execute(
        "select term, docs, weights from bm25_terms")}  # fmt: skip
    for term in [t for t, (docs, _) in terms.items() if 2 <= len(docs) <= 40][::25]:
        hits = reader.lexical([term], 100)
        assert set(hits) == set(doc_ids[terms[term][0]].tolist()) and all(s > 0 for s in hits.values())
    overlaps = []
    rng = np.random.default_rng(1)
    for passage_terms in [r[0] for r in db.execute("select terms from passages")][::15]:
        query = list(rng.choice(sorted(set(passage_terms.split())), 4, replace=True))
        scores: dict[int, float] = {}
        for t in set(query):
            docs, weights = terms[t]
            for d, w in zip(doc_ids[docs].tolist(), weights.tolist(), strict=True):
                scores[d] = scores.get(d, 0.0) + w
        expected = sorted(scores, key=lambda d: -scores[d])[:10]
        got = reader.lexical(query, 10)
        assert len(got) == min(10, len(scores))
        overlaps.append(len(set(got) & set(expected)) / len(expected))
    assert np.mean(overlaps) >= 0.8, overlaps


# ---------- incremental syncs ----------
def test_incremental_sync_rewrites_only_changes(tmp_path: Path, corpus_dir: Path) -> None:
    (corpus_dir / "b.md").write_text("# 乙\n\n四川发文清理关停虚拟货币挖矿项目，电网企业停止供电。\n", encoding="utf-8")
    (corpus_dir / "c.md").write_text("# 丙\n\n内蒙古发改委设立举报平台，专门受理虚拟货币挖矿线索。\n", encoding="utf-8")
    config = milvus_config(corpus_dir, tmp_path)
    backend = MilvusBackend(config)
    try:
        backend.build(embedder=CountingEmbedder())
        first = publish.require_current(config.index.dir).name
        (corpus_dir / "b.md").write_text("# 乙\n\n四川发文清理关停虚拟货币挖矿项目，限期退出。\n", encoding="utf-8")
        (corpus_dir / "c.md").unlink()
        (corpus_dir / "d.md").write_text("# 丁\n\n青海省工信厅要求全面关停挖矿项目。\n", encoding="utf-8")
        embedder = CountingEmbedder()
        report = backend.build(embedder=embedder)
        assert (report.added, report.updated, report.removed) == (1, 1, 1)
        assert report.notes[-1].startswith("milvus: 2 articles synced, 1 removed (2 passages, ")
        assert sorted(embedder.texts) == [
            "四川发文清理关停虚拟货币挖矿项目，限期退出。",
            "青海省工信厅要求全面关停挖矿项目。",
        ]
        second = publish.require_current(config.index.dir).name
        reader = backend.open_reader()
        try:
            assert reader.version == second
            tags: dict[str, set[str]] = {}
            for r in milvus_rows(reader, "", ["article_id", "tag"]):
                tags.setdefault(r["article_id"], set()).add(r["tag"])
            main = next(a for a in tags if a not in {"b.md", "c.md", "d.md"})
            assert tags == {main: {first}, "b.md": {second}, "d.md": {second}}
            assert len(milvus_rows(reader, "", ["id"])) == reader.count == store.passage_count(catalog_db(config))
        finally:
            reader.close()
        assert backend.check() == (second, [])
        stamp = backend.stamp()
        assert backend.build().notes[-1] == "milvus: up to date" and backend.stamp() == stamp
    finally:
        backend.close()


def test_model_change_fills_new_collections(tmp_path: Path, corpus_dir: Path) -> None:
    """Another model (here another document prompt) or `--full` fills a new generation of
    collections, switches "live" and the aliases to it; a reader opened before keeps reading
    the old one, which the next build drops."""
    config = milvus_config(corpus_dir, tmp_path)
    backend = MilvusBackend(config)
    try:
        backend.build()
        old = backend.open_reader()
        other = replace(config, model=replace(config.model, document_prompt="passage: "))
        with pytest.raises(RebuildRequiredError):
            MilvusReader(other)
        changed = MilvusBackend(other)
        assert "into new collections" in changed.build().notes[-1]
        new = changed.open_reader()
        assert new.names.generation == old.names.generation + 1 and new.count == old.count
        article_id = new.articles()[0]["id"]
        old_ids, new_ids = (set(r.neighbours(article_id, 0, 0, 10**6)) for r in (old, new))
        assert len(old_ids) == len(new_ids) and old_ids.isdisjoint(new_ids)  # re-embedded under new ids
        assert old.lexical(["新疆"], 5) and new.lexical(["新疆"], 5)
        aliases = changed.describe()["collections"]
        assert aliases[f"{config.index.milvus_collection}_passages"] == new.names.passages
        assert "into new collections" in changed.build(full=True).notes[-1]  # drops generation 1, fills 3
        assert not old.client.has_collection(old.names.passages)
        assert changed.check()[1] == [] and changed.open_reader().names.generation == old.names.generation + 2
        old.close()
        new.close()
        changed.close()
    finally:
        backend.close()


def test_reader_during_sync_sees_whole_articles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader querying throughout a sync of 20 changed articles (written one article per
    batch) sees every article, each with all of its old or all of its new passages, in
    listings and in search results alike."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_passages=250, per_article=6)
    config = milvus_config(corpus, tmp_path)
    backend = MilvusBackend(config)
    backend.build()
    reader = backend.open_reader()

    def passages_of() -> dict[str, frozenset[int]]:
        out: dict[str, set[int]] = {}
        for article_id, passage_id in catalog_db(config).execute("select article_id, id from passages"):
            out.setdefault(article_id, set()).add(passage_id)
        return {a: frozenset(p) for a, p in out.items()}

    before = passages_of()
    changed = sorted(before)[::2][:20]
    for article_id in changed:
        path = corpus / article_id
        path.write_text(path.read_text(encoding="utf-8").replace("。", "！"), encoding="utf-8")
    # Old and new passages of a changed article share their terms and nearly their vectors:
    # a result mixing versions would hold both.
    probes = reader.rows([min(before[a]) for a in changed[:5]])
    qvecs = np.stack([r.embedding for r in probes.values()])
    query = [t for r in probes.values() for t in r.terms.split()[:3]]
    listings: list[tuple[str, frozenset[int]]] = []
    results: list[set[int]] = []
    missing: list[int] = []
    done = threading.Event()

    def list_articles() -> None:
        while not done.is_set():
            for article_id in changed:
                listings.append((article_id, frozenset(reader.neighbours(article_id, 0, 0, 10**6))))
            if {a["id"] for a in reader.articles()} != set(before):
                missing.append(len(listings))

    def search() -> None:
        while not done.is_set():
            results.append(set(reader.dense(qvecs, 40)[1].ravel().tolist()))
            results.append(set(reader.lexical(query, 200)))

    monkeypatch.setattr(milvus_sync, "SYNC_BATCH", 1)  # one article per batch
    threads = [threading.Thread(target=list_articles), threading.Thread(target=search)]
    for thread in threads:
        thread.start()
    try:
        backend.build()
    finally:
        done.set()
        for thread in threads:
            thread.join()
        reader.close()
    after = passages_of()
    assert not missing
    for article_id, ids in listings:
        assert ids in (before[article_id], after[article_id]), (article_id, sorted(ids))
    for hits in results:
        assert not any(hits & before[a] and hits & after[a] for a in changed)
    # The reader ran through the sync: one article was listed new before another one old.
    flipped = [ids == after[a] for a, ids in listings]
    assert True in flipped and flipped.index(True) < len(flipped) - 1 - flipped[::-1].index(False)
    assert backend.check()[1] == []
    backend.close()


# ---------- one writer: a second catalog is refused, a take-over starts fresh ----------
def small_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "b.md").write_text("# 乙\n\n四川发文清理关停虚拟货币挖矿项目，电网企业停止供电。\n", encoding="utf-8")
    (folder / "c.md").write_text("# 丙\n\n内蒙古发改委设立举报平台，专门受理虚拟货币挖矿线索。\n", encoding="utf-8")
    return folder


def live_passages(backend: MilvusBackend) -> list[dict]:
    reader = backend.open_reader()
    try:
        return milvus_rows(reader, "", ["id", "article_id", "text"])
    finally:
        reader.close()


@pytest.mark.parametrize("served", [False, True], ids=["lite-file", "lite-server"])
def test_a_second_catalog_is_refused_and_deletes_nothing(
    tmp_path: Path, corpus_dir: Path, served: bool, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two catalogs (two index directories) pointed at one Milvus: the first claims it; the
    second's build, add, CLI and even a direct sync are refused with one line naming both
    and the fix, and change nothing; after `--take-over` the second fills fresh collections
    under its own ids (both catalogs' ids start at 1: none of the first's survives) and the
    first is refused in turn."""
    uri = request.getfixturevalue("lite_server") if served else str(tmp_path / "milvus.db")
    first = MilvusBackend(milvus_config(corpus_dir, tmp_path / "a", uri))
    second_config = milvus_config(small_corpus(tmp_path / "corpus-b"), tmp_path / "b", uri)
    second = MilvusBackend(second_config)
    try:
        first.build()
        before = live_passages(first)
        stamp = first.stamp()
        with pytest.raises(milvus_owner.OwnerConflictError) as refused:
            second.build()
        message = str(refused.value)
        assert "\n" not in message and str(tmp_path / "a" / "index") in message
        assert str(tmp_path / "b" / "index") in message and "--take-over" in message
        assert publish.current_version(second_config.index.dir) is None  # refused before its catalog build
        added = add_sources(second_config, [str(DEFAULT_CORPUS / "blockchain-daily-2021-06-10-crackdown.md")])
        assert added.build_error == message and added.results[0].status == "added"
        config_file = write_config(
            tmp_path / "b.toml",
            corpus=second_config.corpus.dir,
            index=second_config.index.dir,
            index_settings={"backend": "milvus", "milvus_uri": uri},
        )
        capsys.readouterr()
        assert index_main(["build", "--config", str(config_file)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {message}\n"
        # The sync itself refuses too (a build of the second catalog without the Milvus step).
        build_index(second_config)
        version = publish.require_current(second_config.index.dir)
        owner = milvus_owner.Owner.of(second_config.index.dir)
        with pytest.raises(milvus_owner.OwnerConflictError):
            milvus_sync.sync(first.client, second_config.index.milvus_collection, version, owner, where=uri)
        assert first.stamp() == stamp and live_passages(first) == before and first.check()[1] == []
        _, problems = second.check()
        assert any("Milvus is claimed by another catalog" in p for p in problems)

        assert index_main(["build", "--take-over", "--config", str(config_file)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"this catalog ({tmp_path / 'b' / 'index'} on host ") and "into new collections" in out
        assert second.check()[1] == []
        taken = live_passages(second)
        ids = [r["id"] for r in taken]
        db = catalog_db(second_config)
        assert len(ids) == len(set(ids))
        assert sorted((r["id"], r["article_id"], r["text"]) for r in taken) == sorted(
            db.execute("select id, article_id, text from passages").fetchall()
        )
        assert min(ids) == min(r["id"] for r in before)  # the same ids as the first catalog's: fresh collections
        with pytest.raises(milvus_owner.OwnerConflictError):
            first.build()
        assert live_passages(second) == taken
    finally:
        first.close()
        second.close()


def test_collections_synced_before_owners_existed_are_claimed_and_refilled(tmp_path: Path, corpus_dir: Path) -> None:
    """Collections an earlier version synced (no owner; perhaps two catalogs' rows under
    colliding ids) are claimed by the next build, which fills a fresh generation."""
    backend = MilvusBackend(milvus_config(corpus_dir, tmp_path))
    try:
        backend.build()
        names = backend.meta_names
        live = ms.get_meta(backend.client, names, "live")
        live.pop("owner")
        ms.put_meta(backend.client, names, {"live": live})
        backend.client.delete(names.meta, filter=f"key == {ms.quote(milvus_owner.OWNER)}")
        assert backend.check()[1] == [f"Milvus is claimed by no catalog, not by {tmp_path / 'index'}"]
        assert "into new collections" in backend.build().notes[-1]
        assert backend.check()[1] == [] and milvus_owner.owner_of(backend.client, names)["dir"] == str(
            tmp_path / "index"
        )
    finally:
        backend.close()


def test_the_catalog_id_is_created_once_and_checked(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    ids = {milvus_owner.catalog_id(index_dir) for _ in range(3)}
    assert len(ids) == 1 and (index_dir / milvus_owner.CATALOG_ID).read_text().strip() in ids
    (index_dir / milvus_owner.CATALOG_ID).write_text("not an id\n")
    with pytest.raises(IndexUnavailableError, match="is damaged"):
        milvus_owner.catalog_id(index_dir)


# ---------- processes: the Lite lock, a server, a killed sync ----------
# Another process: builds, or opens a reader and prints its passage count; an unavailable
# Milvus is one line on stderr and exit 2 (as the CLI reports it).
SCRIPT = """
import sys
from dataclasses import replace
from index.backends.base import IndexUnavailableError
from index.backends.milvus import MilvusBackend
from settings import load_config
config = load_config(sys.argv[1])
config = replace(config, index=replace(config.index, backend="milvus", milvus_uri=sys.argv[2]))
backend = MilvusBackend(config)
try:
    print(backend.build().summary() if sys.argv[3] == "build" else backend.open_reader().count, flush=True)
except IndexUnavailableError as exc:
    sys.exit(str(exc))
"""


def script_argv(config_file: Path, uri: str, action: str) -> list[str]:
    return launch_argv("-c", SCRIPT, str(config_file), uri, action)


def run_script(config_file: Path, uri: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        script_argv(config_file, uri, action), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180
    )


def test_errors_are_one_line(tmp_path: Path) -> None:
    for uri in ("http://user:secret@127.0.0.1:1", str(tmp_path / "milvus.sqlite")):
        backend = MilvusBackend(milvus_config(DEFAULT_CORPUS, tmp_path, uri))
        with pytest.raises(IndexUnavailableError) as error:
            backend.stamp()
        assert "\n" not in str(error.value) and "secret" not in str(error.value)
    assert ms.redact("https://root:Milvus@db.example.com:19530/prod?token=x") == "https://db.example.com:19530/prod"


@pytest.mark.slow
def test_second_process_gets_one_line_error(tmp_path: Path, corpus_dir: Path) -> None:
    config = milvus_config(corpus_dir, tmp_path)
    backend = MilvusBackend(config)
    backend.build()
    config_file = write_config(tmp_path / "config.toml", corpus=corpus_dir, index=tmp_path / "index")
    result = run_script(config_file, config.index.milvus_uri, "read")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"the Milvus Lite file {config.index.milvus_uri} is open in another process")
    assert result.stderr.count("\n") == 1 and "milvus-lite server --data-dir" in result.stderr
    backend.close()  # the file is free again: now the other process opens it
    assert run_script(config_file, config.index.milvus_uri, "read").stdout.strip() == str(
        store.passage_count(catalog_db(config))
    )


@pytest.mark.slow
def test_killed_sync_is_reported_and_repaired(
    tmp_path: Path, lite_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build in another process syncs through `milvus-lite server`; a second build, changing
    every article, is SIGKILLed once its marker is written and some new passages are in; this
    process's reader and `check` see the damage, and the next build repairs it."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_passages=1000)
    config_file = write_config(tmp_path / "config.toml", corpus=corpus, index=tmp_path / "index")
    first = run_script(config_file, lite_server, "build")
    assert first.returncode == 0 and "milvus: " in first.stdout, first.stderr[-2000:]
    config = milvus_config(corpus, tmp_path, lite_server)
    monkeypatch.setenv("MILVUS_TOKEN", "root:Secret-token")  # Lite ignores it; it must never show
    backend = MilvusBackend(config)
    assert backend.check()[1] == []
    reader = backend.open_reader()
    assert reader.count == store.passage_count(catalog_db(config)) >= 1000
    for path in corpus.glob("*.md"):
        path.write_text(path.read_text(encoding="utf-8").replace("。", "！"), encoding="utf-8")
    build = subprocess.Popen(script_argv(config_file, lite_server, "build"), cwd=PROJECT_ROOT)
    meta = ms.Names(config.index.milvus_collection)
    deadline = time.monotonic() + 120
    killed = False
    while build.poll() is None and time.monotonic() < deadline:
        header = ms.get_meta(reader.client, meta, milvus_sync.MARKER)
        if header is not None:
            new = ms.count(reader.client, reader.names.passages, f"tag == {ms.quote(header['version'])}")
            if 0 < new < reader.count:
                build.send_signal(signal.SIGKILL)
                build.wait()
                killed = True
                break
        time.sleep(0.02)
    assert killed, "the build finished before the window was hit"
    _, problems = backend.check()
    assert any("a sync was interrupted" in p for p in problems), problems
    assert any("articles differ from the catalog" in p for p in problems), problems
    # Meanwhile a reader sees every article, each with its passages of one version or the other.
    articles = reader.articles()
    assert len(articles) == len(list(corpus.glob("*.md")))
    assert all(len(reader.neighbours(a["id"], 0, 0, 10**6)) == a["passages"] for a in articles)
    report = backend.build()
    assert not report.published and report.notes[-1].startswith("milvus: ")
    assert backend.check() == (publish.require_current(config.index.dir).name, [])
    fresh = backend.open_reader()
    assert fresh.count == store.passage_count(catalog_db(config)) and fresh.version != reader.version
    assert "Secret" not in json.dumps(backend.describe()) and backend.describe()["uri"] == lite_server
    fresh.close()
    reader.close()
    backend.close()
