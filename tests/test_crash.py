"""Crashes and concurrency (issue 6): builds SIGKILLed at every stage, readers answering
across publishes, and two builds at once. After each: the live version answers as before,
`python -m index check` is ok, SQLite and FAISS agree, and the next build completes.

Builds run as real subprocesses over a few hundred generated articles (fake embedder), so
there is time to kill them mid-way.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import DEFAULT_CORPUS, SOURCE_ARTICLE, launch_argv, write_config

from index import publish, store, vectors
from index.__main__ import main as index_main
from index.build import build_index
from retrieval import Retriever
from settings import PROJECT_ROOT, Config, load_config, with_overrides

pytestmark = pytest.mark.slow

N_ARTICLES = 300
N_ARTICLE_EXTRA = 10_000  # numbers of the articles `Env.dirty` adds
QUESTIONS = [
    "断卡行动打掉了多少个犯罪团伙？",
    "青海省禁止向挖矿项目提供什么？",
    "虚拟货币交易为什么很难取证？",
    "比特大陆会为出海矿工提供什么便利？",
    "被封的微博账号现在显示什么？",
]
_SENTENCES = [s for s in re.findall(r"[^。\n]+。", SOURCE_ARTICLE.read_text(encoding="utf-8")) if len(s) > 12]
_PROGRESS = re.compile(r"embedding (\d+)/(\d+) passages")


# ---------------------------------------------------------------- corpus and index


def write_generated(corpus: Path, i: int, revision: int = 0) -> None:
    rnd = random.Random(i * 1000 + revision)
    paragraphs = ["".join(rnd.sample(_SENTENCES, 3)) for _ in range(5)]
    (corpus / f"gen-{i:04d}.md").write_text(
        f"---\ntitle: 生成的第{i}篇\nsource: 测试\ndate: 2021-06-{1 + i % 28:02d}\n---\n\n"
        + "\n\n".join(paragraphs)
        + f"\n\n编号{i}的矿场第{revision}次核查完毕。\n",
        encoding="utf-8",
    )


@dataclass
class Env:
    corpus: Path
    index: Path
    config_file: Path
    config: Config
    revision: int = 0

    def dirty(self, count: int = 150) -> None:
        """Give the next build real work: rewrite `count` articles and add one."""
        self.revision += 1
        for i in range(count):
            write_generated(self.corpus, i, self.revision)
        write_generated(self.corpus, N_ARTICLE_EXTRA + self.revision)

    def corpus_ids(self) -> set[str]:
        return {p.name for p in self.corpus.iterdir()}


def make_env_files(tmp_path: Path, **index_settings) -> Env:
    """The config file of an environment in `tmp_path` (`[index]` settings added)."""
    corpus, index_dir = tmp_path / "corpus", tmp_path / "index"
    config_file = write_config(tmp_path / "config.toml", corpus=corpus, index=index_dir, index_settings=index_settings)
    # --index / with_overrides: a QA_INDEX_DIR in the environment must not redirect the tests.
    return Env(corpus, index_dir, config_file, with_overrides(load_config(config_file), index_dir=index_dir))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The default corpus plus generated articles, indexed once for the whole module."""
    root = tmp_path_factory.mktemp("crash-template")
    shutil.copytree(DEFAULT_CORPUS, root / "corpus")
    for i in range(N_ARTICLES):
        write_generated(root / "corpus", i)
    assert build_index(make_env_files(root).config).published
    return root


@pytest.fixture
def make_env(template, tmp_path) -> Callable[..., Env]:
    """A private copy of the template (corpus and published index) with its own config."""

    def make(**index_settings) -> Env:
        shutil.copytree(template / "corpus", tmp_path / "corpus")
        shutil.copytree(template / "index", tmp_path / "index")
        return make_env_files(tmp_path, **index_settings)

    return make


@pytest.fixture
def env(make_env) -> Env:
    return make_env(keep_versions=3)


def answers(config: Config, retriever: Retriever | None = None) -> list:
    own = retriever is None
    retriever = retriever or Retriever.open(config.index.dir, config)
    try:
        return [retriever.answer(q, k=5) for q in QUESTIONS]
    finally:
        if own:
            retriever.close()


def assert_index_healthy(env: Env, cli: bool = True) -> publish.Version:
    """Live version passes SQLite integrity_check, FTS and FAISS agree with the passages, and
    `python -m index check` says ok (the same checks through the command line)."""
    version = publish.require_current(env.index)
    db = store.open_db(version.db_path, readonly=True)
    try:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        ids = vectors.faiss_ids(vectors.read_faiss(version.faiss_path))
        assert store.integrity_problems(db, ids) == []
        assert len(ids) == len(set(ids.tolist())) == store.passage_count(db)
    finally:
        db.close()
    if not cli:
        return version
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = index_main(["check", "--config", str(env.config_file), "--index", str(env.index)])
    assert code == 0 and out.getvalue().strip() == f"{version.name}: ok", err.getvalue()
    return version


