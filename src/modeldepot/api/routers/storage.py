"""/api/v2/storage: disk usage (what dedup saved), verify, garbage collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from modeldepot._jsonable import plain
from modeldepot.api.deps import ManagerDep
from modeldepot.configs import ModelConfigBase
from modeldepot.errors import ModelDepotError
from modeldepot.manager import ModelManager

router = APIRouter(prefix="/api/v2/storage", tags=["storage"])


def _size_on_disk(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:
        pass  # vanished or unreadable while we looked: it holds nothing we can count
    return 0


def _outside_size(mm: ModelManager, config: ModelConfigBase) -> int:
    """Bytes of a model whose files are not the store's (registered in place, or no manifest)."""
    try:
        return sum(entry.size for entry in mm.storage.manifest(config.key).entries)
    except ModelDepotError:
        return _size_on_disk(Path(config.path))


@router.get("/du", summary="Logical, physical and dedup-saved bytes, per model (in-place models included)")
def du(mm: ManagerDep) -> dict[str, Any]:
    """The store's report, completed with the models it leaves out (registered in place).

    ``logical_bytes`` / ``physical_bytes`` count every model: an in-place model's files add to
    both (they occupy the disk where they are, and share nothing with the store). The store's own
    figures stay as ``store_logical_bytes`` / ``store_physical_bytes``;
    ``logical_bytes - physical_bytes == saved_bytes`` holds for both pairs.
    """
    report = mm.storage.du()
    result: dict[str, Any] = plain(report)
    records = {m.key: m for m in mm.store.all_models()}
    per_model: dict[str, dict[str, Any]] = result["per_model"]
    outside = 0
    for key, config in records.items():
        if key not in per_model:
            size = _outside_size(mm, config)
            per_model[key] = {"logical": size, "unique_bytes": size}
            outside += size
    for key, usage in per_model.items():
        record = records.get(key)  # None: a manifest whose record is gone
        usage["name"] = record.name if record is not None else None
        usage["inplace"] = bool(record is not None and record.inplace)
    result["store_logical_bytes"] = report.logical_bytes
    result["store_physical_bytes"] = report.physical_bytes
    result["logical_bytes"] = report.logical_bytes + outside
    result["physical_bytes"] = report.physical_bytes + outside
    result["inplace_bytes"] = sum(u["logical"] for u in per_model.values() if u["inplace"])
    result["inplace_models"] = sum(1 for u in per_model.values() if u["inplace"])
    result["models"] = len(records)
    return result


@router.post("/verify", summary="Re-hash blobs and materialised files; report (and optionally repair) damage")
def verify(mm: ManagerDep, key: str | None = None, repair: bool = False) -> dict[str, Any]:
    if key is not None:
        mm.store.get_model(key)
    # A repair goes through the install service: what no good blob restores is fetched again from
    # the model's recorded source, as `modeldepot verify --repair` does.
    report = mm.install.repair_storage(key) if repair else mm.storage.verify(key=key)
    result: dict[str, Any] = plain(report)
    result["healthy"] = report.healthy
    return result


@router.post("/gc", summary="Remove unreferenced blobs (a dry run unless dry_run=false)")
def gc(mm: ManagerDep, dry_run: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = plain(mm.storage.gc(dry_run=dry_run))
    return result
