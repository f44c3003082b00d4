"""The one table mapping domain errors to HTTP status codes (routes never build HTTPException).

Every error body is ``{"error": <exception class>, "detail": <message naming the fault>}`` plus
the fields the exception carries (``key``, ``field``, ``job_id``) when set.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from modeldepot import errors as e

#: Most specific first; the first isinstance match wins.
STATUS_FOR: tuple[tuple[type[e.ModelDepotError], int], ...] = (
    (e.UnknownModelException, 404),
    (e.UnknownJobIDException, 404),
    (e.ModelNotFoundException, 404),
    (e.RemoteNotFoundError, 404),
    (e.DuplicateModelException, 409),
    (e.InvalidModelConfigException, 422),
    (e.IdentificationError, 422),
    (e.NotAllowedError, 403),
    (e.UnsafePathError, 400),
    (e.RemoteAccessError, 400),
    (e.InvalidSourceError, 400),
    (e.InsufficientSpaceError, 507),
    (e.ModelDepotError, 400),
)


def status_for(exc: e.ModelDepotError) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(exc: e.ModelDepotError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    for name in ("key", "field", "job_id"):
        value = getattr(exc, name, None)
        if isinstance(value, str | int):
            body[name] = value
    return body


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an echoed lone surrogate (valid JSON input) cannot break rendering."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.ModelDepotError)
    return SafeJSONResponse(status_code=status_for(exc), content=error_body(exc))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    return SafeJSONResponse(status_code=422, content={"error": "RequestValidationError", "detail": errors})


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.ModelDepotError, _handle)
    app.add_exception_handler(RequestValidationError, _invalid_request)
