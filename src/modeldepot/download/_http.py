"""A thin HTTP/1.1 client on ``http.client`` tuned for bulk bodies.

Why not httpx or requests: their streaming APIs hand out many small ``bytes`` objects, which caps a
single loopback stream well below curl. Here the body is read with ``BufferedReader.readinto1``
straight into the caller's large buffer (one ``recv_into`` per call, no copies). Redirects are
followed here, not by a library, so each hop goes through the connection policy (``_policy``) and
the Authorization header is dropped when a hop leaves the original host (scheme, host and port).
"""

from __future__ import annotations

import fcntl
import http.client
import re
import socket
import struct
import termios
import time
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urljoin, urlsplit

from modeldepot._http import (
    REDIRECT_STATUSES,
    USER_AGENT,
    RetryableHTTPError,
    backoff_seconds,
    host_key,
    parse_retry_after,
    redact_url,
    status_error,
)
from modeldepot.download._policy import Address, ConnectPolicy, connect_pinned
from modeldepot.errors import DownloadError

MAX_REDIRECTS = 10
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


_ConnKey = tuple[str, str, "int | None"]


class ConnectionCache:
    """Idle keep-alive connections of one connection thread, one per (scheme, host, port).

    A part's response read to its last byte leaves its connection here and the next part's request
    to that server reuses it: no TCP (and TLS) handshake per part, and the grown receive window is
    kept. A connection is only ever used by the thread that owns the cache.
    """

    def __init__(self) -> None:
        self._idle: dict[_ConnKey, http.client.HTTPConnection] = {}

    def take(self, key: _ConnKey) -> http.client.HTTPConnection | None:
        return self._idle.pop(key, None)

    def give(self, key: _ConnKey, conn: http.client.HTTPConnection) -> None:
        old = self._idle.pop(key, None)
        if old is not None:
            old.close()
        self._idle[key] = conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()


