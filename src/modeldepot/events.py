"""A small thread-safe event bus: services emit named events, the API and CLI subscribe.

Handlers run in the emitting thread; a failing handler is logged and never breaks the emitter.
Payloads must be JSON-able and must never carry secrets (tokens are stripped by the emitters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    name: str
    payload: dict[str, Any]
    timestamp: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.name, "timestamp": self.timestamp, **self.payload}


Handler = Callable[[Event], None]


class EventBus:
    """Publish/subscribe by event name (or every event with ``names=None``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[tuple[Handler, frozenset[str] | None]] = []

    def subscribe(self, handler: Handler, names: set[str] | frozenset[str] | None = None) -> Callable[[], None]:
        """Register ``handler``; returns a function that unsubscribes it."""
        entry = (handler, frozenset(names) if names is not None else None)
        with self._lock:
            self._subs.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subs:
                    self._subs.remove(entry)

        return unsubscribe

    def emit(self, name: str, **payload: Any) -> Event:
        event = Event(name=name, payload=payload)
        with self._lock:
            subs = list(self._subs)
        for handler, names in subs:
            if names is not None and name not in names:
                continue
            try:
                handler(event)
            except Exception:  # a broken subscriber must not break a download or install
                log.exception("event handler %r failed on %s", handler, name)
        return event


class EventRecorder:
    """Collects events, for tests and for the CLI's progress display."""

    def __init__(self, bus: EventBus, names: set[str] | None = None) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.unsubscribe = bus.subscribe(self._on, names)

    def _on(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def names(self) -> list[str]:
        with self._lock:
            return [e.name for e in self.events]


__all__ = ["Event", "EventBus", "EventRecorder", "Handler"]
