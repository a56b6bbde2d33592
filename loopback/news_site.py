"""A Chinese news site on loopback for ingestion tests and benchmarks: realistic pages from loopback/newsite,
an RSS and an Atom feed of them, and every kind of bad source (404, slow, trickling, huge,
redirect loops, PDF, image, binary, empty, XML that is no feed). It answers conditional GETs
(ETag, Last-Modified), can be told to fail a path for a while (`failures`), and logs every
request (`requests`), so watched feeds can be tested against it as it publishes."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from index.fetch import resolve

SITE = Path(__file__).resolve().parent / "newsite"
SICHUAN = "/finance/2021/06/19/sichuan-mining.html"
PBOC = "/finance/2021/06/21/pboc-talks.html"
OTC = "/society/content_8812.html"  # no date in the URL: the byline has it
FEED = "/rss/finance.xml"
SICHUAN_TITLE = "四川发文清理关停虚拟货币“挖矿”项目"
SITE_HOST = "news.example.cn"  # the name the pages' canonical links use
SICHUAN_URL = f"http://{SITE_HOST}/finance/2021/06/19/sichuan-mining.html"  # its canonical link
PAGE_NOISE = ("首页", "广告", "网友评论", "早就该管管了", "热门排行", "showAd", "相关阅读", "Copyright", "登录")
HUGE = 50 * 1024 * 1024
LAST_MODIFIED = "Wed, 23 Jun 2021 01:15:00 GMT"
ATOM = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>示例新闻网 - 社会</title>
  <id>urn:example:society</id>
  <updated>2021-06-23T09:15:00+08:00</updated>
  <entry>
    <title>多地警方通报：出租出借银行卡参与虚拟货币“跑分”被查</title>
    <link rel="alternate" href="{{base}}{OTC}"/>
    <id>urn:example:otc</id>
    <updated>2021-06-23T09:15:00+08:00</updated>
  </entry>
  <entry>
    <title>没有链接的条目</title>
    <id>urn:example:nolink</id>
    <updated>2021-06-23T09:15:00+08:00</updated>
  </entry>
</feed>
"""


@dataclass(frozen=True)
class HostsResolver:
    """Fixed answers for some names (an /etc/hosts of the tests' own), the system resolver for
    the rest; picklable, so the isolated child can use it too."""

    hosts: tuple[tuple[str, tuple[str, ...]], ...]

    def __call__(self, host: str, port: int, timeout: float) -> Sequence[str]:
        table = dict(self.hosts)
        return table[host] if host in table else resolve(host, port, timeout)


SITE_RESOLVER = HostsResolver(((SITE_HOST, ("127.0.0.1",)),))


@dataclass(frozen=True)
class Request:
    path: str  # with the query
    headers: dict[str, str]
    started: float  # time.monotonic()
    finished: float


def article_page(title: str, date: str, paragraphs: list[str]) -> bytes:
    """A plain article page, for stories a test publishes."""
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


class NewsSite:
    """A ThreadingHTTPServer on 127.0.0.1 serving loopback/newsite and the bad cases."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        feed = (SITE / "feed.xml").read_text(encoding="utf-8").replace("{base}", self.base)
        feed = feed.replace("/society/2021/06/23/otc-cards.html", OTC)
        self.routes: dict[str, tuple[str, bytes]] = {
            SICHUAN: ("text/html; charset=utf-8", (SITE / "sichuan-mining.html").read_bytes()),
            PBOC: ("text/html", (SITE / "pboc-talks.html").read_bytes()),  # GBK, named only in <meta>
            OTC: ("text/html; charset=UTF-8", (SITE / "otc-cards.html").read_bytes()),
            "/finance/": ("text/html; charset=utf-8", (SITE / "channel-index.html").read_bytes()),
            FEED: ("application/rss+xml; charset=utf-8", feed.encode("utf-8")),
            "/rss/broken.xml": ("application/rss+xml", (SITE / "broken-feed.xml").read_bytes()),
            "/report.pdf": ("application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"),
            "/photo.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
            "/download.bin": ("application/octet-stream", bytes(range(256)) * 4),
            "/empty.html": ("text/html", b""),
            "/data.xml": ("application/xml", b'<?xml version="1.0"?><data><row>1</row></data>'),
            # A UTF-8 page behind a server's default Latin-1 label, and an Atom feed labelled as HTML.
            "/mislabelled.html": ("text/html; charset=ISO-8859-1", (SITE / "sichuan-mining.html").read_bytes()),
            "/atom.xml": ("text/html", ATOM.replace("{base}", self.base).encode("utf-8")),
        }
        self.redirects = {
            "/moved": OTC,
            "/loop/a": "/loop/b",
            "/loop/b": "/loop/a",
            "/to-ftp": "ftp://127.0.0.1/article.html",
        }
        self.failures: dict[str, int] = {}  # path -> how many more requests get a 500
        self.requests: list[Request] = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def named(self, path: str) -> str:
        """The URL under the site's own name (`SITE_HOST`, resolved by `SITE_RESOLVER`)."""
        return f"http://{SITE_HOST}:{self.server.server_address[1]}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                started = time.monotonic()
                try:
                    self._route(self.path.split("?", 1)[0])
                finally:
                    site.requests.append(Request(self.path, dict(self.headers), started, time.monotonic()))

            def _route(self, path: str) -> None:
                if site.failures.get(path, 0) > 0:
                    site.failures[path] -= 1
                    self._send(500, "text/html", b"<html><body>Internal Server Error</body></html>")
                elif path in site.routes:
                    content_type, body = site.routes[path]
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.end_headers()
                        return
                    self._send(200, content_type, body, {"ETag": etag, "Last-Modified": LAST_MODIFIED})
                elif path in site.redirects:
                    self.send_response(302)
                    self.send_header("Location", site.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/slow":
                    time.sleep(3)  # longer than the tests' 0.5 s timeout
                    self._send(200, "text/html", b"<html><body><p>late</p></body></html>")
                elif path == "/huge":
                    self._stream_huge()
                elif path == "/trickle":
                    self._trickle()
                elif path == "/huge-declared":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(HUGE))
                    self.end_headers()
                else:
                    self._send(404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>")

            def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.wfile.write(body)

            def _stream_huge(self) -> None:
                """A 50 MB page without Content-Length: only reading it reveals its size."""
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = ("<p>" + "新闻正文。" * 2000 + "</p>\n").encode("utf-8")
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped at its cap
                    self.wfile.write(b"<html><body>")
                    for _ in range(HUGE // len(chunk)):
                        self.wfile.write(chunk)

            def _trickle(self) -> None:
                """A byte every 0.2 s: never silent for a whole timeout, never finished."""
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for _ in range(150):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Story:
    """An article a test publishes on the site (and in a watched feed), with a question only it answers."""

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


def publish(
    site: NewsSite,
    feed_path: str,
    stories: list[Story],
    extra: Sequence[tuple[str, str, str, str]] = (),
) -> None:
    """Put the stories' pages on the site and list them (newest first), then `extra` items
    (link, guid, title, summary), in the RSS feed at `feed_path`."""
    for story in stories:
        site.routes[story.path] = (
            "text/html; charset=utf-8",
            article_page(story.title, story.date, list(story.paragraphs)),
        )
    items = [(site.url(s.path), f"guid-{s.slug}", s.title, s.summary) for s in stories]
    site.routes[feed_path] = ("application/rss+xml; charset=utf-8", rss("监视测试网", [*items, *extra]))
