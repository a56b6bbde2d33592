"""Stories published on a loopback news feed while a bot watches it: the stories (each with a
question only it answers), their pages and RSS feed, and a minimal site serving them.

`bench/feeds.py` times them end to end; the tests' news site (`tests/news_site.py`) publishes
the same stories among its realistic pages and bad cases. Tests import this module, never the
other way round.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol


@dataclass(frozen=True)
class Request:
    """One request a site served."""

    path: str  # with the query
    headers: dict[str, str]
    started: float  # time.monotonic()
    finished: float


@dataclass(frozen=True)
class Story:
    """An article published on the site (and in a watched feed), with a question only it answers."""

    slug: str
    title: str
    date: str
    paragraphs: tuple[str, ...]
    question: str
    answer: str  # words of the answer that the reply must quote

    @property
    def path(self) -> str:
        return f"/watch/{self.slug}.html"

    @property
    def summary(self) -> str:
        return self.paragraphs[0]


STORIES = {
    story.slug: story
    for story in (
        Story(
            "neimenggu",
            "内蒙古全面清理关停虚拟货币挖矿项目",
            "2021-05-25",
            (
                "内蒙古自治区发展和改革委员会发布通知，要求全面清理关停区内的虚拟货币挖矿项目，并在6月底前完成退出工作。",
                "通知指出，对仍然违规开展挖矿活动的企业，将按照高耗能行业标准执行差别电价，并追究有关人员的责任。",
                "据统计，内蒙古此前共排查出四十五个疑似挖矿项目，其中大部分已经停止用电并开始拆除设备。",
            ),
            "内蒙古排查出多少个疑似挖矿项目？",
            "四十五个",
        ),
        Story(
            "yunnan",
            "云南对违规供电的小水电站开出罚单",
            "2021-06-09",
            (
                "云南省能源局通报，三家小水电站因向虚拟货币挖矿项目违规供电，被处以每家八十万元的罚款。",
                "能源局要求各地对辖区内的数据中心逐一核查，发现挖矿用电的一律断电，并将结果报送省里。",
                "业内人士说，丰水期的低价电力曾吸引大批矿工南迁，这次处罚意味着云南的大门已经关上。",
            ),
            "云南违规供电的小水电站每家被罚多少钱？",
            "八十万元",
        ),
        Story(
            "xinjiang",
            "新疆昌吉州责令挖矿企业立即停产",
            "2021-06-11",
            (
                "新疆昌吉回族自治州发展和改革委员会下发通知，责令辖区内的虚拟货币挖矿企业立即停产整顿。",
                "通知要求供电企业在三个工作日内完成排查，对继续挖矿的企业采取停电措施，并上报处置结果。",
                "当地一家矿场的负责人表示，已经开始把两千台矿机装箱，准备运往哈萨克斯坦。",
            ),
            "昌吉州的矿场负责人准备把多少台矿机运往哈萨克斯坦？",
            "两千台矿机",
        ),
    )
}


def article_page(title: str, date: str, paragraphs: list[str]) -> bytes:
    """A plain article page."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'<html><head><title>{title}</title><meta property="article:published_time" content="{date}"></head>'
        f"<body><article><h1>{title}</h1>{body}</article></body></html>"
    ).encode()


def rss(title: str, items: list[tuple[str, str, str, str]]) -> bytes:
    """An RSS 2.0 feed of (link, guid, title, summary) items."""
    entries = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{guid}</guid><description>{summary}</description></item>"
        for link, guid, t, summary in items
    )
    head = f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
    return f"{head}{entries}</channel></rss>".encode()


class Site(Protocol):
    """What `publish` needs of a site: its routes (path -> content type, body) and its URLs."""

    routes: dict[str, tuple[str, bytes]]

    def url(self, path: str) -> str: ...


def publish(site: Site, feed_path: str, stories: list[Story], extra: Sequence[tuple[str, str, str, str]] = ()) -> None:
    """Put the stories' pages on the site and list them (newest first), then `extra` items
    (link, guid, title, summary), in the RSS feed at `feed_path`."""
    for story in stories:
        site.routes[story.path] = (
            "text/html; charset=utf-8",
            article_page(story.title, story.date, list(story.paragraphs)),
        )
    items = [(site.url(s.path), f"guid-{s.slug}", s.title, s.summary) for s in stories]
    site.routes[feed_path] = ("application/rss+xml; charset=utf-8", rss("监视测试网", [*items, *extra]))


class FeedSite:
    """The benchmark's site on 127.0.0.1: what `publish` put there, every request logged."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[Request] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="feed-site", daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                started = time.monotonic()
                route = site.routes.get(self.path.split("?", 1)[0])
                status, (content_type, body) = (200, route) if route else (404, ("text/html", b"Not Found"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)
                site.requests.append(Request(self.path, dict(self.headers), started, time.monotonic()))

        return Handler
