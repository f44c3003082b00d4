"""API key check (constant time) and the rule that a non-loopback bind needs a key."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from modeldepot.errors import NotAllowedError


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond this machine without an API key."""
    if not is_loopback_host(host) and not api_key:
        raise NotAllowedError(
            f"binding {host} exposes the API beyond this machine: set an API key first "
            "(MODELDEPOT_API_KEY or api_key in modeldepot.yaml)"
        )


class ApiKeyMiddleware(BaseHTTPMiddleware):
    """Every route requires ``Authorization: Bearer <key>`` or ``X-API-Key`` when a key is set."""

    def __init__(self, app: object, api_key: str) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._key = api_key.encode("utf-8")

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode("utf-8"), self._key):
            # The key is also accepted as ?api_key= for EventSource, which cannot set headers.
            query_key = request.query_params.get("api_key", "")
            if not hmac.compare_digest(query_key.encode("utf-8"), self._key):
                return JSONResponse(status_code=401, content={"error": "Unauthorized", "detail": "API key required"})
        return await call_next(request)
