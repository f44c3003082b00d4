"""/api/v2/storage: disk usage, verify, garbage collection."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from modeldepot.api.deps import ManagerDep

router = APIRouter(prefix="/api/v2/storage", tags=["storage"])


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


@router.get("/du", summary="Logical, physical and dedup-saved bytes, per model")
def du(mm: ManagerDep) -> dict[str, Any]:
    result: dict[str, Any] = _plain(mm.storage.du())
    return result


@router.post("/verify", summary="Re-hash blobs and materialised files; report damage")
def verify(mm: ManagerDep, key: str | None = None, repair: bool = False) -> dict[str, Any]:
    if key is not None:
        mm.store.get_model(key)
    result: dict[str, Any] = _plain(mm.storage.verify(key=key, repair=repair))
    return result


@router.post("/gc", summary="Remove unreferenced blobs (dry run by default)")
def gc(mm: ManagerDep, dry_run: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = _plain(mm.storage.gc(dry_run=dry_run))
    return result
