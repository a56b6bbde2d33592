"""Watched feeds (`index.feeds`, `python -m index watch`) against the loopback news site as it
publishes: conditional GETs, entries taken once (by link, guid, or title and summary), a
failing feed that backs off and recovers, and the state `index info` reports."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_config, write_config

from index.__main__ import main
from index.feeds import FeedStore, feed_status, watch_once
from loopback.news_site import LAST_MODIFIED, STORIES, NewsSite, publish
from retrieval import Retriever
from settings import PROJECT_ROOT, Config

NEIMENGGU, YUNNAN, XINJIANG = STORIES["neimenggu"], STORIES["yunnan"], STORIES["xinjiang"]


@pytest.fixture
def feed_path(request: pytest.FixtureRequest) -> str:
    """A feed path of this test's own on the shared site."""
    return f"/watch/{request.node.name}.xml"


@pytest.fixture
def config(tmp_path: Path, site: NewsSite, feed_path: str) -> Config:
    corpus = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus" / "articles", corpus)
    base = make_config(corpus, tmp_path / "index")
    ingest = replace(
        base.ingest, timeout=2.0, download_seconds=5.0, allow_hosts=("127.0.0.1",), feeds=(site.url(feed_path),)
    )
    return replace(base, ingest=ingest)


def requests_for(site: NewsSite, since: int, prefix: str) -> list[str]:
    return [r.path for r in site.requests[since:] if r.path.startswith(prefix)]


def answer(config: Config, question: str) -> str:
    retriever = Retriever.open(config.index.dir, config)
    try:
        return retriever.search(question, k=1)[0].text
    finally:
        retriever.close()


def test_a_watched_feed_is_taken_once_with_conditional_gets(site, config, feed_path):
    publish(site, feed_path, [YUNNAN, NEIMENGGU])
    first = watch_once(config, isolated=False)
    assert [p.status for p in first.polls] == ["ok"] and first.ok
    assert sorted(r.status for r in first.results) == ["added", "added"]
    assert first.build is not None and first.build.published
    assert YUNNAN.answer in answer(config, YUNNAN.question)

    # Nothing new: a conditional GET, answered 304, and no article fetched again.
    mark = len(site.requests)
    second = watch_once(config, isolated=False)
    assert [p.status for p in second.polls] == ["unchanged"] and second.build is None
    [feed_request] = site.requests[mark:]
    assert feed_request.headers["If-None-Match"].startswith('"')
    assert feed_request.headers["If-Modified-Since"] == LAST_MODIFIED

    # A new story: only its page is fetched.
    publish(site, feed_path, [XINJIANG, YUNNAN, NEIMENGGU])
    mark = len(site.requests)
    third = watch_once(config, isolated=False)
    assert [(r.source, r.status) for r in third.results] == [(site.url(XINJIANG.path), "added")]
    assert requests_for(site, mark, "/watch/") == [feed_path, XINJIANG.path]
    assert XINJIANG.answer in answer(config, XINJIANG.question)

    # Republished entries: a new link with a known guid, a new link and guid with a known title
    # and summary, and a known link listed twice: none is fetched.
    copies = [
        (site.url("/copy/a.html"), f"guid-{YUNNAN.slug}", "转载", "转载"),
        (site.url("/copy/b.html"), "guid-new", NEIMENGGU.title, NEIMENGGU.summary),
        (site.url(XINJIANG.path), "guid-other", "重复", "重复"),
    ]
    publish(site, feed_path, [XINJIANG, YUNNAN, NEIMENGGU], copies)
    mark = len(site.requests)
    fourth = watch_once(config, isolated=False)
    assert [p.status for p in fourth.polls] == ["ok"] and fourth.results == ()
    assert requests_for(site, mark, "/") == [feed_path]

    [status] = feed_status(config)
    assert status["articles_taken"] == 3 and status["last_success"] and not status["last_error"]


def test_a_failing_feed_backs_off_and_recovers_with_one_alert_each_way(site, config, feed_path):
    publish(site, feed_path, [NEIMENGGU])
    site.failures[feed_path] = 2
    url = config.ingest.feeds[0]
    start = 1_000_000.0
    poll = config.ingest.poll_minutes * 60

    def pass_at(offset: float) -> list[str]:
        mark = len(site.requests)
        watch_once(config, isolated=False, now=start + offset)
        return requests_for(site, mark, feed_path)

    def alerts() -> list[tuple[str, bool]]:
        with FeedStore.beside_index(config.index.dir) as store:
            pending = [(s.url, s.failing) for s in store.pending_alerts(config.ingest.feeds)]
            for state in store.pending_alerts(config.ingest.feeds):
                store.mark_alerted(state.url, state.failing)
        return pending

    assert pass_at(0) == [feed_path]
    assert alerts() == [(url, True)]  # told once that it fails
    [status] = feed_status(config)
    assert (status["failures"], status["last_error"]) == (1, "HTTP 500 Internal Server Error")
    assert pass_at(60) == []  # backing off: not asked again before one poll interval
    assert pass_at(poll) == [feed_path]  # fails again
    assert alerts() == []  # still failing: no second message
    assert pass_at(poll + poll) == []  # now twice the interval
    assert pass_at(poll + 2 * poll) == [feed_path]  # recovers
    assert alerts() == [(url, False)]  # told once that it works again
    assert alerts() == []
    [status] = feed_status(config)
    assert (status["failures"], status["last_error"], status["articles_taken"]) == (0, "", 1)


def test_index_watch_and_info_from_the_command_line(site, config, feed_path, tmp_path, capsys):
    publish(site, feed_path, [NEIMENGGU])
    ingest = {"allow_hosts": ["127.0.0.1"], "feeds": [site.url(feed_path)]}
    config_file = write_config(
        tmp_path / "config.toml", corpus=config.corpus.dir, index=config.index.dir, ingest=ingest
    )
    assert main(["watch", "--config", str(config_file)]) == 0  # reads the feed in a limited child
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"added {site.url(NEIMENGGU.path)} → 127.0.0.1_")
    assert out[1] == f"feed {site.url(feed_path)}: 1 new entries, 1 articles added or updated"
    assert out[2].startswith("articles: 2 added")

    assert main(["info", "--config", str(config_file)]) == 0
    [feed] = json.loads(capsys.readouterr().out)["feeds"]
    assert (feed["url"], feed["articles_taken"], feed["failures"]) == (site.url(feed_path), 1, 0)


def test_index_watch_without_feeds_is_one_line(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[corpus]\ndir = "{corpus}"\n[index]\ndir = "{tmp_path / "index"}"\n', encoding="utf-8")
    assert main(["watch", "--config", str(config_file)]) == 2
    assert capsys.readouterr().err == "error: no feeds to watch: list them in [ingest] feeds\n"
