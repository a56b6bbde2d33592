"""Safe fetching (`index.fetch`) against a loopback server that attacks its client: internal
addresses in every spelling and behind redirects, names that resolve to them, dripped headers
and bodies, compression bombs, endless empty deflate blocks, broken HTTP, huge feeds, and
file names that try to leave the corpus. Every refusal is one line naming its rule, and
nothing is written for it."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_config
from hostile_site import HostileSite, huge_feed

from index.add import AddReport, add_sources, url_file_name
from index.fetch import FetchError, resolve
from loopback.news_site import HostsResolver
from settings import Config, ConfigError, load_config

HINT = "(allow it with [ingest] allow_hosts)"
RESOLVER = HostsResolver(
    (
        ("public.test", ("127.0.0.1",)),  # the hostile site, under a name allow_hosts lists
        ("internal.test", ("10.1.2.3",)),
        ("metadata.test", ("169.254.169.254",)),
        ("mixed.test", ("93.184.216.34", "10.0.0.7")),
    )
)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileSite]:
    server = HostileSite()
    yield server
    server.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Short limits; only the hostile site's name is allowed, not its address."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    base = make_config(corpus, tmp_path / "index")
    ingest = replace(base.ingest, timeout=0.5, download_seconds=1.0, allow_hosts=("public.test",), max_feed_entries=3)
    return replace(base, ingest=ingest)


def add(config: Config, *sources: str, resolver: object = RESOLVER) -> AddReport:
    return add_sources(config, list(sources), build=False, resolver=resolver)  # type: ignore[arg-type]


def detail(report: AddReport) -> str:
    assert len(report.results) == 1, report.results
    assert report.results[0].status == "skipped", report.results
    return report.results[0].detail


def written(config: Config) -> list[str]:
    root = Path(config.corpus.dir)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------- addresses


LOOPBACK = f"refused: 127.0.0.1 is a loopback address {HINT}"
REFUSED = {
    "short": ("http://127.1:{port}/article.html", LOOPBACK),
    "hex": ("http://0x7f000001:{port}/article.html", LOOPBACK),
    "decimal": ("http://2130706433:{port}/article.html", LOOPBACK),
    "dotted": ("http://127.0.0.1:{port}/article.html", LOOPBACK),
    "zero": ("http://0:{port}/article.html", f"refused: 0.0.0.0 is the unspecified address {HINT}"),
    "v6-unspecified": ("http://[::]:{port}/article.html", f"refused: :: is the unspecified address {HINT}"),
    "v6-loopback": ("http://[::1]:{port}/article.html", f"refused: ::1 is a loopback address {HINT}"),
    "v4-mapped": (
        "http://[::ffff:127.0.0.1]:{port}/article.html",
        f"refused: ::ffff:127.0.0.1 is an IPv4-mapped IPv6 address {HINT}",
    ),
    "v4-compatible": ("http://[::127.0.0.1]/", f"refused: ::127.0.0.1 is an IPv4-compatible IPv6 address {HINT}"),
    "6to4": (
        "http://[2002:7f00:1::]/",
        f"refused: 2002:7f00:1:: is an IPv6 address wrapping 127.0.0.1, a loopback address {HINT}",
    ),
    "nat64": (
        "http://[64:ff9b::a00:1]/",
        f"refused: 64:ff9b::a00:1 is an IPv6 address wrapping 10.0.0.1, a private address {HINT}",
    ),
    "metadata": (
        "http://169.254.169.254/latest/meta-data/",
        f"refused: 169.254.169.254 is a link-local address {HINT}",
    ),
    "cgnat": ("http://100.64.0.1/", f"refused: 100.64.0.1 is a shared (CGNAT) address {HINT}"),
    "multicast": ("http://224.0.0.1/", f"refused: 224.0.0.1 is a multicast address {HINT}"),
    "private": ("http://192.168.1.1/", f"refused: 192.168.1.1 is a private address {HINT}"),
    "reserved": ("http://240.0.0.1/", f"refused: 240.0.0.1 is a reserved address {HINT}"),
    "v6-link-local": ("http://[fe80::1]/", f"refused: fe80::1 is a link-local address {HINT}"),
    "v6-unique-local": ("http://[fd00::1]/", f"refused: fd00::1 is a private address {HINT}"),
    "name-private": ("http://internal.test/", f"refused: internal.test resolves to 10.1.2.3, a private address {HINT}"),
    "name-metadata": (
        "http://metadata.test/",
        f"refused: metadata.test resolves to 169.254.169.254, a link-local address {HINT}",
    ),
    "one-bad-address": ("http://mixed.test/", f"refused: mixed.test resolves to 10.0.0.7, a private address {HINT}"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_internal_addresses_are_refused_before_anything_is_sent(hostile, config, case):
    url, expected = REFUSED[case]
    before = len(hostile.paths)
    report = add(config, url.format(port=hostile.port))
    assert detail(report).startswith(expected.rstrip()), detail(report)
    assert report.results[0].line().startswith(f"skipped {url.format(port=hostile.port)}: refused: ")
    assert len(hostile.paths) == before and written(config) == []


def test_localhost_from_the_system_resolver_is_refused(hostile, config):
    found = detail(add(config, hostile.url("/article.html", "localhost"), resolver=None))
    assert re.fullmatch(r"refused: localhost resolves to (127\.0\.0\.1|::1), a loopback address \(.+\)", found), found


def test_octal_forms_are_not_valid_urls(config):
    assert detail(add(config, "http://0177.0.0.1/")) == "not a valid URL"


def test_allow_hosts_lets_an_operator_fetch_an_internal_address(hostile, config):
    allowed = replace(config, ingest=replace(config.ingest, allow_hosts=("127.0.0.0/8",)))
    report = add(allowed, f"http://127.1:{hostile.port}/article.html")
    assert [r.status for r in report.results] == ["added"]


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (["http://intranet/"], "neither a host name nor an address"),
        (["10.0.0.0/33"], "neither a host name nor an address"),
        ([""], "must be a list of non-empty strings"),
        ("127.0.0.1", "must be a list of non-empty strings"),
    ],
)
def test_bad_allow_hosts_is_a_config_error(tmp_path, entries, problem):
    path = tmp_path / "config.toml"
    value = f'"{entries}"' if isinstance(entries, str) else "[" + ", ".join(f'"{e}"' for e in entries) + "]"
    path.write_text(f"[ingest]\nallow_hosts = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path)


def test_every_redirect_hop_is_checked(hostile, config):
    hostile.redirects |= {
        "/to-loopback": hostile.url("/article.html"),
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        "/to-unspecified": f"http://[::]:{hostile.port}/article.html",
        "/to-internal-name": "http://internal.test/admin",
        "/to-article": "/article.html",
    }
    before = len(hostile.paths)
    refused = {
        path: detail(add(config, hostile.url(path, "public.test")))
        for path in ("/to-loopback", "/to-metadata", "/to-unspecified", "/to-internal-name")
    }
    assert refused == {
        "/to-loopback": LOOPBACK,
        "/to-metadata": f"refused: 169.254.169.254 is a link-local address {HINT}",
        "/to-unspecified": f"refused: :: is the unspecified address {HINT}",
        "/to-internal-name": f"refused: internal.test resolves to 10.1.2.3, a private address {HINT}",
    }
    assert hostile.paths[before:] == list(refused)  # no redirect target was ever asked for
    assert written(config) == []
    followed = add(config, hostile.url("/to-article", "public.test"))
    assert [r.status for r in followed.results] == ["added"]


class Rebinding:
    """A name that resolves to an allowed address once, then to an internal one."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int, timeout: float) -> list[str]:
        self.calls += 1
        return ["127.0.0.1"] if self.calls == 1 else ["10.9.9.9"]


