"""Telling the world about a job: its handlers, the queue's default handlers, the EventBus.

Two handler styles meet here. Seed 002's ``event_handlers`` are ``handler(job)`` callables run at
every status change (and about every 1 % of a running download); they look at ``job.status``.
InvokeAI 4's ``on_start``/``on_progress``/``on_complete``/``on_error``/``on_cancelled`` (and our
``on_paused``) are one callable per kind. For each event the job's own handlers run first (its
``event_handlers``, then its ``on_*``), then the queue's defaults in the same order, then the bus.

An ``on_*`` handler that raises is logged and ignored (a broken progress bar must not break a
download). An ``event_handlers`` handler that raises *errors the job*, as seed 002 allows
("this can include cancelling or erroring the job"): ``on_handler_error`` is told.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from modeldepot.download.base import DownloadEventHandler, DownloadJobBase, MultiFileDownloadJob
from modeldepot.events import EventBus

log = logging.getLogger("modeldepot.download._queue")

#: The kind used for the single "enqueued" event; it has no ``on_*`` handler and no bus event.
ENQUEUED = "on_enqueued"

Say = Callable[..., None]

__all__ = ["ENQUEUED", "Notifier", "event_payload"]


class Notifier:
    """Runs handlers and publishes bus events for one queue, in the calling thread."""

    def __init__(
        self,
        handlers: dict[str, Any],
        event_handlers: list[DownloadEventHandler],
        bus: EventBus | None,
        progress_interval: float,
        say: Say,
    ) -> None:
        self.handlers = handlers
        self.event_handlers = event_handlers
        self._bus = bus
        self._interval = progress_interval
        self._say = say
        #: Told when one of the ``event_handlers`` raised (the queue errors the job).
        self.on_handler_error: Callable[[DownloadJobBase, BaseException], None] | None = None
        self._emitted: dict[int, tuple[float, int]] = {}
        self._speed_probe: dict[int, tuple[float, int]] = {}

    def notify(self, job: DownloadJobBase, kind: str, event: str | None, exc: BaseException | None = None) -> None:
        for doc_style, fn in self._chain(job, kind):
            try:
                if doc_style:
                    fn(job)
                elif kind == "on_error":
                    fn(job, exc)
                else:
                    fn(job)
            except Exception as err:
                self._say(logging.ERROR, "download handler %s for job %s failed", kind, job.id, exc_info=True)
                if doc_style and self.on_handler_error is not None:
                    self.on_handler_error(job, err)
        if self._bus is not None and event is not None:
            self._bus.emit(event, **event_payload(job))

    def _chain(self, job: DownloadJobBase, kind: str) -> list[tuple[bool, Any]]:
        # Copies: a handler may add or clear handlers while the chain runs.
        chain: list[tuple[bool, Any]] = [(True, fn) for fn in list(job.event_handlers)]
        if job._handlers.get(kind) is not None:
            chain.append((False, job._handlers[kind]))
        chain += [(True, fn) for fn in list(self.event_handlers)]
        if self.handlers.get(kind) is not None:
            chain.append((False, self.handlers[kind]))
        return chain

    # -- running events -------------------------------------------------------------------------
    def started(self, job: DownloadJobBase) -> None:
        now = time.monotonic()
        self._emitted[job.id] = (now, job.bytes)
        self._speed_probe[job.id] = (now, job.bytes)
        self.notify(job, "on_start", "download_started")

    def mark(self, job: DownloadJobBase) -> None:
        """Count progress of ``job`` from its current bytes (a multi-file parent starting)."""
        self._emitted[job.id] = (time.monotonic(), job.bytes)

    def forget(self, job_id: int) -> None:
        self._emitted.pop(job_id, None)
        self._speed_probe.pop(job_id, None)

    def progress(self, job: DownloadJobBase, force: bool = False) -> None:
        """A "running" event when about 1 % more bytes arrived, at most every ``progress_interval``."""
        now = time.monotonic()
        t0, b0 = self._speed_probe.get(job.id, (now, job.bytes))
        if now - t0 >= 0.25:
            inst = (job.bytes - b0) / (now - t0)
            job.speed = inst if job.speed == 0 else 0.5 * job.speed + 0.5 * inst
            self._speed_probe[job.id] = (now, job.bytes)
        last_t, last_b = self._emitted.get(job.id, (0.0, -1))
        if job.bytes == last_b:
            return
        step = job.total_bytes / 100 if job.total_bytes else 0
        if not force and (now - last_t < self._interval or job.bytes - last_b < step):
            return
        self._emitted[job.id] = (now, job.bytes)
        self.notify(job, "on_progress", "download_progress")


def event_payload(job: DownloadJobBase) -> dict[str, Any]:
    """JSON-able, secret-free description of a job for events and the API."""
    data: dict[str, Any] = {
        "id": job.id,
        "source": str(job.source),
        "dest": str(job.dest),
        "download_path": str(job.download_path) if job.download_path else None,
        "status": job.status.value,
        "bytes": job.bytes,
        "total_bytes": job.total_bytes,
        "speed": round(job.speed, 1),
        "eta": None if job.eta is None else round(job.eta, 1),
    }
    if job.error_type:
        data["error_type"] = job.error_type
        data["error"] = job.error
    if isinstance(job, MultiFileDownloadJob):
        data["parts"] = [
            {
                "id": p.id,
                "source": p.source,
                "download_path": str(p.download_path) if p.download_path else None,
                "status": p.status.value,
                "bytes": p.bytes,
                "total_bytes": p.total_bytes,
            }
            for p in job.download_parts
        ]
    return data
