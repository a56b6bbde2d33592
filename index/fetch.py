"""Fetching pages and feeds from a network that is assumed hostile.

Every host is resolved (with a timeout) and each of its addresses checked before anything
is sent: loopback, private, link-local, shared (CGNAT), multicast, reserved and unspecified
addresses, and IPv6 forms that wrap one of them, are refused unless `[ingest] allow_hosts`
names the host or a range holding the address. The connection then goes to the address that
was checked, never to a second lookup of the name (a DNS answer that changes between check
and connect cannot redirect it), while the Host header, TLS SNI and certificate checks still
use the name. Redirects are followed here, one checked hop at a time.

One deadline (`download_seconds`) covers resolving, connecting, headers and body: every
socket operation waits at most until it, so a server dripping a byte every few seconds is cut
off. Bodies are decompressed here, incrementally and within the same `max_bytes` cap as the
raw bytes, so a compressed bomb stops at the cap and a body of empty deflate blocks at the
deadline; stacked encodings (`gzip, gzip`) are refused. Every failure is a `FetchError`
whose message is one line for the operator; none quotes what the server sent.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message

import httpcore
import httpx

from settings import IngestConfig, allow_list

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port, seconds) -> the host's addresses; `FetchError` when it has none.
Resolver = Callable[[str, int, float], Sequence[str]]

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml", "text/xml"}
)
# Servers label anything with these; the body's first bytes decide.
VAGUE_TYPES = frozenset({"", "text/plain", "application/octet-stream", "binary/octet-stream"})
# What may precede a document's root element: a BOM, an XML declaration, comments.
_PROLOG = rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
_FEED_START = re.compile(_PROLOG + rb"<(?:rss|feed|rdf:RDF)\b", re.S)
_HTML_START = re.compile(_PROLOG + rb"<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Header values kept (validators) or shown (reason phrase): printable ASCII, bounded.
_PRINTABLE = re.compile(r"[^\x20-\x7e]")
ALLOW_HINT = "allow it with [ingest] allow_hosts"


class FetchError(Exception):
    """A URL that cannot or may not be fetched; the message is one line for the operator.

    `temporary` marks failures that may not happen again (timeouts, refused connections,
    5xx answers), as opposed to refusals and answers that will stay what they are.
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class Download:
    """A fetched page or feed; `kind` is "html", "feed", or "unchanged" (a 304 answer to a
    conditional GET, with no data). `etag` and `last_modified` are the validators to send next time."""

    url: str  # after redirects
    kind: str
    charset: str | None = None
    data: bytes = b""
    etag: str = ""
    last_modified: str = ""


def address_problem(address: IPAddress) -> str:
    """Why an address must not be fetched from ("" for a global unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if address in _IPV4_COMPATIBLE and int(address) > 1:
            return "an IPv4-compatible IPv6 address"
        wrapped = address.sixtofour or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        if wrapped is not None and address_problem(wrapped):
            return f"an IPv6 address wrapping {wrapped}, {address_problem(wrapped)}"
    checks = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address in _SHARED, "a shared (CGNAT) address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a global address"),
    )
    return next((problem for failed, problem in checks if failed), "")


def _is_numeric_host(host: str) -> bool:
    """An address written as one: 127.0.0.1, ::1, and the short, decimal, hex and octal
    IPv4 forms the resolver also accepts (127.1, 2130706433, 0x7f000001, 0177.0.0.1)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


