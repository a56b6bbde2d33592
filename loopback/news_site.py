"""A Chinese news site on loopback for ingestion tests: realistic pages from tests/data/newsite,
an RSS and an Atom feed of them, and every kind of bad source (404, slow, trickling, huge,
redirect loops, PDF, image, binary, empty, XML that is no feed). It answers conditional GETs
(ETag, Last-Modified), can be told to fail a path for a while (`failures`), and logs every
request (`requests`), so watched feeds can be tested against it as it publishes the stories of
`bench.feed_site`."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.feed_site import Request
from index.fetch import resolve
from settings import PROJECT_ROOT

SITE = PROJECT_ROOT / "tests" / "data" / "newsite"
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


class NewsSite:
    """A ThreadingHTTPServer on 127.0.0.1 serving tests/data/newsite and the bad cases."""

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
