"""A loopback server that attacks its client, for the fetching tests: headers or bodies
dripped a byte at a time, compression bombs (one layer and stacked), endless empty deflate
blocks, redirects to internal addresses, broken HTTP, huge feeds, and a page that costs
seconds of CPU to read. Raw sockets, so nothing is cleaned up on the way out."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable

from loopback.news_site import SITE

BOMB_SIZE = 16 * 1024 * 1024  # zeros, before compression
ARTICLE = (SITE / "sichuan-mining.html").read_bytes()
# An empty, non-final stored deflate block: decodes to nothing, and another may always follow.
EMPTY_BLOCK = b"\x00\x00\x00\xff\xff"
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def gzip_bomb() -> bytes:
    return gzip.compress(bytes(BOMB_SIZE), compresslevel=9)


def stacked_bomb() -> bytes:
    return gzip.compress(gzip_bomb(), compresslevel=9)


def huge_feed(entries: int, base: str) -> bytes:
    """An RSS feed of `entries` items, each linking to the article page."""
    items = "".join(
        f"<item><title>条目{i}</title><link>{base}/article.html?n={i}</link><guid>n{i}</guid></item>"
        for i in range(entries)
    )
    head = '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>大</title>'
    return f"{head}{items}</channel></rss>".encode()


def slow_page(paragraphs: int = 40_000) -> bytes:
    """A valid article page that takes a reader many CPU seconds (tens of thousands of paragraphs)."""
    body = "".join(f"<div><p>第{i}段新闻正文，虚拟货币挖矿项目清理工作正在推进。</p></div>" for i in range(paragraphs))
    return f"<html><body><article>{body}</article></body></html>".encode()


class HostileSite:
    """Raw-socket HTTP on 127.0.0.1: each path is one behaviour; `hosts` records the Host
    header of every request, `paths` every path asked for."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.hosts: list[str] = []
        self.paths: list[str] = []
        self.redirects: dict[str, str] = {}
        self.bodies: dict[str, tuple[str, bytes]] = {"/article.html": ("text/html; charset=utf-8", ARTICLE)}
        self._closed = threading.Event()
        self._gzip_bomb = gzip_bomb()
        self._stacked = stacked_bomb()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._closed.set()
        self.sock.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            lines = request.split(b"\r\n")
            path = lines[0].split()[1].decode()
            headers = dict(line.decode().split(": ", 1) for line in lines[1:] if b": " in line)
            self.hosts.append(headers.get("Host", ""))
            self.paths.append(path)
            self._respond(conn, path.split("?", 1)[0])

    def _respond(self, conn: socket.socket, path: str) -> None:
        behaviours: dict[str, Callable[[socket.socket], None]] = {
            "/drip-headers": self._drip_headers,
            "/drip-body": self._drip_body,
            "/gzip-bomb": lambda c: self._send(c, "text/html", self._gzip_bomb, "gzip"),
            "/gzip-gzip": lambda c: self._send(c, "text/html", self._stacked, "gzip, gzip"),
            "/brotli": lambda c: self._send(c, "text/html", b"\x0b\x02\x80<html>", "br"),
            "/empty-gzip-blocks": lambda c: self._endless(c, "gzip", GZIP_HEADER),
            "/empty-deflate-blocks": lambda c: self._endless(c, "deflate", b"\x78\x9c"),
            "/gzip-article": lambda c: self._send(c, "text/html; charset=utf-8", gzip.compress(ARTICLE), "gzip"),
            "/deflate-article": lambda c: self._send(c, "text/html; charset=utf-8", _raw_deflate(ARTICLE), "deflate"),
            "/broken-http": lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nSECRET-TOKEN-8812 is not a header\r\n\r\n"),
            "/secret.json": lambda c: self._send(c, "application/json", b'{"secret": "SECRET-TOKEN-8812"}'),
        }
        if path in self.redirects:
            location = self.redirects[path].encode()
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
        elif path in behaviours:
            behaviours[path](conn)
        elif path in self.bodies:
            self._send(conn, *self.bodies[path])
        else:
            self._send(conn, "text/html", b"<html><body>not found</body></html>", status="404 Not Found")

    @staticmethod
    def _send(conn: socket.socket, content_type: str, body: bytes, encoding: str = "", status: str = "200 OK") -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        if encoding:
            head += f"Content-Encoding: {encoding}\r\n"
        conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)

    def _drip_headers(self, conn: socket.socket) -> None:
        """A header a byte every 0.2 s: never silent for a whole timeout, never finished."""
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while not self._closed.is_set():
            conn.sendall(b"a")
            time.sleep(0.2)

    def _drip_body(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html>")
        while not self._closed.is_set():
            conn.sendall(b" ")
            time.sleep(0.2)

    def _endless(self, conn: socket.socket, encoding: str, header: bytes) -> None:
        """A compressed body of empty blocks, 5 kB every 0.05 s: it decodes to nothing, forever."""
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: {encoding}\r\n"
            "Connection: close\r\n\r\n".encode()
            + header
        )
        while not self._closed.is_set():
            conn.sendall(EMPTY_BLOCK * 1000)
            time.sleep(0.05)


def _raw_deflate(data: bytes) -> bytes:
    """Deflate without the zlib wrapper, as some servers send it."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()
