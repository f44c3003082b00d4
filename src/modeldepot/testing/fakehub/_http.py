"""Request/reply values and the one function that puts a reply on the wire (Range, If-Range, faults).

Bodies of files go out with ``socket.sendfile`` (zero copy) unless a fault has to see or pace the
bytes; then they are read with ``os.pread`` in large blocks.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from ._faults import Faults
from ._stats import Stats

_SENDFILE_CHUNK = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """The raw (still percent-encoded) path, without the query string."""
    query: dict[str, str]
    headers: Message
    base_url: str
    """``http://host:port`` as the client addressed us (from ``Host``), for absolute links."""

    @property
    def segments(self) -> list[str]:
        """Path segments, each percent-decoded on its own (so ``refs%2Fpr%2F1`` stays one segment)."""
        return [unquote(s) for s in self.path.split("/")[1:]]

    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None


@dataclass(frozen=True)
class Entity:
    """A file served with Range / If-Range support."""

    path: Path
    size: int
    etag: str | None
    """Already quoted (``"abc"``) or None."""


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    entity: Entity | None = None
    """When set (and ``status`` is 200), the body is this file, subject to Range."""
    send_length: bool = True
    chunked: bool = False


def json_reply(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(payload).encode()
    hdrs = [("Content-Type", "application/json; charset=utf-8"), *(headers or [])]
    return Reply(status=status, headers=hdrs, body=body)


def error_reply(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return json_reply(status, {"error": message}, headers)


UNSATISFIABLE = (-1, -1)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)``, ``UNSATISFIABLE``, or None to send the whole body.

    Multiple ranges and malformed headers are ignored (RFC 9110 allows answering 200).
    """
    if not header:
        return None
    m = _RANGE_RE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return (max(0, size - n), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return (start, min(end, size - 1))


class _Counter:
    """Counts body bytes into the stats *before* they are written (then corrects on failure),
    so a client that has read a whole body always sees it counted."""

    def __init__(self, stats: Stats, path: str) -> None:
        self.n = 0
        self._stats = stats
        self._path = path

    def add(self, n: int) -> None:
        self.n += n
        self._stats._add_bytes(self._path, n)


class _Dropped(Exception):
    """The connection was closed on purpose (fault) or because the hub is stopping."""


def send_reply(
    handler: BaseHTTPRequestHandler,
    req: Request,
    reply: Reply,
    faults: Faults | None,
    stats: Stats,
    stopping: threading.Event,
    stat_path: str,
    record: Callable[[int], None],
) -> int:
    """Write ``reply`` (status line, headers, body) and return the status actually sent.

    ``record(status)`` runs before the status line goes out, so the request is in the stats by the
    time the client has the answer.
    """
    status = reply.status
    headers = list(reply.headers)
    entity = reply.entity if status == 200 else None
    start, length = 0, len(reply.body)
    ignore_range = faults is not None and faults.ignore_range
    send_length = reply.send_length
    if entity is not None:
        length = entity.size
        if entity.etag:
            headers.append(("ETag", entity.etag))
        if send_length and not ignore_range:
            headers.append(("Accept-Ranges", "bytes"))
            rng = parse_range(req.headers.get("Range"), entity.size)
            if_range = req.headers.get("If-Range")
            if rng is not None and if_range is not None and if_range.strip() != (entity.etag or ""):
                rng = None  # the client's copy is stale: send the whole current file
            if rng == UNSATISFIABLE:
                msg = b"Requested Range Not Satisfiable"
                headers = [h for h in headers if h[0] not in ("ETag", "Accept-Ranges")]
                headers += [("Content-Range", f"bytes */{entity.size}"), ("Content-Type", "text/plain")]
                entity, status, length = None, 416, len(msg)
                reply, faults = Reply(status=416, body=msg), None
            elif rng is not None:
                start, length = rng[0], rng[1] - rng[0] + 1
                status = 206
                headers.append(("Content-Range", f"bytes {rng[0]}-{rng[1]}/{entity.size}"))
    declared = length
    if faults is not None and faults.wrong_content_length is not None:
        declared = faults.wrong_content_length
    close_after = False
    if reply.chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif send_length:
        headers.append(("Content-Length", str(declared)))
    else:
        close_after = True  # the body is delimited by closing the connection (HTTP/1.0 style)
    if close_after or declared != length:
        headers.append(("Connection", "close"))
        handler.close_connection = True

    record(status)
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    if req.method == "HEAD" or status in (204, 304):
        return status

    to_send = min(length, declared) if send_length and not reply.chunked else length
    counter = _Counter(stats, stat_path)
    try:
        _send_body(handler, reply, entity, start, to_send, reply.chunked, faults, stopping, counter)
        if declared > to_send:
            raise _Dropped  # declared more than we have: the client must see a short read
    except (_Dropped, OSError) as exc:
        handler.close_connection = True
        if isinstance(exc, _Dropped) and faults is not None and faults.drop_with_reset:
            _reset(handler)
        else:
            _hard_close(handler.connection)
    if close_after:
        handler.close_connection = True
    return status


def _send_body(
    handler: BaseHTTPRequestHandler,
    reply: Reply,
    entity: Entity | None,
    start: int,
    length: int,
    chunked: bool,
    faults: Faults | None,
    stopping: threading.Event,
    counter: _Counter,
) -> None:
    sock: socket.socket = handler.connection
    if entity is None:
        source = memoryview(reply.body)
        if faults is None or not faults.touches_body:
            _write(sock, bytes(source[start : start + length]), chunked, counter)
            _finish_chunked(sock, chunked)
            return
        _slow_body(sock, lambda pos, n: bytes(source[pos : pos + n]), start, length, chunked, faults, stopping, counter)
        return
    with open(entity.path, "rb") as f:
        if (faults is None or not faults.touches_body) and not chunked:
            _sendfile(sock, f, start, length, counter)
            return
        fd = f.fileno()
        _slow_body(sock, lambda pos, n: os.pread(fd, n, pos), start, length, chunked, faults, stopping, counter)


def _sendfile(sock: socket.socket, f: BinaryIO, start: int, length: int, counter: _Counter) -> None:
    pos, end = start, start + length
    while pos < end:
        n = min(_SENDFILE_CHUNK, end - pos)
        counter.add(n)
        try:
            sent = sock.sendfile(f, pos, n)
        except OSError:
            counter.add(-(n - max(0, f.tell() - pos)))
            raise
        if sent < n:
            counter.add(-(n - sent))
        if sent <= 0:
            raise _Dropped
        pos += sent
    if pos < end:
        raise _Dropped


def _slow_body(
    sock: socket.socket,
    reader: Callable[[int, int], bytes],
    start: int,
    length: int,
    chunked: bool,
    faults: Faults | None,
    stopping: threading.Event,
    counter: _Counter,
) -> None:
    f = faults or Faults()
    chunk = _READ_CHUNK
    if f.speed_limit_bps is not None:
        # Small writes keep the pacing smooth: about 50 writes per second.
        chunk = max(4096, min(_READ_CHUNK, f.speed_limit_bps // 50))
    stalled = f.stall_seconds is None
    t0 = time.monotonic()
    sent, pos, end = 0, start, start + length
    while True:
        if not stalled and sent >= f.stall_after_bytes:
            stalled = True
            if stopping.wait(f.stall_seconds):
                raise _Dropped
        if f.drop_after_bytes is not None and sent >= f.drop_after_bytes and pos < end:
            raise _Dropped
        if pos >= end:
            break
        n = min(chunk, end - pos)
        if f.drop_after_bytes is not None:
            n = min(n, f.drop_after_bytes - sent)
        if not stalled:
            n = min(n, f.stall_after_bytes - sent)
        data = reader(pos, n)
        if not data:
            raise _Dropped  # the file shrank under us
        if f.corrupt_byte_at is not None and pos <= f.corrupt_byte_at < pos + len(data):
            buf = bytearray(data)
            buf[f.corrupt_byte_at - pos] ^= 0xFF
            data = bytes(buf)
        _write(sock, data, chunked, counter)
        sent += len(data)
        pos += len(data)
        if f.speed_limit_bps is not None:
            ahead = sent / f.speed_limit_bps - (time.monotonic() - t0)
            if ahead > 0 and stopping.wait(ahead):
                raise _Dropped
        if stopping.is_set():
            raise _Dropped
    if chunked and f.omit_last_chunk:
        raise _Dropped
    _finish_chunked(sock, chunked)


def _write(sock: socket.socket, data: bytes, chunked: bool, counter: _Counter) -> None:
    if not data:
        return
    counter.add(len(data))
    try:
        if chunked:
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            sock.sendall(data)
    except OSError:
        counter.add(-len(data))  # sendall does not say how much went out; count none of it
        raise


def _finish_chunked(sock: socket.socket, chunked: bool) -> None:
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def _hard_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Abort the connection with an RST: a zero linger time makes ``close`` reset instead of FIN."""
    sock: socket.socket = handler.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.rfile.close()  # the reader's reference would otherwise keep the socket open
        sock.close()  # the server's own shutdown/close of it later fail quietly
    except OSError:
        _hard_close(sock)