def indexed_ids(version: publish.Version) -> set[str]:
    db = store.open_db(version.db_path, readonly=True)
    try:
        return {r[0] for r in db.execute("select id from articles")}
    finally:
        db.close()


# ---------------------------------------------------------------- build subprocesses


@dataclass
class Build:
    """A `python -m index build` subprocess whose stderr is read as it comes."""

    process: subprocess.Popen
    started: float
    lines: list[str] = field(default_factory=list)  # stderr so far
    out: list[str] = field(default_factory=list)  # stdout so far
    readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, env: Env, *args: str) -> Build:
        command = ["index", "build", "--config", str(env.config_file), "--index", str(env.index), *args]
        process = subprocess.Popen(
            launch_argv("-m", *command),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        build = cls(process, time.monotonic())
        _RUNNING.append(process)
        for stream, sink in ((process.stderr, build.lines), (process.stdout, build.out)):
            reader = threading.Thread(target=_drain, args=(stream, sink), daemon=True)
            reader.start()
            build.readers.append(reader)
        return build

    @property
    def staging(self) -> str:
        """Suffix of this build's staging directory (`v<time>-<pid>.tmp`)."""
        return f"-{self.process.pid}.tmp"

    def progress(self) -> list[tuple[int, int]]:
        return [(int(m[1]), int(m[2])) for m in map(_PROGRESS.fullmatch, list(self.lines)) if m]

    def kill_when(self, condition: Callable[[], bool], timeout: float = 300) -> bool:
        """SIGKILL as soon as `condition` holds; False if the build exited first."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if condition():
                self.process.kill()  # SIGKILL: no cleanup, no finally blocks
                self.process.wait(timeout=60)
                return True
            assert time.monotonic() < deadline, "build neither finished nor reached the kill point"
            time.sleep(0.001)
        return False

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=60)
        return self.process.returncode, "\n".join(self.out), "\n".join(self.lines)


def _drain(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))


_RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_builds():
    """A failed assertion must not leave a build running in the background."""
    yield
    while _RUNNING:
        process = _RUNNING.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)


def staging_dirs(env: Env, suffix: str = ".tmp") -> list[Path]:
    """Staging directories of builds (killed or running); `suffix` picks one build's."""
    root = env.index / publish.VERSIONS
    return [p for p in root.iterdir() if p.name.endswith(suffix)] if root.is_dir() else []


# ---------------------------------------------------------------- SIGKILL at every stage


def test_killed_builds_leave_the_live_version_answering(env):
    retriever = Retriever.open(env.index, env.config)  # a long-lived reader, as in the bot
    try:
        _killed_builds(env, retriever)
    finally:
        retriever.close()


def _killed_builds(env: Env, retriever: Retriever) -> None:
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    # How long an undisturbed build takes, to pick random kill moments inside it.
    env.dirty()
    timing = Build.start(env)
    code, _, stderr = timing.finish()
    assert code == 0, stderr
    duration = time.monotonic() - timing.started
    retriever.refresh()

    def mid_embedding(build: Build) -> Callable[[], bool]:
        return lambda: any(0 < done < total for done, total in build.progress())

    def all_embedded(build: Build) -> Callable[[], bool]:
        return lambda: any(done == total > 0 for done, total in build.progress())

    def faiss_written(build: Build) -> Callable[[], bool]:
        return lambda: any((d / publish.FAISS_FILE).exists() for d in staging_dirs(env, build.staging))

    def staging_created(build: Build) -> Callable[[], bool]:
        return lambda: bool(staging_dirs(env, build.staging)) and not any(done for done, _ in build.progress())

    def after(seconds: float) -> Callable[[Build], Callable[[], bool]]:
        return lambda build: lambda: time.monotonic() - build.started >= seconds

    stages: list[tuple[str, Callable[[Build], Callable[[], bool]], bool]] = [
        ("before embedding (staging created)", staging_created, True),
        ("mid-embedding", mid_embedding, True),
        ("after embedding (writing rows)", all_embedded, True),
        ("mid-publish (FAISS written)", faiss_written, False),
    ]
    moments = sorted(rnd.uniform(0.05, duration) for _ in range(2))
    stages += [(f"random {t:.2f}s (seed {seed})", after(t), False) for t in moments]
    for attempt, (name, condition, must_kill) in enumerate(stages):
        before = publish.require_current(env.index)
        expected = answers(env.config)
        env.dirty()
        build = Build.start(env)
        killed = build.kill_when(condition(build))
        if must_kill:
            assert killed, f"{name}: the build finished before the kill point"
        live = assert_index_healthy(env, cli=attempt in {0, 3})
        print(f"{name}: killed={killed} progress={build.progress()[-1:]} switched={live.name != before.name}")
        if live.name == before.name:
            assert answers(env.config) == expected, name
            assert answers(env.config, retriever) == expected, name  # the open reader too
        else:  # killed after the pointer switched (or not killed): the new version is whole
            assert not killed or name.startswith(("mid-publish", "random")), name
            assert indexed_ids(live) == env.corpus_ids(), name
            assert retriever.refresh()
        assert all(answer.hits for answer in answers(env.config, retriever)), name

    # The next build cleans up after the killed ones and includes everything.
    env.dirty()
    build = Build.start(env)
    code, stdout, stderr = build.finish()
    assert code == 0 and "published" in stdout, stderr
    assert "Traceback" not in stderr
    live = assert_index_healthy(env)
    assert indexed_ids(live) == env.corpus_ids()
    assert staging_dirs(env) == []
    assert not list(env.index.glob(f".{publish.POINTER}.*.tmp"))
    assert len([p for p in (env.index / publish.VERSIONS).iterdir()]) <= env.config.index.keep_versions
    assert retriever.refresh() and retriever.version == live.name
    assert {a["id"] for a in retriever.articles()} == env.corpus_ids()


# ---------------------------------------------------------------- readers during builds


def test_readers_keep_answering_across_publishes(make_env):
    env = make_env(keep_versions=10)  # keep every version for the checks below
    refreshing = Retriever.open(env.index, env.config)
    pinned = Retriever.open(env.index, env.config)  # never refreshes
    pinned_expected = answers(env.config, pinned)
    records: list[tuple[str, str, list[tuple[int, str, str]]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop(retriever: Retriever, refresh: bool) -> None:
        try:
            while not stop.is_set():
                if refresh:
                    retriever.refresh()
                for question in QUESTIONS:
                    answer = retriever.answer(question, k=5)
                    hits = [(h.passage_id, h.article_id, h.text) for h in answer.hits]
                    records.append((question, answer.version, hits))
                time.sleep(0.02)  # leave the cores to the build
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [
        threading.Thread(target=read_loop, args=(refreshing, True)),
        threading.Thread(target=read_loop, args=(pinned, False)),
    ]
    for reader in readers:
        reader.start()
    published = []
    try:
        for _ in range(2):
            env.dirty(40)
            code, stdout, stderr = Build.start(env).finish()
            assert code == 0, stderr
            published.append(re.search(r"published ([^\s;]+)", stdout)[1])
            deadline = time.monotonic() + 120  # let the refreshing reader see the new version
            while not any(version == published[-1] for _, version, _ in list(records)):
                assert time.monotonic() < deadline and not errors, errors
                time.sleep(0.01)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=120)
    try:
        assert not errors, errors
        assert records
        assert all(hits for _, _, hits in records), "an answer came back empty"
        seen = {version for _, version, _ in records}
        assert set(published) <= seen, "the refreshing reader never switched versions"
        # Every answer's hits come from the one version it names.
        for version_name in seen:
            db = store.open_db(env.index / publish.VERSIONS / version_name / publish.DB_FILE, readonly=True)
            try:
                rows = {r[0]: (r[1], r[2]) for r in db.execute("select id, article_id, text from passages")}
            finally:
                db.close()
            for _, version, hits in records:
                if version == version_name:
                    assert all(rows.get(pid) == (aid, text) for pid, aid, text in hits)
        assert answers(env.config, pinned) == pinned_expected
    finally:
        refreshing.close()
        pinned.close()
    assert_index_healthy(env)


# ---------------------------------------------------------------- two builds at once


def test_second_build_waits_for_the_lock(env):
    env.dirty(20)
    with publish.build_lock(env.index, timeout=10):  # a build in progress, as far as the lock goes
        waiting = Build.start(env)
        deadline = time.monotonic() + 120
        while not any("another build is running" in line for line in waiting.lines):
            assert waiting.process.poll() is None, waiting.lines
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not staging_dirs(env)  # it waits before touching anything
    code, stdout, stderr = waiting.finish()
    assert code == 0 and "published" in stdout, stderr
    assert indexed_ids(assert_index_healthy(env)) == env.corpus_ids()


def test_second_build_refuses_clearly_after_lock_timeout(make_env):
    env = make_env(lock_timeout=1)
    before = publish.require_current(env.index)
    env.dirty(20)
    with publish.build_lock(env.index, timeout=10):
        code, stdout, stderr = Build.start(env).finish()
    assert code == 2 and stdout == ""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another build is running" in errors[0] and str(env.index) in errors[0]
    assert publish.require_current(env.index) == before
    assert_index_healthy(env)


def test_two_builds_started_together_never_corrupt_the_index(env):
    env.dirty(60)
    first, second = Build.start(env), Build.start(env)
    results = [first.finish(), second.finish()]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 0], results  # the default lock_timeout is long: the second one waits
    assert all("Traceback" not in stderr for _, _, stderr in results)
    outputs = [stdout for _, stdout, _ in results]
    assert sum("published" in out for out in outputs) == 1
    assert sum("nothing changed" in out for out in outputs) == 1
    waited = [stderr for _, _, stderr in results if "another build is running; waiting" in stderr]
    assert len(waited) <= 1
    live = assert_index_healthy(env)
    assert indexed_ids(live) == env.corpus_ids()
    assert os.listdir(env.index / publish.VERSIONS) and not staging_dirs(env)
