"""The one table mapping domain errors to HTTP status codes (routes never build HTTPException)."""

from __future__ import annotations

from fastapi import FastAPI, Request
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
    (e.NotAllowedError, 403),
    (e.RemoteAccessError, 400),
    (e.InvalidSourceError, 400),
    (e.IdentificationError, 422),
    (e.InsufficientSpaceError, 507),
    (e.ModelDepotError, 400),
)


def status_for(exc: e.ModelDepotError) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 400


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.ModelDepotError)
    return JSONResponse(
        status_code=status_for(exc),
        content={"error": type(exc).__name__, "detail": str(exc)},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.ModelDepotError, _handle)
