"""The HTTP plumbing both remote clients share: one httpx client, bounded retries, safe error text.

Retries cover what a metadata call can recover from on its own: connection errors, timeouts and
``_http.RETRY_STATUSES`` (honouring ``Retry-After`` up to a cap). Everything else is returned to the
caller, whose ``_raise_for_status`` turns it into a ``ModelDepotError`` through
``_http.status_error``. The User-Agent, the statuses, the wait and the URL redaction are the
download engine's too (``modeldepot._http``).
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from modeldepot._http import RETRY_STATUSES, USER_AGENT, backoff_seconds, redact_url, retry_after_seconds
from modeldepot._urls import default_port
from modeldepot.download._policy import ConnectPolicy
from modeldepot.errors import DownloadError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    built once per trust setting: loading the bundle took 25-45 ms, paid by every client (each
    install plans with a new one) before its first request. One context serves any number of
    connections and threads."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    make = getattr(httpx, "create_ssl_context", None)  # public from httpx 0.28; reads the variables
    if make is not None:
        return make()  # type: ignore[no-any-return]
    import certifi

    ctx = ssl.create_default_context(cafile=cert_file or certifi.where())
    if cert_dir:
        ctx.load_verify_locations(capath=cert_dir)
    return ctx


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport behind the download layer's connection policy, for every request and hop.

    httpx follows redirects by sending each hop through the transport, so each hop is checked here:
    the host is resolved once by ``policy`` (private addresses refused unless trusted) and the
    request goes to that address, with ``Host`` and TLS SNI (``sni_hostname``) kept as the name.
    """

    def __init__(self, policy: ConnectPolicy) -> None:
        super().__init__(verify=_tls_context())
        self._policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or default_port(url.scheme)
        try:
            addrs = self._policy.resolve(url.host, port, redact_url(url))
        except OSError as exc:  # a failed lookup is a connection error (retried, then reported)
            raise httpx.ConnectError(f"cannot resolve {url.host}: {exc}", request=request) from exc
        ip = str(addrs[0][1][0])
        request.url = url.copy_with(host=ip)
        request.extensions = {**request.extensions, "sni_hostname": url.host}
        try:
            return super().handle_request(request)
        finally:
            request.url = url


class RemoteHTTP:
    """A small wrapper over ``httpx.Client`` with a per-URL token and retries.

    ``token_for(url)`` is asked for every request, so the token is only sent where it belongs and
    never stored in a URL. httpx drops ``Authorization`` on redirects to another origin. Without a
    ``transport`` every request goes through ``policy`` (:class:`PinnedTransport`); a caller's own
    transport owns the network.
    """

    def __init__(
        self,
        service: str,
        endpoint: str,
        token_for: Callable[[str], str | None],
        timeout: float | httpx.Timeout | None = None,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        policy: ConnectPolicy | None = None,
    ) -> None:
        self.service = service
        self.endpoint = endpoint.rstrip("/")
        self._token_for = token_for
        self.retries = max(0, retries)
        self._client = httpx.Client(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            follow_redirects=True,
            max_redirects=10,  # like the download layer (MAX_REDIRECTS)
            headers={"User-Agent": USER_AGENT},
            transport=transport if transport is not None else PinnedTransport(policy or ConnectPolicy()),
        )

    def close(self) -> None:
        self._client.close()

    def auth_headers(self, url: str) -> dict[str, str]:
        token = self._token_for(url)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> httpx.Response:
        """Send with retries; raise ``DownloadError`` only for transport failures after the last try."""
        all_headers = {"Accept": "application/json", **self.auth_headers(url), **(headers or {})}
        attempt = 0
        while True:
            try:
                response = self._client.request(
                    method, url, params=params, headers=all_headers, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise DownloadError(
                        f"cannot reach {self.service} at {redact_url(url)}: {type(exc).__name__}: {exc}",
                        url=redact_url(url),
                    ) from exc
                delay = backoff_seconds(attempt)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return response
                delay = retry_after_seconds(response.headers.get("Retry-After"), attempt)
                log.debug(
                    "%s answered %s for %s; retrying in %.2fs",
                    self.service,
                    response.status_code,
                    redact_url(url),
                    delay,
                )
                response.close()
            attempt += 1
            time.sleep(delay)

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> tuple[httpx.Response, Any]:
        response = self.request("GET", url, params=params)
        if response.is_success:
            try:
                return response, response.json()
            except ValueError as exc:
                raise DownloadError(
                    f"{self.service} at {redact_url(url)} answered with something that is not JSON "
                    f"({response.headers.get('Content-Type', 'no content type')})",
                    url=redact_url(url),
                ) from exc
        return response, None


def error_detail(response: httpx.Response) -> str:
    """The server's own short error text (``X-Error-Message`` or a JSON ``error``), for messages."""
    msg = response.headers.get("X-Error-Message")
    if msg:
        return str(msg)[:300]
    try:
        data = response.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str):
                return str(value[:300])
    return ""


__all__ = [
    "DEFAULT_TIMEOUT",
    "PinnedTransport",
    "RemoteHTTP",
    "error_detail",
    "redact_url",
]
