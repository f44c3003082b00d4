"""A caller's own HTTP session as an httpx transport, so the remote clients can run over it.

The seed lets a metadata fetcher take a ``requests.Session`` ("used in the testing suite to avoid
hitting the internet"), and users of httpx bring an ``httpx.Client`` or a transport
(``httpx.MockTransport``). The clients here speak httpx, so each kind is wrapped as a transport:
redirects, retries, token scoping and error translation stay in ``RemoteHTTP``; only the bytes go
through the caller's session. Such a session owns the network: the private-address policy is the
caller's business then, as with any transport passed to a client.

Nothing here imports ``requests``; a session is recognised only when ``requests`` is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx

from modeldepot.errors import ConfigurationError

# The body is handed over decoded, so headers describing the wire encoding no longer apply.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class RequestsSessionTransport(httpx.BaseTransport):
    """Sends each request through a ``requests.Session`` (its adapters, mounts, proxies, certs)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        requests = sys.modules["requests"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        timeout = request.extensions.get("timeout") or {}
        try:
            answer = self.session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.read() or None,
                allow_redirects=False,
                timeout=(timeout.get("connect"), timeout.get("read")),
            )
        except requests.exceptions.Timeout as exc:
            raise httpx.TimeoutException(f"requests session timed out: {exc}", request=request) from exc
        except requests.exceptions.RequestException as exc:
            raise httpx.ConnectError(f"requests session failed: {exc}", request=request) from exc
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _WIRE_HEADERS]
        return httpx.Response(answer.status_code, headers=kept, content=answer.content, request=request)


class HttpxClientTransport(httpx.BaseTransport):
    """Sends each request through a caller's ``httpx.Client`` (its transport, auth, cookies, headers)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for key, value in self.client.headers.items():
            request.headers.setdefault(key, value)
        answer = self.client.send(request, follow_redirects=False)
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _WIRE_HEADERS]
        return httpx.Response(answer.status_code, headers=kept, content=answer.content, request=request)


def session_transport(session: object) -> httpx.BaseTransport | None:
    """The transport that sends through ``session``; None for None.

    Raises:
        ConfigurationError: ``session`` is none of ``requests.Session``, ``httpx.Client`` or an httpx
            transport (refused rather than ignored: a test meant to stay offline would go online).
    """
    if session is None:
        return None
    if isinstance(session, httpx.BaseTransport):
        return session
    if isinstance(session, httpx.Client):
        return HttpxClientTransport(session)
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(session, requests.Session):
        return RequestsSessionTransport(session)
    raise ConfigurationError(
        f"session must be a requests.Session, an httpx.Client or an httpx transport, not {type(session).__name__}"
    )


__all__ = ["HttpxClientTransport", "RequestsSessionTransport", "session_transport"]
