"""``modeldepot serve``: the API and web page on 127.0.0.1 (another address needs an API key)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.api._security import LOOPBACK_HOSTS, RedactSecretsFilter, check_bind, is_loopback_host
from modeldepot.config import DepotConfig

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090


def make_server(app: FastAPI, host: str, port: int, *, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``app`` that ends the app's event streams as soon as shutdown starts.

    Without that, Ctrl-C with a page open waits for the never-ending stream, then cancels it
    with a ``CancelledError`` traceback. Requests still running 5 s later are cut.
    """
    import uvicorn

    from modeldepot.api.routers.events import EventStreams

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            streams = getattr(app.state, "event_streams", None)
            if isinstance(streams, EventStreams):
                streams.close()
            await super().shutdown(sockets)

    logging.getLogger("uvicorn.access").addFilter(RedactSecretsFilter())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return Server(config)


def build_app(
    config: DepotConfig, host: str, *, allowed_roots: Iterable[str | Path] = (), manager: Any = None
) -> FastAPI:
    """Check the bind rule, then build the app (which owns and closes its manager)."""
    from modeldepot.api.app import create_app
    from modeldepot.manager import ModelManager

    key = config.api_key.get_secret_value() if config.api_key is not None else None
    check_bind(host, key)
    hosts = [*LOOPBACK_HOSTS, host.strip("[]")] if is_loopback_host(host) else None
    mm = manager if manager is not None else ModelManager(config)
    return create_app(mm, own_manager=True, allowed_roots=allowed_roots, allowed_hosts=hosts)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    home: str | Path | None = None,
    api_key: str | None = None,
    *,
    allowed_roots: Iterable[str | Path] = (),
    log_level: str = "info",
) -> None:
    """Serve the API and page until interrupted.

    Args:
        host: address to bind; anything but loopback needs an API key (argument, settings or
            ``MODELDEPOT_API_KEY``), else ``NotAllowedError`` is raised before binding.
        port: TCP port (0: any free port).
        home: depot folder (default: settings / ``MODELDEPOT_HOME``).
        api_key: required on every request when set (``X-API-Key`` or ``Authorization: Bearer``;
            open the page once as ``/?api_key=KEY``).
        allowed_roots: extra folders whose paths clients may name (identify, scan, local install).
    """
    settings: dict[str, Any] = {}
    if home is not None:
        settings["home"] = Path(home)
    if api_key:
        settings["api_key"] = api_key
    config = DepotConfig.load(**settings)
    app = build_app(config, host, allowed_roots=allowed_roots)
    make_server(app, host, port, log_level=log_level).run()
