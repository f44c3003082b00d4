"""/api/v2/events: a server-sent-events stream of download, install, load and storage events.

Each message is ``event: <event name>`` and ``data: <the event's JSON>``. Services emit from worker
threads; each client gets a bounded queue fed through the event loop, so a slow client never
stalls a download (the oldest undelivered events are dropped instead).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from modeldepot.api.deps import ManagerDep
from modeldepot.events import Event

router = APIRouter(prefix="/api/v2", tags=["events"])
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 10.0
QUEUE_LIMIT = 1000


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
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    wanted = tuple(n.strip() for n in (names or "").split(",") if n.strip())

    def put(event: Event) -> None:
        if queue.full():
            queue.get_nowait()  # drop the oldest rather than stall the producer
        queue.put_nowait(event)

    def on_event(event: Event) -> None:
        if wanted and not event.name.startswith(wanted):
            return
        try:
            loop.call_soon_threadsafe(put, event)
        except RuntimeError:
            pass  # the loop has closed: the server is shutting down

    unsubscribe = mm.events.subscribe(on_event)

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
                yield format_sse(event)
        finally:
            unsubscribe()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