def test_the_connection_goes_to_the_address_that_was_checked(hostile, config):
    """No second lookup between check and connect; Host keeps the name."""
    allowed = replace(config, ingest=replace(config.ingest, allow_hosts=("127.0.0.1",)))
    rebinding = Rebinding()
    report = add(allowed, hostile.url("/article.html", "rebind.test"), resolver=rebinding)
    assert [r.status for r in report.results] == ["added"] and rebinding.calls == 1
    assert hostile.hosts[-1] == f"rebind.test:{hostile.port}"


def test_dns_has_a_timeout(monkeypatch):
    def slow_lookup(*args: object, **kwargs: object) -> list[object]:
        time.sleep(3)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    with pytest.raises(FetchError, match=r"^cannot resolve slow\.test: no answer within 0\.2s$"):
        resolve("slow.test", 80, 0.2)


# ---------------------------------------------------------------- time and size


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/drip-headers", "download took longer than 1s"),
        ("/drip-body", "download took longer than 1s"),
        ("/empty-gzip-blocks", "download took longer than 1s"),
        ("/empty-deflate-blocks", "download took longer than 1s"),
        ("/gzip-bomb", "too large (more than the 5.0 MB limit once decompressed)"),
        ("/gzip-gzip", "refused: stacked content encodings (gzip, gzip) are not accepted"),
        ("/brotli", "refused: content encoding 'br' was not asked for"),
        ("/broken-http", "the server's answer is not valid HTTP"),
        ("/secret.json", "not a web page or feed (application/json)"),
    ],
)
def test_hostile_answers_end_in_one_line(hostile, config, path, expected):
    found = detail(add(config, hostile.url(path, "public.test")))
    assert found == expected and "SECRET" not in found
    assert written(config) == []


