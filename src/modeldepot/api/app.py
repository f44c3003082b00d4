"""The FastAPI application: one router per resource, domain errors mapped in one table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from modeldepot import __version__
from modeldepot.api._security import ApiKeyMiddleware
from modeldepot.api.errors import install_handlers
from modeldepot.api.routers import events, install, models, storage
from modeldepot.manager import ModelManager

STATIC = Path(__file__).parent / "static"


def create_app(manager: ModelManager | None = None, *, own_manager: bool | None = None) -> FastAPI:
    """Build the app around ``manager`` (default: one opened from settings, closed on shutdown)."""
    mm = manager if manager is not None else ModelManager.open()
    close_it = own_manager if own_manager is not None else manager is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_it:
            mm.close()

    app = FastAPI(
        title="modeldepot",
        version=__version__,
        summary="Manage generative-AI model files: install, identify, deduplicate, load.",
        lifespan=lifespan,
    )
    app.state.manager = mm
    install_handlers(app)
    if mm.config.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=mm.config.api_key.get_secret_value())
    for module in (models, install, storage, events):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
