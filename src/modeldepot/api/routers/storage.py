"""/api/v2/storage: disk usage (what dedup saved), verify, garbage collection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modeldepot._jsonable import plain
from modeldepot.api.deps import ManagerDep

router = APIRouter(prefix="/api/v2/storage", tags=["storage"])


@router.get("/du", summary="Logical, physical and dedup-saved bytes, per model")
def du(mm: ManagerDep) -> dict[str, Any]:
    report = mm.storage.du()
    result: dict[str, Any] = plain(report)
    names = {m.key: m.name for m in mm.store.all_models()}
    for key, usage in result["per_model"].items():
        usage["name"] = names.get(key)
    return result


@router.post("/verify", summary="Re-hash blobs and materialised files; report (and optionally repair) damage")
def verify(mm: ManagerDep, key: str | None = None, repair: bool = False) -> dict[str, Any]:
    if key is not None:
        mm.store.get_model(key)
    result: dict[str, Any] = plain(mm.storage.verify(key=key, repair=repair))
    return result


@router.post("/gc", summary="Remove unreferenced blobs (a dry run unless dry_run=false)")
def gc(mm: ManagerDep, dry_run: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = plain(mm.storage.gc(dry_run=dry_run))
    return result