class Response:
    """An open response whose body the caller pulls with :meth:`readinto`."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        url: str,
        cache: ConnectionCache | None = None,
        key: _ConnKey | None = None,
    ) -> None:
        self._conn = conn
        self._resp = resp
        self._cache = cache
        self._key = key
        self.url = url
        self.status = resp.status
        self.reason = resp.reason
        te = (resp.getheader("Transfer-Encoding") or "").lower()
        self._chunked = "chunked" in te
        cl = resp.getheader("Content-Length")
        self.content_length: int | None = int(cl) if cl and cl.strip().isdigit() and not self._chunked else None
        self._remaining = self.content_length

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    @property
    def etag(self) -> str | None:
        return self.header("ETag")

    @property
    def last_modified(self) -> str | None:
        return self.header("Last-Modified")

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def content_range(self) -> tuple[int, int, int | None] | None:
        m = _CONTENT_RANGE.match(self.header("Content-Range") or "")
        if not m:
            return None
        total = None if m.group(3) == "*" else int(m.group(3))
        return int(m.group(1)), int(m.group(2)), total

    @property
    def filename(self) -> str | None:
        return filename_from_content_disposition(self.header("Content-Disposition"))

    @property
    def sock(self) -> socket.socket | None:
        return self._conn.sock

    def readinto(self, buf: memoryview) -> int:
        """Read up to ``len(buf)`` body bytes (at least one unless the body ended)."""
        if self._remaining is None:
            data = self._resp.read1(len(buf))
            n = len(data)
            buf[:n] = data
            return n
        if self._remaining <= 0:
            return 0
        want = min(len(buf), self._remaining)
        n = self._resp.fp.readinto1(buf[:want])
        if n == 0:
            raise http.client.IncompleteRead(b"", self._remaining)
        self._remaining -= n
        return n

    def close(self) -> None:
        # A connection is reused only after its body was read to the declared end: then nothing of
        # this response is left on it (the server sends nothing before the next request).
        reuse = self._cache is not None and self._key is not None and self._remaining == 0 and not self._resp.will_close
        try:
            self._resp.close()
        finally:
            if reuse and self._cache is not None and self._key is not None:
                self._cache.give(self._key, self._conn)
            else:
                self._conn.close()


def backlogged(resp: Response, clamp: int) -> bool:
    """Clamp the receive buffer of ``resp``'s socket to ``clamp`` when more than that waits in the
    kernel (the reader, not the network, is the bottleneck); True once clamped (or no socket)."""
    sock = resp.sock
    if sock is None:
        return True
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        if queued <= clamp:
            return False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, clamp)
    except OSError:
        pass
    return True


def filename_from_content_disposition(value: str | None) -> str | None:
    """The ``filename*`` (RFC 5987) or ``filename`` parameter; unsanitised."""
    if not value:
        return None
    m = re.search(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", value, re.IGNORECASE)
    if m:
        charset = m.group(1) or "utf-8"
        try:
            return unquote(m.group(2).strip().strip('"'), encoding=charset, errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    m = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', value, re.IGNORECASE)
    if m:
        return re.sub(r"\\(.)", r"\1", m.group(1))
    m = re.search(r"filename\s*=\s*([^;]+)", value, re.IGNORECASE)
    if m:
        return m.group(1).strip()
    return None


def check_status(resp: Response, shown_url: str) -> None:
    """Raise the matching ``DownloadError`` for an error status (the table is ``_http.status_error``)."""
    if resp.status >= 400:
        raise status_error(
            resp.status,
            shown_url,
            reason=resp.reason,
            detail=(resp.header("X-Error-Message") or "")[:300],
            retry_after=resp.header("Retry-After"),
        )


def open_url(
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    on_socket: Callable[[socket.socket], None] | None = None,
    method: str = "GET",
    rcvbuf: int | None = None,
    policy: ConnectPolicy | None = None,
    cache: ConnectionCache | None = None,
    origin: str | None = None,
) -> Response:
    """GET ``url`` following up to 10 redirects, each hop checked by ``policy`` and pinned.

    Every hop's host is resolved once by the policy (private addresses refused unless trusted) and
    the socket connects to exactly those addresses; TLS SNI and ``Host`` keep the name.
    Authorization goes only to the original host (scheme, host and port) of ``origin`` (default:
    ``url``; a caller going straight to where an earlier request was redirected names the URL it
    started from). ``policy`` None is the strict default. With ``cache``, an idle connection to the
    hop's server is reused (it was checked when it connected) and the final one is left there when
    its body has been read. Returns the first non-redirect response, whatever its status (the
    caller checks it).

    Raises:
        BlockedAddressError: a hop resolves to a refused address (never retried).
        OSError: the lookup or the connection failed (retryable).
    """
    policy = policy or _STRICT
    token_host = host_key(origin or url)
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        host = parts.hostname or ""
        key: _ConnKey = (parts.scheme.lower(), host, parts.port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        if token and host_key(current) == token_host:
            hdrs["Authorization"] = f"Bearer {token}"
        idle = cache.take(key) if cache is not None else None
        conn, resp = _request(
            idle, current, policy, key, host, parts.port, timeout, rcvbuf, method, target, hdrs, on_socket
        )
        location = resp.getheader("Location")
        if resp.status in REDIRECT_STATUSES and location:
            resp.close()
            conn.close()
            current = urljoin(current, location)
            continue
        return Response(conn, resp, current, cache, key)
    raise DownloadError(f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects", url=redact_url(url))


_STRICT = ConnectPolicy()
#: What a server's close of an idle keep-alive connection looks like to the next request on it.
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError)


def _request(
    idle: http.client.HTTPConnection | None,
    url: str,
    policy: ConnectPolicy,
    key: _ConnKey,
    host: str,
    port: int | None,
    timeout: float,
    rcvbuf: int | None,
    method: str,
    target: str,
    hdrs: dict[str, str],
    on_socket: Callable[[socket.socket], None] | None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send one request on ``idle`` (a kept-alive connection) or a new, checked and pinned one.

    A kept-alive connection the server closed meanwhile is replaced by a new one, once.
    """
    while True:
        conn = idle
        if conn is None:
            addrs = policy.check_url(url, redact_url(url))  # http(s) only, host resolved and checked
            if key[0] == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            # http.client connects through this hook (HTTPS wraps the socket afterwards with the name).
            conn._create_connection = _pinned(addrs, rcvbuf)  # type: ignore[attr-defined]
        try:
            if idle is None:
                conn.connect()
            if on_socket is not None and conn.sock is not None:
                on_socket(conn.sock)
            conn.request(method, target, headers=hdrs)
            return conn, conn.getresponse()
        except _STALE:
            conn.close()
            if idle is None:
                raise
            idle = None  # the server had closed it: one new connection
        except BaseException:
            conn.close()
            raise


def _pinned(addrs: list[Address], rcvbuf: int | None) -> Callable[..., socket.socket]:
    """A ``socket.create_connection`` stand-in that ignores the name and uses the checked addresses."""

    def connect(
        _address: tuple[str, int], timeout: float | None = None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        return connect_pinned(addrs, timeout, rcvbuf)

    return connect


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Retry-After when the server gave one (capped), else capped exponential backoff; ``attempt``
    counts failures from 1."""
    return backoff_seconds(attempt - 1, retry_after, base=base, cap=cap)


def monotonic() -> float:
    return time.monotonic()


__all__ = [
    "MAX_REDIRECTS",
    "ConnectionCache",
    "Response",
    "RetryableHTTPError",
    "backlogged",
    "backoff_delay",
    "check_status",
    "filename_from_content_disposition",
    "monotonic",
    "open_url",
    "parse_retry_after",
]
