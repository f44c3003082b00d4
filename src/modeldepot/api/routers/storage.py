"""/api/v2/storage: disk usage (what dedup saved), verify, garbage collection."""

from __future__ import annotations

import dataclasses
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter

from modeldepot.api.deps import ManagerDep

router = APIRouter(prefix="/api/v2/storage", tags=["storage"])


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if hasattr(type(obj), "ok"):
            data["ok"] = bool(getattr(obj, "ok"))  # noqa: B009 - a property, absent from fields()
        return data
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


@router.get("/du", summary="Logical, physical and dedup-saved bytes, per model")
def du(mm: ManagerDep) -> dict[str, Any]:
    report = mm.storage.du()
    result: dict[str, Any] = _plain(report)
    names = {m.key: m.name for m in mm.store.all_models()}
    for key, usage in result["per_model"].items():
        usage["name"] = names.get(key)
    return result


@router.post("/verify", summary="Re-hash blobs and materialised files; report (and optionally repair) damage")
def verify(mm: ManagerDep, key: str | None = None, repair: bool = False) -> dict[str, Any]:
    if key is not None:
        mm.store.get_model(key)
    result: dict[str, Any] = _plain(mm.storage.verify(key=key, repair=repair))
    return result


@router.post("/gc", summary="Remove unreferenced blobs (a dry run unless dry_run=false)")
def gc(mm: ManagerDep, dry_run: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = _plain(mm.storage.gc(dry_run=dry_run))
    return result
