"""A hostile corpus (issue 6): whatever operators drop into the corpus directory, a build
indexes every good article, names every skipped file with its reason and never crashes."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import DEFAULT_CORPUS, launch_argv, make_config, write_toml

from corpus import Skipped
from corpus.reader import ArticleError, iter_corpus_files, load_corpus, read_article
from index import publish, store, vectors
from retrieval import Retriever
from settings import PROJECT_ROOT

GBK_ARTICLE = """# 四川雅安水电站停止向矿场供电

四川省雅安市多家水电站接到通知，暂停向比特币矿场供电，涉及矿机约八万台。

当地矿工表示，丰水期本是挖矿成本最低的时候，这次停电让不少矿场只能把矿机搬走。
"""
BOM_ARTICLE = """---
title: 带字节顺序标记的文章
date: 2021-06-12
---

浙江省金融监管部门提醒居民，不要参与任何形式的虚拟货币交易和炒作活动。
"""
OUTSIDE_ARTICLE = """# 链接进来的文章

广东省通信管理局要求各运营商，对境外虚拟货币交易网站实施访问拦截措施。
"""
LATIN1 = "Größere Änderungen für Übergröße: Straße, Müller, Bäcker und schön. Die Bürger sind müde."
SKIP_REASONS = {
    "empty.md": "empty file",
    "blank.txt": "empty file",
    "random.txt": "binary file",
    "controls.txt": "binary file",
    "latin1.txt": "not UTF-8 or GB18030/GBK text",
    "unclosed.md": "front matter is not closed",
    "badyaml.md": "front matter is not valid YAML",
    "notmapping.md": "front matter must be a YAML mapping",
    "onlymeta.md": "no text after front matter",
    "report.pdf": "unsupported file type .pdf",
    "loop": "unsupported file type (none)",
    "loop.md": "cannot access",
    "dangling.md": "broken symlink",
    "sub/fifo.md": "not a regular file",
}


def huge_text() -> str:
    """~300 KB in three paragraphs of ~100,000 characters each (a passage holds a few hundred):
    one of sentences, one broken into many short lines, one without any punctuation at all."""
    sentence = "监管层越来越不能容忍数字货币的疯狂炒作，各地陆续出台清理整顿措施。"
    lines = "\n".join(["虚拟货币挖矿行为企业全部停产整顿青海省工信厅要求"] * 1_200)
    run = "比特币矿机搬迁海外" * 4_000
    return "# 超大文件\n\n" + sentence * 1_000 + "\n\n" + lines + "\n\n" + run + "\n"


def make_hostile_corpus(root: Path) -> set[str]:
    """Good articles next to every kind of bad file; returns the ids that must be indexed."""
    root.mkdir()
    (root / "good.md").write_bytes((DEFAULT_CORPUS / "blockchain-daily-2021-06-10-crackdown.md").read_bytes())
    (root / "gbk.txt").write_bytes(GBK_ARTICLE.encode("gbk"))
    (root / "bom.md").write_bytes(BOM_ARTICLE.encode("utf-8-sig"))
    (root / "huge.txt").write_text(huge_text(), encoding="utf-8")
    outside = root.parent / "outside.md"
    outside.write_text(OUTSIDE_ARTICLE, encoding="utf-8")
    os.symlink(outside, root / "linked.md")  # symlinks to files are followed

    (root / "empty.md").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"\n \n\t\n")
    (root / "random.txt").write_bytes(os.urandom(64 * 1024))
    (root / "controls.txt").write_bytes(bytes(range(1, 9)) * 400)
    (root / "latin1.txt").write_bytes(LATIN1.encode("latin-1"))
    (root / "unclosed.md").write_text("---\ntitle: 没有结束\n\n正文永远在前言里。\n", encoding="utf-8")
    (root / "badyaml.md").write_text("---\ntitle: [未闭合\n---\n\n正文。\n", encoding="utf-8")
    (root / "notmapping.md").write_text("---\n- 列表\n- 不是映射\n---\n\n正文。\n", encoding="utf-8")
    (root / "onlymeta.md").write_text("---\ntitle: 只有前言\n---\n\n\n", encoding="utf-8")
    (root / "report.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    os.symlink("loop", root / "loop")  # a symlink to itself (no suffix)
    os.symlink("loop.md", root / "loop.md")  # a symlink to itself (ELOOP)
    os.symlink("missing.md", root / "dangling.md")
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")  # directory symlink loops
    os.symlink(".", root / "sub" / "self")
    os.mkfifo(root / "sub" / "fifo.md")  # would block a naive reader forever
    (root / ".hidden.md").write_text("编辑器的临时文件。\n", encoding="utf-8")
    return {"good.md", "gbk.txt", "bom.md", "huge.txt", "linked.md"}


def skipped_lines(stderr: str) -> dict[str, str]:
    found = {}
    for line in stderr.splitlines():
        match = re.fullmatch(r"skipped (.+?): (.+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def indexed_articles(index_dir: Path) -> dict[str, int]:
    version = publish.require_current(index_dir)
    db = store.open_db(version.db_path, readonly=True)
    try:
        ids = vectors.faiss_ids(vectors.read_faiss(version.faiss_path))
        assert store.integrity_problems(db, ids) == []
        return {r[0]: r[1] for r in db.execute("select id, passages from articles")}
    finally:
        db.close()


@pytest.mark.slow
def test_build_survives_a_hostile_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    good = make_hostile_corpus(corpus)
    # Files that a background thread deletes while the build runs.
    doomed = [corpus / f"doomed-{i:03d}.md" for i in range(150)]
    for i, path in enumerate(doomed):
        path.write_text(f"第{i}篇将被删除的文章，内容是矿场关停的消息。\n", encoding="utf-8")
    config_file = write_toml(tmp_path / "config.toml", '[model]\nname = "test-hash"\n')
    index_dir = tmp_path / "index"

    # A process, so that a read that blocks (the FIFO) ends in a timeout, not a hung test run.
    process = subprocess.Popen(
        launch_argv("-m", "index", "build", "--config", str(config_file), "--corpus", str(corpus),
                    "--index", str(index_dir)),
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def delete_while_building() -> None:
        for path in doomed:
            path.unlink()
            time.sleep(0.01)

    deleter = threading.Thread(target=delete_while_building)
    deleter.start()
    stdout, stderr = process.communicate(timeout=600)
    deleter.join()

    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Error" not in stderr
    assert "published" in stdout
    skipped = skipped_lines(stderr)
    for path, reason in SKIP_REASONS.items():
        assert path in skipped, f"{path} not reported: {stderr}"
        assert skipped[path].startswith(reason), (path, skipped[path])
    assert "loop.md" in skipped and "symbolic links" in skipped["loop.md"]
    for path, reason in skipped.items():
        if path.startswith("doomed-"):
            assert "disappeared" in reason
        else:
            assert path in SKIP_REASONS
    assert not any(".hidden" in p or p.startswith("sub/up") or p.startswith("sub/self") for p in skipped)

    articles = indexed_articles(index_dir)
    assert good <= set(articles)
    assert set(articles) - good <= {p.name for p in doomed}  # and nothing else
    huge_chars = len(re.sub(r"\s", "", huge_text().split("\n", 1)[1]))  # without its heading
    assert articles["huge.txt"] >= huge_chars / make_config(corpus, index_dir).corpus.max_chars  # all of it

    config = make_config(corpus, index_dir)
    retriever = Retriever.open(index_dir, config)
    try:
        hits = retriever.search("雅安市暂停向矿场供电，涉及多少矿机？")
        assert hits[0].article_id == "gbk.txt" and "八万台" in hits[0].text
        assert hits[0].title == "四川雅安水电站停止向矿场供电"
        hits = retriever.search("浙江省金融监管部门提醒居民什么？")
        assert hits[0].article_id == "bom.md" and hits[0].date == "2021-06-12"
        assert retriever.search("广东省通信管理局要求运营商做什么？")[0].article_id == "linked.md"
        assert "170余个" in retriever.search("断卡行动打掉了多少个犯罪团伙？", k=10)[0].text
    finally:
        retriever.close()
    db = store.open_db(publish.require_current(index_dir).db_path, readonly=True)
    try:
        assert db.execute("select max(length(text)) from passages").fetchone()[0] <= config.corpus.max_chars
    finally:
        db.close()


def test_corpus_of_only_bad_files_names_them_and_fails_clearly(tmp_path, cli):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "latin1.txt").write_bytes(LATIN1.encode("latin-1"))
    (corpus / "scan.pdf").write_bytes(b"%PDF-1.4")
    config_file = write_toml(tmp_path / "config.toml", '[model]\nname = "test-hash"\n')
    result = cli(
        "index", "build", "--config", str(config_file), "--corpus", str(corpus), "--index", str(tmp_path / "index")
    )
    assert result.code == 2 and result.out == ""
    assert "Traceback" not in result.err
    assert skipped_lines(result.err) == {
        "empty.md": "empty file",
        "latin1.txt": "not UTF-8 or GB18030/GBK text",
        "scan.pdf": "unsupported file type .pdf; use .md, .txt or .html",
    }
    assert result.err.splitlines()[-1] == f"error: no readable .md, .txt or .html articles in {corpus}"
    assert publish.current_version(tmp_path / "index") is None


# ---------------------------------------------------------------- deterministic races


def test_file_removed_between_listing_and_stat(tmp_path):
    for name in ("a.md", "b.md", "c.md"):
        (tmp_path / name).write_text("正文内容。\n", encoding="utf-8")
    files = iter_corpus_files(tmp_path)
    assert next(files) == tmp_path / "a.md"  # the directory has been listed now
    (tmp_path / "b.md").unlink()
    assert list(files) == [Skipped("b.md", "file disappeared"), tmp_path / "c.md"]


def test_file_removed_between_stat_and_read(tmp_path):
    (tmp_path / "a.md").write_text("正文内容。\n", encoding="utf-8")
    [path] = list(iter_corpus_files(tmp_path))
    path.unlink()
    with pytest.raises(ArticleError, match="file disappeared while reading"):
        read_article(path, tmp_path)


def test_symlinks_loops_and_oversized_files(tmp_path):
    (tmp_path / "real.md").write_text("真实的文章内容。\n", encoding="utf-8")
    os.symlink("real.md", tmp_path / "alias.md")
    os.symlink("alias2.md", tmp_path / "alias1.md")
    os.symlink("alias1.md", tmp_path / "alias2.md")  # a two-link loop
    (tmp_path / "dir").mkdir()
    os.symlink(tmp_path, tmp_path / "dir" / "root")
    with open(tmp_path / "big.txt", "wb") as handle:  # sparse: no disk space used
        handle.truncate(60 * 1024 * 1024)
    articles, skipped = load_corpus(tmp_path)
    assert sorted(a.id for a in articles) == ["alias.md", "real.md"]
    reasons = {s.path: s.reason for s in skipped}
    assert reasons.keys() == {"alias1.md", "alias2.md", "big.txt"}
    assert reasons["alias1.md"].startswith("cannot access")
    assert reasons["big.txt"].startswith("file too large")


def test_corpus_changing_during_in_process_build(tmp_path, corpus_dir):
    """Files appear and disappear while `build_index` runs in this process: the build still
    publishes a consistent index of what it managed to read."""
    from index.build import build_index

    config = make_config(corpus_dir, tmp_path / "index")
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            path = corpus_dir / f"churn-{i % 20}.md"
            if path.exists():
                path.unlink()
            else:  # appears whole (a half-written file is another story: a torn read)
                staging = corpus_dir / ".churn.tmp"  # hidden: never listed
                staging.write_text(f"第{i}篇临时文章，关于矿场的消息。\n", encoding="utf-8")
                os.replace(staging, path)
            i += 1
            time.sleep(0.001)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        reports = [build_index(config) for _ in range(3)]
    finally:
        stop.set()
        worker.join()
    assert reports[0].published
    for report in reports:
        assert all("disappeared" in s.reason for s in report.skipped), report.skipped
    articles = indexed_articles(Path(config.index.dir))
    assert "blockchain-daily-2021-06-10-crackdown.md" in articles