class AddressPolicy:
    """Which resolved addresses may be connected to: global ones, and what
    `[ingest] allow_hosts` lists (host names, or addresses and CIDR ranges)."""

    def __init__(self, allow_hosts: Sequence[str]) -> None:
        self.names, self.networks = allow_list(allow_hosts)

    def refusal(self, host: str, address: str) -> str:
        """Why `host` may not be reached at `address` ("" when it may)."""
        if host.lower().rstrip(".") in self.names:
            return ""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in network for network in self.networks):
            return ""
        problem = address_problem(ip)
        if not problem:
            return ""
        subject = f"{address} is" if _is_numeric_host(host) else f"{host} resolves to {address},"
        return f"refused: {subject} {problem} ({ALLOW_HINT})"


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The system resolver, with a timeout it does not have: the lookup runs in a daemon
    thread that is abandoned when it takes too long."""
    answer: list[list[str] | OSError] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append([str(info[4][0]) for info in infos])
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=lookup, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        raise FetchError(f"cannot resolve {host}: no answer within {timeout:g}s", temporary=True)
    result = answer[0]
    if isinstance(result, OSError):
        reason = result.strerror or type(result).__name__
        raise FetchError(f"cannot resolve {host}: {reason}", temporary=True)
    if not result:
        raise FetchError(f"cannot resolve {host}: no addresses", temporary=True)
    return result


class _Clock:
    """The current fetch's deadline, which every socket operation is clamped to."""

    def __init__(self) -> None:
        self.deadline = float("inf")

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def limit(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the download deadline has passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads, writes and TLS handshake never wait past the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, clock: _Clock) -> None:
        self._stream = stream
        self._clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._clock.limit(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._clock.limit(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        limit = self._clock.limit(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, limit), self._clock)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the address checked for a host, whatever the host name would
    resolve to now; a host that was not checked is never connected to."""

    def __init__(self, clock: _Clock) -> None:
        self._backend = httpcore.SyncBackend()
        self._clock = clock
        self.pins: dict[tuple[str, int], str] = {}

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.NetworkStream:
        address = self.pins.get((host, port))
        if address is None:
            raise httpcore.ConnectError(f"{host} was not checked")
        limit = self._clock.limit(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(address, port, limit, local_address, socket_options)  # type: ignore[arg-type]
        return _DeadlineStream(stream, self._clock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: object = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched from")


class _Inflater:
    """The body's content encoding undone chunk by chunk, never producing more than `limit`
    bytes in all (a bomb stops at the cap, not after inflating)."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.produced = 0
        self._inflater = self._new()
        self._first = True

    def _new(self) -> zlib._Decompress:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS)  # deflate: zlib-wrapped (raw is tried below)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._inflater.eof:
                if self.encoding != "gzip":
                    break  # nothing follows a deflate stream
                self._inflater = self._new()  # concatenated gzip members are one body
            room = self.limit - self.produced
            try:
                chunk = self._inflater.decompress(data, room + 1)
            except zlib.error:
                if not (self._first and self.encoding == "deflate"):
                    raise FetchError(f"the {self.encoding} body is corrupt") from None
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, without the zlib wrapper
                self._first = False
                continue
            self._first = False
            self.produced += len(chunk)
            if self.produced > self.limit:
                raise FetchError(f"too large (more than the {_megabytes(self.limit)} limit once decompressed)")
            out.append(chunk)
            data = self._inflater.unused_data if self._inflater.eof else b""
        return b"".join(out)


