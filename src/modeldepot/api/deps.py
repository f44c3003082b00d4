"""Annotated service aliases: routes declare what they need, tests swap the manager."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modeldepot.manager import ModelManager


def get_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


ManagerDep = Annotated[ModelManager, Depends(get_manager)]
