"""Annotated service aliases: routes declare what they need; tests hand ``create_app`` a manager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from modeldepot.manager import ModelManager


def get_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def get_allowed_roots(request: Request) -> list[Path]:
    roots: list[Path] = request.app.state.allowed_roots
    return roots


ManagerDep = Annotated[ModelManager, Depends(get_manager)]
RootsDep = Annotated[list[Path], Depends(get_allowed_roots)]