class Fetcher:
    """GET with the rules and limits of `[ingest]`: http(s) only, checked and pinned
    addresses at every redirect hop, one deadline per fetch, raw and decoded size caps, HTML
    or feeds only. Not thread-safe: one per add, used by one thread."""

    def __init__(self, ingest: IngestConfig, *, resolver: Resolver | None = None) -> None:
        self.ingest = ingest
        self.policy = AddressPolicy(ingest.allow_hosts)
        self._resolve = resolver or resolve
        self._clock = _Clock()
        self._backend = _PinnedBackend(self._clock)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=self._backend,
            max_connections=4,
        )
        self._headers = [
            (b"User-Agent", ingest.user_agent.encode("ascii", "replace")),
            (
                b"Accept",
                b"text/html,application/xhtml+xml,application/rss+xml,application/atom+xml,"
                b"application/xml;q=0.9,*/*;q=0.1",
            ),
            (b"Accept-Language", b"zh-CN,zh;q=0.9,en;q=0.8"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.close()

    def get(self, url: str, *, etag: str = "", last_modified: str = "") -> Download:
        """The page or feed at `url`; with `etag`/`last_modified` a conditional GET that may
        answer "unchanged". Raises `FetchError`."""
        self._clock.deadline = time.monotonic() + self.ingest.download_seconds
        try:
            return self._get(_parse_url(url), etag, last_modified)
        except FetchError:
            raise
        except httpcore.TimeoutException:
            if self._clock.expired():
                raise FetchError(f"download took longer than {self.ingest.download_seconds:g}s") from None
            raise FetchError(f"timed out (no response within {self.ingest.timeout:g}s)", temporary=True) from None
        except httpcore.ConnectError as exc:
            raise FetchError(f"cannot connect: {_first_line(str(exc))}", temporary=True) from None
        except httpcore.ProtocolError:
            raise FetchError("the server's answer is not valid HTTP", temporary=True) from None
        except httpcore.NetworkError:
            raise FetchError("the connection broke off", temporary=True) from None
        finally:
            self._clock.deadline = float("inf")

    def _get(self, url: httpx.URL, etag: str, last_modified: str) -> Download:
        headers = list(self._headers)
        if etag:
            headers.append((b"If-None-Match", etag.encode("ascii")))
        if last_modified:
            headers.append((b"If-Modified-Since", last_modified.encode("ascii")))
        for _ in range(self.ingest.max_redirects + 1):
            port = self._pin(url)
            request_url = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=port, target=url.raw_path)
            timeouts = {kind: self.ingest.timeout for kind in ("connect", "read", "write", "pool")}
            # The Host header keeps the name (and brackets around an IPv6 address, which httpcore's lacks).
            hop_headers = [(b"Host", url.netloc), *headers]
            with self._pool.stream(
                "GET", request_url, headers=hop_headers, extensions={"timeout": timeouts}
            ) as response:
                response_headers = httpx.Headers(response.headers)
                if response.status in _REDIRECTS and "location" in response_headers:
                    url = _redirect_target(url, response_headers["location"])
                    continue
                if response.status == 304 and (etag or last_modified):
                    return Download(str(url), "unchanged", etag=etag, last_modified=last_modified)
                if not 200 <= response.status < 300:
                    reason = _PRINTABLE.sub("", response.extensions.get("reason_phrase", b"").decode("latin-1"))[:40]
                    raise FetchError(
                        f"HTTP {response.status} {reason}".rstrip(),
                        temporary=response.status >= 500 or response.status == 429,
                    )
                return self._body(str(url), response, response_headers)
        raise FetchError(f"too many redirects (more than {self.ingest.max_redirects})")

    def _pin(self, url: httpx.URL) -> int:
        """Resolve and check the URL's host; the backend will connect only to the checked
        address. Returns the port."""
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        timeout = self._clock.limit(self.ingest.timeout, httpcore.ConnectTimeout)
        addresses = self._resolve(host, port, timeout)
        for address in addresses:
            refusal = self.policy.refusal(host, address)
            if refusal:
                raise FetchError(refusal)
        self._backend.pins[(host, port)] = addresses[0]
        return port

    def _body(self, url: str, response: httpcore.Response, headers: httpx.Headers) -> Download:
        limit = self.ingest.max_bytes
        content_type, charset = content_type_of(headers.get("content-type", ""))
        if content_type not in HTML_TYPES | FEED_TYPES | VAGUE_TYPES:
            raise FetchError(f"not a web page or feed ({content_type})")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(f"too large ({_megabytes(int(declared))} > {_megabytes(limit)} limit)")
        encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",") if e.strip()]
        encodings = [e for e in encodings if e != "identity"]
        if len(encodings) > 1:
            raise FetchError(f"refused: stacked content encodings ({', '.join(encodings)}) are not accepted")
        encoding = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}.get(encodings[0] if encodings else "")
        if encodings and encoding is None:
            raise FetchError(f"refused: content encoding {encodings[0][:20]!r} was not asked for")
        inflater = _Inflater(encoding, limit) if encoding else None
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_stream():
            size += len(chunk)
            if size > limit:
                raise FetchError(f"too large (more than the {_megabytes(limit)} limit)")
            if self._clock.expired():
                raise FetchError(f"download took longer than {self.ingest.download_seconds:g}s")
            chunks.append(inflater.feed(chunk) if inflater else chunk)
        data = b"".join(chunks)
        kind = sniff(data[:1024], content_type)
        if kind is None:
            raise FetchError(f"not a web page or feed ({content_type or 'no content type'})")
        return Download(
            url, kind, charset, data, _validator(headers.get("etag")), _validator(headers.get("last-modified"))
        )


def _parse_url(url: str) -> httpx.URL:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("only http and https URLs are fetched")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise FetchError("not a valid URL") from None
    if not parsed.raw_host or parsed.port == 0:
        raise FetchError("not a valid URL")
    return parsed


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        target = url.join(location)
    except httpx.InvalidURL:
        raise FetchError("redirected to an invalid URL") from None
    if target.scheme not in _DEFAULT_PORTS:
        raise FetchError("redirected to a URL that is not http or https")
    if not target.raw_host:
        raise FetchError("redirected to an invalid URL")
    return target


def content_type_of(header: str) -> tuple[str, str | None]:
    """The media type (lowercase, bounded) and charset of a Content-Type header."""
    if not header:
        return "", None
    message = Message()
    message["content-type"] = header
    charset = message.get_param("charset")
    return message.get_content_type()[:80], charset if isinstance(charset, str) else None


def sniff(head: bytes, content_type: str) -> str | None:
    """Whether a body is a "feed" or "html": a feed's root element wins over the label (feeds
    are often served as text/html), then the label, then an HTML start for vague labels."""
    if _FEED_START.match(head):
        return "feed"
    if content_type in HTML_TYPES or _HTML_START.match(head):
        return "html"
    return "feed" if content_type in FEED_TYPES else None


def _validator(value: str | None) -> str:
    """An ETag or Last-Modified worth sending back: printable ASCII, bounded."""
    return value if value and len(value) <= 200 and not _PRINTABLE.search(value) else ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "connection failed"


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
