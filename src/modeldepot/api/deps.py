"""Annotated service aliases: routes declare what they need; tests hand ``create_app`` a manager."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from modeldepot.manager import ModelManager

if TYPE_CHECKING:
    from modeldepot.api.routers.reference import ReferenceDownloads


def get_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def get_allowed_roots(request: Request) -> list[Path]:
    roots: list[Path] = request.app.state.allowed_roots
    return roots


def get_reference(request: Request) -> ReferenceDownloads:
    reference: ReferenceDownloads = request.app.state.reference
    return reference


ManagerDep = Annotated[ModelManager, Depends(get_manager)]
RootsDep = Annotated[list[Path], Depends(get_allowed_roots)]
ReferenceDep = Annotated["ReferenceDownloads", Depends(get_reference)]
