"""Who may talk to the API: an API key (constant-time check), loopback binds, and same-origin writes.

The key may arrive as ``X-API-Key``, ``Authorization: Bearer``, the ``modeldepot_api_key`` cookie
(the page sets it, so ``EventSource`` works) or ``?api_key=`` on a GET (to open the page once).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from modeldepot.download._redact import REDACTED, is_secret_name
from modeldepot.errors import NotAllowedError

COOKIE_NAME = "modeldepot_api_key"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# ``name=value`` in a logged request line. A name may be percent-encoded (``api%5Fkey``), but not
# through an encoded delimiter (& / : = ? #), so a URL given as a query value (``source=https%3A%2F
# %2Fh%2Ff%3Ftoken%3Dabc``) splits into its own pairs; there ``%3D`` is the separator and ``%26``
# ends the value.
_NAME_CHAR = r"(?:[\w.~-]|%(?!2[36Ff]|3[AaDdFf])[0-9A-Fa-f]{2})"
_QUERY_PAIR = re.compile(rf"(?P<name>{_NAME_CHAR}+)(?P<sep>=|%3[Dd])(?P<value>(?:(?!%26)[^&\s\"])*)")


def is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond this machine without an API key.

    Raises:
        NotAllowedError: ``host`` is not a loopback address and no key is set.
    """
    if not is_loopback_host(host) and not api_key:
        raise NotAllowedError(
            f"binding {host} exposes the API beyond this machine: set an API key first "
            "(MODELDEPOT_API_KEY, or --api-key)"
        )


def _digest(value: str) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time whatever the given length.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def redact_secrets(text: str) -> str:
    """Values of secret-looking query parameters (``api_key``, ``access_token``, ``token``,
    signatures...) replaced by ``***``, however their names are percent-encoded, including those
    of a URL passed encoded inside another parameter (``?source=...%3Ftoken%3D...``)."""
    return _QUERY_PAIR.sub(_redact_pair, text)


def _redact_pair(m: re.Match[str]) -> str:
    name, sep, value = m.group("name", "sep", "value")
    if is_secret_name(name):
        return f"{name}{sep}{REDACTED}"
    return f"{name}{sep}{redact_secrets(value)}"  # the value may itself be an encoded URL


class RedactSecretsFilter(logging.Filter):
    """For uvicorn's access log, which prints query strings (``?access_token=`` is contract)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        return True


class SecurityMiddleware:
    """Pure ASGI (streams untouched): API key on every HTTP request, Host and Origin checks.

    ``allowed_hosts``: ``Host`` header names accepted (None: any). Serving on loopback passes the
    loopback names, so a DNS-rebinding page cannot reach the API through its own host name.
    Requests that change state and carry a foreign ``Origin`` are refused (cross-site forgery).
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self._key = _digest(api_key) if api_key else None
        self._hosts = {h.lower().strip("[]") for h in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        netloc = headers.get("host", "").strip().lower()
        host = _host_name(netloc)
        if self._hosts is not None and host not in self._hosts:
            await _deny(send, 403, "Forbidden", f"host {host!r} is not served here")
            return
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        if origin and method not in ("GET", "HEAD", "OPTIONS") and urlsplit(origin).netloc.lower() != netloc:
            await _deny(send, 403, "Forbidden", "cross-origin requests may not change anything")
            return
        if self._key is not None and not self._authorised(scope, headers, method):
            await _deny(send, 401, "Unauthorized", "API key required (X-API-Key or Authorization: Bearer)")
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope, headers: dict[str, str], method: str) -> bool:
        assert self._key is not None
        candidates = [headers.get("x-api-key", "")]
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            candidates.append(auth[7:].strip())
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is just "no cookie"
            cookie = SimpleCookie()
        if COOKIE_NAME in cookie:
            candidates.append(cookie[COOKIE_NAME].value)
        if method in ("GET", "HEAD"):
            query = scope.get("query_string", b"").decode("latin-1")
            candidates.extend(v for k, v in parse_qsl(query) if k == "api_key")
        ok = False
        for given in candidates:
            # No early exit: every candidate is compared, each in constant time.
            ok |= hmac.compare_digest(_digest(given), self._key)
        return ok


def _host_name(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


async def _deny(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
