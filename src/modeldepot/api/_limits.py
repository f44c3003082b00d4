"""A bound on request bodies: one client cannot make the server buffer gigabytes of JSON.

Pure ASGI, so response streams (events) pass untouched and nothing is buffered here.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modeldepot.api.errors import SafeJSONResponse

log = logging.getLogger(__name__)
SETTING = "api_max_body_bytes"


class BodyLimitMiddleware:
    """Answers 413 (the API's JSON error shape) to bodies over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before the app runs and before any
    byte is read. A body without one (chunked) is counted as the app reads it; once past the
    limit the 413 goes out and the app is told the client left, so it stops reading and
    whatever it answers to that is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"the request body is {declared} bytes")
            return

        received = 0
        app_started = False
        over = False  # past the limit: the app reads no more
        answered = False  # the 413 went out: the app's own answer is dropped

        async def counted_receive() -> Message:
            nonlocal received, over, answered
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    if not app_started:  # else the app's status line is out: it can only be cut short
                        answered = True
                        await self._refuse(scope, receive, send, f"the request body is over {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if answered:
                return
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            # The app failed on the "disconnect" it was given; the client already has its answer.
            log.debug("request refused as too large; the app then raised", exc_info=True)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        detail = f"{what}; the API accepts at most {self.max_bytes} bytes (setting {SETTING})"
        response = SafeJSONResponse(
            status_code=413,
            content={"error": HTTPStatus(413).phrase, "detail": detail},
            # The rest of the body is never read, so the connection cannot carry another request.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length; counting still applies
    return None
