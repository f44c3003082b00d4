"""The FastAPI application: one router per resource, domain errors mapped in one table."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from modeldepot import __version__
from modeldepot.api._limits import BodyLimitMiddleware
from modeldepot.api._security import COOKIE_NAME, SecurityMiddleware
from modeldepot.api.errors import install_handlers
from modeldepot.api.routers import events, install, models, reference, storage
from modeldepot.api.routers.events import EventStreams
from modeldepot.api.routers.reference import ReferenceDownloads
from modeldepot.manager import ModelManager

if TYPE_CHECKING:
    from modeldepot.reference import ModelReference

STATIC = Path(__file__).parent / "static"


def create_app(
    manager: ModelManager | None = None,
    *,
    own_manager: bool | None = None,
    allowed_roots: Iterable[str | Path] = (),
    allowed_hosts: Iterable[str] | None = None,
    references: Mapping[str, str | os.PathLike[str] | ModelReference] | None = None,
    nataili_cache_home: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """Build the app around ``manager`` (default: one opened from settings, closed on shutdown).

    Args:
        manager: the services to serve; the app closes it on shutdown when it opened it itself
            (or when ``own_manager`` is true).
        allowed_roots: folders besides the depot home whose paths clients may name (identify,
            scan_folder, local installs).
        allowed_hosts: ``Host`` header names to accept (``serve`` passes the loopback names when
            bound to loopback, against DNS rebinding); None accepts any.
        references: per Nataili service, a reference file, URL or ``ModelReference`` to serve
            instead of the shipped one (``/api/v2/reference``).
        nataili_cache_home: the Nataili folder the reference managers link files into (default:
            ``NATAILI_CACHE_HOME``, else ``XDG_CACHE_HOME``, else ``~/.cache``; then ``nataili``).
    """
    mm = manager if manager is not None else ModelManager.open()
    close_it = own_manager if own_manager is not None else manager is None

    streams = EventStreams()
    reference_downloads = ReferenceDownloads(mm, references, nataili_cache_home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        streams.reopen()
        # A server runs install jobs: interrupted ones resume, and jobs queued by
        # `modeldepot install --no-wait` are taken as they appear.
        await asyncio.to_thread(mm.install.start, watch=True)
        yield
        streams.close()
        # Reference downloads run in threads of their own: stopped before the depot closes.
        await asyncio.to_thread(reference_downloads.close)
        if close_it:
            mm.close()

    app = FastAPI(
        title="modeldepot",
        version=__version__,
        summary="Manage generative-AI model files: install, identify, deduplicate, load.",
        lifespan=lifespan,
    )
    app.state.manager = mm
    app.state.event_streams = streams
    app.state.reference = reference_downloads
    app.state.allowed_roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    install_handlers(app)
    api_key = mm.config.api_key.get_secret_value() if mm.config.api_key is not None else None
    # Added first, so it runs inside the security checks: strangers get 401/403 whatever they send.
    app.add_middleware(BodyLimitMiddleware, max_bytes=mm.config.api_max_body_bytes)
    app.add_middleware(SecurityMiddleware, api_key=api_key, allowed_hosts=allowed_hosts)
    for module in (models, install, storage, events, reference):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        response: Response = FileResponse(STATIC / "index.html", media_type="text/html")
        response.headers["Cache-Control"] = "no-cache"
        given = request.query_params.get("api_key")
        if api_key and given:
            # Reaching here means the key was right; the cookie lets the page's fetch and
            # EventSource calls authenticate without the key in every URL.
            response.set_cookie(COOKIE_NAME, given, httponly=True, samesite="strict")
        return response

    return app
