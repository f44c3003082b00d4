"""The one table mapping domain errors to HTTP status codes (routes never build HTTPException).

Every error body is ``{"error": <exception class>, "detail": <message naming the fault>}`` plus
the fields the exception carries (``key``, ``field``, ``job_id``) when set. Framework errors (an
unknown route, a body that is not JSON, nests too deeply or holds a number too long to parse) get
the same shape, ``error`` being the HTTP reason phrase.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette import exceptions as starlette_exceptions

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
    (e.InvalidReferenceError, 422),
    (e.InvalidImageError, 422),
    (e.ServiceInputError, 422),
    (e.WrongModelTypeError, 422),
    (e.NotAllowedError, 403),
    (e.BlockedAddressError, 403),
    (e.UnsafePathError, 400),
    (e.RemoteAccessError, 400),
    (e.InvalidSourceError, 400),
    (e.InsufficientSpaceError, 507),
    (e.FleetError, 502),  # the fleet's bucket failed us, not the client
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


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as strings: an echoed ``1e999`` or ``NaN`` is not valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an echoed lone surrogate (valid JSON input) cannot break rendering."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except ValueError:  # a non-finite float echoed from the request
            text = json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.ModelDepotError)
    return SafeJSONResponse(status_code=status_for(exc), content=error_body(exc))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    return SafeJSONResponse(status_code=422, content={"error": "RequestValidationError", "detail": errors})


def _body_problem(exc: starlette_exceptions.HTTPException) -> str | None:
    """Why FastAPI could not parse a body, in words (it only says "error parsing the body")."""
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return "the JSON body nests too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the JSON body has too many digits"
    if isinstance(cause, UnicodeDecodeError):
        return "the JSON body is not valid UTF-8"
    if cause is not None and exc.status_code == 400:
        return f"the request body cannot be parsed: {cause}"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    try:
        reason = HTTPStatus(exc.status_code).phrase
    except ValueError:
        reason = "HTTPError"
    detail = _body_problem(exc) or exc.detail
    return SafeJSONResponse(
        status_code=exc.status_code, content={"error": reason, "detail": detail}, headers=exc.headers
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.ModelDepotError, _handle)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(starlette_exceptions.HTTPException, _http_error)
