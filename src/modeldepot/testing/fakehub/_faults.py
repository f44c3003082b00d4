"""Fault injection: what can go wrong on the wire, and which requests it hits.

A ``Faults`` value says *what* happens; ``FaultTable`` keeps the rules (a path glob plus a ``Faults``)
and, per request, decides which rule applies and counts how often it applied, so ``times`` and
``status_times`` behave like "the first N requests".
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from modeldepot.errors import ConfigurationError

_GRACE_SECONDS = 0.1


@dataclass(frozen=True)
class Faults:
    """One set of faults; every field defaults to "no fault".

    Byte counts in ``drop_after_bytes`` / ``stall_after_bytes`` are counted in the body of *this*
    response; ``corrupt_byte_at`` is an absolute offset in the file, so it hits every response
    (ranged or not) whose body covers that offset.
    """

    drop_after_bytes: int | None = None
    """Send this many body bytes, then close the connection (the client sees a short read)."""
    drop_with_reset: bool = False
    """Drops of this rule abort the connection with a TCP reset (RST) instead of a clean close, so a
    close-delimited body (no length, not chunked) is seen as broken rather than as ended. Bytes still
    queued in the server's kernel are lost, so the client may get fewer than ``drop_after_bytes``."""
    omit_last_chunk: bool = False
    """Chunked bodies: send every data chunk, then close without the last (zero-size) chunk."""
    stall_seconds: float | None = None
    """Stop sending for this long (after ``stall_after_bytes`` body bytes), then carry on."""
    stall_after_bytes: int = 0
    status: int | None = None
    """Answer with this status (JSON error body) instead of the resource."""
    status_times: int = 1
    """``status`` hits the first N matching requests only; 0 means every one."""
    retry_after: float | None = None
    """``Retry-After`` seconds sent with ``status`` (and with ``max_connections`` 503s)."""
    ignore_range: bool = False
    """Answer Range requests with 200 and the whole body, and advertise no ``Accept-Ranges``."""
    wrong_content_length: int | None = None
    """Declare this ``Content-Length``; the body sent is the real one, cut to the declared length."""
    corrupt_byte_at: int | None = None
    """Flip every bit of the byte at this absolute file offset."""
    speed_limit_bps: int | None = None
    """Cap the body rate of each response (one connection serves one response at a time)."""
    max_connections: int | None = None
    """At most this many matching requests in flight; extra ones get 503 with ``Retry-After``."""
    times: int | None = None
    """The whole rule applies to the first N matching requests, then requests are served normally."""

    def __post_init__(self) -> None:
        for name in ("drop_after_bytes", "wrong_content_length", "corrupt_byte_at", "times"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigurationError(f"Faults.{name} must be >= 0, got {value}")
        for name in ("speed_limit_bps", "max_connections"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"Faults.{name} must be > 0, got {value}")
        if self.stall_seconds is not None and self.stall_seconds < 0:
            raise ConfigurationError(f"Faults.stall_seconds must be >= 0, got {self.stall_seconds}")
        if self.stall_after_bytes < 0 or self.status_times < 0:
            raise ConfigurationError("Faults.stall_after_bytes and Faults.status_times must be >= 0")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ConfigurationError(f"Faults.status must be an HTTP status code, got {self.status}")

    @property
    def touches_body(self) -> bool:
        """Whether the body must be sent through the slow path (bytes inspected or paced)."""
        if self.omit_last_chunk:
            return True
        return any(
            v is not None
            for v in (self.drop_after_bytes, self.stall_seconds, self.corrupt_byte_at, self.speed_limit_bps)
        )

    @property
    def affects_body_or_headers(self) -> bool:
        return self.touches_body or self.ignore_range or self.wrong_content_length is not None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class _Rule:
    glob: str
    faults: Faults
    applied: int = 0
    status_sent: int = 0
    active: int = 0


@dataclass
class FaultPlan:
    """What to do for one request, decided when it arrives."""

    reject_status: int | None = None
    retry_after: float | None = None
    reason: str = ""
    body: Faults | None = None
    """Faults to apply to the response itself (headers and body), or None for a clean response."""
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class FaultTable:
    """Rules, newest first: the newest non-exhausted rule whose glob matches a path is the one used."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rules: list[_Rule] = []

    def add(self, glob: str, faults: Faults) -> None:
        with self._lock:
            self._rules.insert(0, _Rule(glob, faults))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def plan(self, path: str, method: str) -> FaultPlan:
        """Pick the rule for ``path`` and count it; the caller must ``release()`` the plan when done."""
        if not self._rules:
            return FaultPlan()
        with self._lock:
            rule = self._match(path)
            if rule is None:
                return FaultPlan()
            f = rule.faults
            plan = FaultPlan()
            applied = False
            if f.max_connections is not None:
                # A short grace period: a client that starts its next request the moment the previous
                # answer arrived may beat the server thread that is still closing that answer.
                self._lock.wait_for(lambda: rule.active < (f.max_connections or 0), timeout=_GRACE_SECONDS)
                if rule.active >= f.max_connections:
                    rule.applied += 1
                    return FaultPlan(
                        reject_status=503,
                        retry_after=f.retry_after if f.retry_after is not None else 1.0,
                        reason=f"too many concurrent connections (limit {f.max_connections})",
                    )
                rule.active += 1
                plan._release = self._releaser(rule)
            if f.status is not None and (f.status_times == 0 or rule.status_sent < f.status_times):
                rule.status_sent += 1
                rule.applied += 1
                plan.release()
                return FaultPlan(reject_status=f.status, retry_after=f.retry_after, reason="injected fault")
            if method == "GET" and f.affects_body_or_headers:
                plan.body = f
                applied = True
            elif method == "HEAD" and (f.ignore_range or f.wrong_content_length is not None):
                # A HEAD must advertise the same headers (range support, length) as the GET will.
                plan.body = f
            if applied:
                rule.applied += 1
            return plan

    def _match(self, path: str) -> _Rule | None:
        bare = path.lstrip("/")
        for rule in self._rules:
            if rule.faults.times is not None and rule.applied >= rule.faults.times:
                continue
            if fnmatch.fnmatchcase(path, rule.glob) or fnmatch.fnmatchcase(bare, rule.glob):
                return rule
        return None

    def _releaser(self, rule: _Rule) -> Callable[[], None]:
        def release() -> None:
            with self._lock:
                rule.active -= 1
                self._lock.notify_all()

        return release
