"""/api/v2/events: a server-sent-events stream of download, install, load and storage events.

Each message is ``event: <event name>`` and ``data: <the event's JSON>``. Services emit from worker
threads; each client gets a bounded queue fed through the event loop, so a slow client never
stalls a download (the oldest undelivered events are dropped instead).

Streams never end on their own, so a server that stops must end them: ``EventStreams.close()``
(called by ``serve``'s server as shutdown begins) finishes every open stream cleanly; otherwise
uvicorn would wait for them, then cancel them with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from modeldepot.api.deps import ManagerDep
from modeldepot.events import Event

router = APIRouter(prefix="/api/v2", tags=["events"])
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 10.0
QUEUE_LIMIT = 1000


class EventStreams:
    """The open event streams of one app; ``close()`` ends them all (thread-safe, idempotent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._enders: set[Callable[[], None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def reopen(self) -> None:
        """Accept streams again (an app served a second time, e.g. after a restart in tests)."""
        with self._lock:
            self._closed = False

    def add(self, end: Callable[[], None]) -> Callable[[], None]:
        """Register a stream's ``end`` callback; returns the function that unregisters it."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._enders.add(end)
        if closed:
            end()
        return lambda: self._discard(end)

    def _discard(self, end: Callable[[], None]) -> None:
        with self._lock:
            self._enders.discard(end)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            enders, self._enders = list(self._enders), set()
        for end in enders:
            end()


def streams_of(request: Request) -> EventStreams:
    streams: EventStreams | None = getattr(request.app.state, "event_streams", None)
    if streams is None:
        streams = request.app.state.event_streams = EventStreams()
    return streams


def format_sse(event: Event) -> bytes:
    data = json.dumps(event.to_json(), default=str, separators=(",", ":"))
    return f"event: {event.name}\ndata: {data}\n\n".encode()


@router.get(
    "/events",
    summary="Server-sent events: event name = the event's name, data = its JSON",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    mm: ManagerDep,
    request: Request,
    names: Annotated[
        str | None, Query(max_length=2000, description="Comma-separated event names or prefixes (e.g. model_install_)")
    ] = None,
) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    # None in the queue ends the stream (the server is shutting down).
    queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    wanted = tuple(n.strip() for n in (names or "").split(",") if n.strip())

    def put(event: Event | None) -> None:
        if queue.full():
            queue.get_nowait()  # drop the oldest rather than stall the producer
        queue.put_nowait(event)

    def end() -> None:
        try:
            loop.call_soon_threadsafe(put, None)
        except RuntimeError:
            pass  # the loop has closed already

    def on_event(event: Event) -> None:
        if wanted and not event.name.startswith(wanted):
            return
        try:
            loop.call_soon_threadsafe(put, event)
        except RuntimeError:
            pass  # the loop has closed: the server is shutting down

    unsubscribe = mm.events.subscribe(on_event)
    forget = streams_of(request).add(end)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
                except TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield b": keepalive\n\n"
                    continue
                if event is None:
                    break
                yield format_sse(event)
        finally:
            forget()
            unsubscribe()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