@pytest.mark.parametrize("path", ["/gzip-article", "/deflate-article"])
def test_compressed_pages_are_read(hostile, config, path):
    report = add(config, hostile.url(path, "public.test"))
    assert [r.status for r in report.results] == ["added"]


def test_a_huge_feed_is_cut_to_max_feed_entries(hostile, config):
    hostile.bodies["/huge.xml"] = ("application/rss+xml", huge_feed(100_000, f"http://public.test:{hostile.port}"))
    big = replace(config, ingest=replace(config.ingest, max_bytes=16_000_000, download_seconds=10.0))
    before = len(hostile.paths)
    report = add(big, hostile.url("/huge.xml", "public.test"))
    fetched = [p for p in hostile.paths[before:] if p.startswith("/article.html")]
    assert fetched == [f"/article.html?n={i}" for i in range(3)]
    assert [r.status for r in report.results[:3]] == ["added", "updated", "updated"]  # one text under three links
    assert report.results[-1].detail == (
        "99997 more feed entries left out: at most 3 are taken per feed and per add ([ingest] max_feed_entries)"
    )


def test_max_feed_entries_holds_for_a_whole_add(hostile, config):
    for name in ("a", "b"):
        hostile.bodies[f"/{name}.xml"] = ("application/rss+xml", huge_feed(2, f"http://public.test:{hostile.port}"))
    before = len(hostile.paths)
    report = add(config, hostile.url("/a.xml", "public.test"), hostile.url("/b.xml", "public.test"))
    assert len([p for p in hostile.paths[before:] if p.startswith("/article.html")]) == 3
    assert report.results[-1].detail.startswith("1 more feed entries left out")


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "url",
    [
        "http://[::]/",
        "http://[::1]:8080/a.html",
        "http://../",
        "http://a/../../etc/passwd",
        "http://a/%2e%2e/%2e%2e/x",
        "http://a/..%2f..%2fx",
        "http://%2e%2e/",
        "http://.../..",
    ],
)
def test_article_file_names_stay_inside_the_corpus(tmp_path, url):
    rel = url_file_name(url)
    assert not Path(rel).is_absolute() and ".." not in Path(rel).parts
    assert (tmp_path / rel).resolve().is_relative_to(tmp_path)


def test_a_symlink_out_of_the_corpus_is_not_followed(hostile, config, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    url = hostile.url("/article.html", "public.test")
    (Path(config.corpus.dir) / url_file_name(url)).parent.symlink_to(outside)
    found = detail(add(config, url))
    assert found.startswith("refused: public.test_") and found.endswith("would be written outside the corpus directory")
    assert list(outside.iterdir()) == []


def test_a_cancelled_isolated_add_stops_its_child(hostile, config):
    slow = replace(config, ingest=replace(config.ingest, download_seconds=60.0, timeout=30.0))
    cancel = threading.Event()
    threading.Timer(2.0, cancel.set).start()
    report = add_sources(
        slow, [hostile.url("/drip-body", "public.test")], isolated=True, cancel=cancel, resolver=RESOLVER
    )
    assert [(r.status, r.detail) for r in report.results] == [("skipped", "cancelled")]
    assert report.build is None and written(config) == []
