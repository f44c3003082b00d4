"""/api/v2/events: a server-sent-events stream of download, install and load events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modeldepot.api.deps import ManagerDep
from modeldepot.events import Event

router = APIRouter(prefix="/api/v2", tags=["events"])
#: A comment line every few seconds keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
QUEUE_LIMIT = 1000


@router.get("/events", summary="Server-sent events: event name = the event's name, data = its JSON")
async def events(mm: ManagerDep, request: Request) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=QUEUE_LIMIT)

    def on_event(event: Event) -> None:
        # Called from worker threads: hand over to the event loop without blocking them.
        def put() -> None:
            if queue.full():
                queue.get_nowait()  # drop the oldest rather than stall the producer
            queue.put_nowait(event)

        loop.call_soon_threadsafe(put)

    unsubscribe = mm.events.subscribe(on_event)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            while True:
                if await request.is_disconnected():
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                data = json.dumps(event.to_json(), default=str)
                yield f"event: {event.name}\ndata: {data}\n\n".encode()
        finally:
            unsubscribe()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
