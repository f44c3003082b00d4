"""A thin HTTP/1.1 client on ``http.client`` tuned for bulk bodies.

Why not httpx or requests: their streaming APIs hand out many small ``bytes`` objects, which caps a
single loopback stream well below curl. Here the body is read with ``BufferedReader.readinto1``
straight into the caller's large buffer (one ``recv_into`` per call, no copies). Redirects are
followed here, not by a library, so each hop goes through the connection policy (``_policy``) and
the Authorization header is dropped when a hop leaves the original host (scheme, host and port).
"""

from __future__ import annotations

import http.client
import re
import socket
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


class Response:
    """An open response whose body the caller pulls with :meth:`readinto`."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str) -> None:
        self._conn = conn
        self._resp = resp
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
        # Never reuse a connection whose body we read behind http.client's back.
        try:
            self._resp.close()
        finally:
            self._conn.close()


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
) -> Response:
    """GET ``url`` following up to 10 redirects, each hop checked by ``policy`` and pinned.

    Every hop's host is resolved once by the policy (private addresses refused unless trusted) and
    the socket connects to exactly those addresses; TLS SNI and ``Host`` keep the name.
    Authorization goes only to the original host (scheme, host and port). ``policy`` None is the
    strict default. Returns the first non-redirect response, whatever its status (the caller
    checks it).

    Raises:
        BlockedAddressError: a hop resolves to a refused address (never retried).
        OSError: the lookup or the connection failed (retryable).
    """
    policy = policy or _STRICT
    origin = host_key(url)
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        addrs = policy.check_url(current, redact_url(current))  # http(s) only, host resolved and checked
        parts = urlsplit(current)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        # http.client connects through this hook (HTTPS wraps the socket afterwards with the name).
        conn._create_connection = _pinned(addrs, rcvbuf)  # type: ignore[attr-defined]
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        if token and host_key(current) == origin:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.connect()
            if on_socket is not None and conn.sock is not None:
                on_socket(conn.sock)
            conn.request(method, target, headers=hdrs)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        location = resp.getheader("Location")
        if resp.status in REDIRECT_STATUSES and location:
            resp.close()
            conn.close()
            current = urljoin(current, location)
            continue
        return Response(conn, resp, current)
    raise DownloadError(f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects", url=redact_url(url))


_STRICT = ConnectPolicy()


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
    "Response",
    "RetryableHTTPError",
    "backoff_delay",
    "check_status",
    "filename_from_content_disposition",
    "monotonic",
    "open_url",
    "parse_retry_after",
]
