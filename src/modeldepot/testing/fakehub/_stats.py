"""Thread-safe counters a test reads to prove what went over the wire."""

from __future__ import annotations

import threading
from typing import NamedTuple


class RequestRecord(NamedTuple):
    """One answered request. ``path`` has no query string (so no ``?token=`` ever lands here)."""

    method: str
    path: str
    range: str | None
    status: int


class Stats:
    """Counters for one ``FakeHub``; every read returns a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._bytes_total = 0
        self._bytes_by_path: dict[str, int] = {}
        self._connections = 0
        self._max_connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._authorized_paths: list[str] = []

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def bytes_sent_total(self) -> int:
        with self._lock:
            return self._bytes_total

    @property
    def bytes_sent_by_path(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes_by_path)

    @property
    def max_concurrent_connections(self) -> int:
        """Most TCP connections open at once since the last reset."""
        with self._lock:
            return self._max_connections

    @property
    def current_connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def max_concurrent_requests(self) -> int:
        """Most requests being answered at once (idle keep-alive connections do not count)."""
        with self._lock:
            return self._max_in_flight

    @property
    def authorized_paths(self) -> list[str]:
        """Paths of requests that carried an ``Authorization`` header (the value is never kept)."""
        with self._lock:
            return list(self._authorized_paths)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._authorized_paths.clear()
            self._bytes_total = 0
            self._bytes_by_path.clear()
            self._max_connections = self._connections
            self._max_in_flight = self._in_flight

    def requests_for(self, path: str, method: str | None = None) -> list[RequestRecord]:
        """The records for one path (and method), in arrival order."""
        with self._lock:
            return [r for r in self._requests if r.path == path and (method is None or r.method == method)]

    # -- updated by the server ------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _authorized(self, path: str) -> None:
        with self._lock:
            self._authorized_paths.append(path)

    def _add_bytes(self, path: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self._bytes_total += n
            self._bytes_by_path[path] = self._bytes_by_path.get(path, 0) + n

    def _connection(self, delta: int) -> None:
        with self._lock:
            self._connections += delta
            self._max_connections = max(self._max_connections, self._connections)

    def _request_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1
