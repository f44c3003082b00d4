"""/api/v2/models: records (list, search, get, update, delete, identify, scan)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from modeldepot.api.deps import ManagerDep
from modeldepot.api.schemas import IdentifyRequest, ModelList, ModelUpdate, ScanEntry
from modeldepot.errors import NotAllowedError, UnknownModelException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

router = APIRouter(prefix="/api/v2/models", tags=["models"])


def _public(config: Any) -> dict[str, Any]:
    data: dict[str, Any] = config.model_dump(mode="json")
    data["compatible_bases"] = sorted(data.get("compatible_bases") or [])
    return data


def allowed_roots(mm: Any) -> list[Path]:
    roots = [mm.config.home, mm.config.models_path, *getattr(mm.config, "allowed_roots", [])]
    return [Path(r).resolve() for r in roots]


def check_inside_roots(mm: Any, path: str) -> Path:
    """A server-side path the client may name: only inside the home/models folders (or allowed roots)."""
    if "\x00" in path:
        raise NotAllowedError("path contains a NUL byte")
    p = Path(path).expanduser().resolve()
    for root in allowed_roots(mm):
        if p == root or root in p.parents:
            return p
    raise NotAllowedError(f"{path} is outside the folders this server may read")


@router.get("/", response_model=ModelList, summary="List models, filtered and paged")
def list_models(
    mm: ManagerDep,
    name: str | None = None,
    base: BaseModelType | None = None,
    type: ModelType | None = None,
    format: ModelFormat | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> ModelList:
    filters: dict[str, Any] = {"name": name, "base": base, "type": type, "format": format, "tag": tag, "q": q}
    models = mm.store.search_models(**filters, offset=offset, limit=limit)
    total = mm.store.count_models(**filters)
    return ModelList(models=[_public(m) for m in models], total=total, offset=offset, limit=limit)


@router.get("/get_by_attrs", summary="One model by name, type and base")
def get_by_attrs(mm: ManagerDep, name: str, type: ModelType, base: BaseModelType) -> dict[str, Any]:
    return _public(mm.store.model_info_by_name(name, base, type))


@router.get("/get_by_hash", summary="Models with this content hash")
def get_by_hash(mm: ManagerDep, hash: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
    found = mm.store.search_by_hash(hash)
    if not found:
        raise UnknownModelException(f"no model with hash {hash!r}")
    return _public(found[0])


@router.get("/i/{key}", summary="One model by key")
def get_model(mm: ManagerDep, key: str) -> dict[str, Any]:
    config = mm.store.get_model(key)
    data = _public(config)
    data["files_present"] = Path(config.path).exists()
    return data


@router.patch("/i/{key}", summary="Change a model's name, description, tags, base, type...")
def update_model(mm: ManagerDep, key: str, changes: ModelUpdate) -> dict[str, Any]:
    data = changes.model_dump(exclude_unset=True, mode="json")
    if "trigger_phrases" in data and data["trigger_phrases"] is not None:
        data["trigger_phrases"] = set(data["trigger_phrases"])
    return _public(mm.store.update_model(key, data))


@router.delete("/i/{key}", summary="Delete a model (in-place files only with unconditionally=true)")
def delete_model(mm: ManagerDep, key: str, unconditionally: bool = False) -> dict[str, Any]:
    config = mm.store.get_model(key)
    if unconditionally:
        mm.install.unconditionally_delete(key)
    else:
        mm.install.delete(key)
    return {"deleted": key, "name": config.name}


@router.post("/i/{key}/reidentify", summary="Identify a model's files again and update its record")
def reidentify(mm: ManagerDep, key: str) -> dict[str, Any]:
    return _public(mm.install.reidentify(key))


@router.post("/identify", summary="Identify a file or folder on the server's disk")
def identify_path(mm: ManagerDep, body: IdentifyRequest) -> dict[str, Any]:
    from modeldepot.identify import identify

    path = check_inside_roots(mm, body.path)
    result: dict[str, Any] = identify(path).to_dict()
    return result


@router.get("/scan_folder", response_model=list[ScanEntry], summary="Model files in a folder, installed or not")
def scan_folder(mm: ManagerDep, scan_path: Annotated[str, Query(min_length=1, max_length=4096)]) -> list[ScanEntry]:
    folder = check_inside_roots(mm, scan_path)
    return [ScanEntry(**e) for e in mm.install.scan_folder(folder)]


@router.get("/stats", summary="Model cache statistics")
def cache_stats(mm: ManagerDep) -> dict[str, Any]:
    stats: dict[str, Any] = mm.load.cache_stats()
    return stats


@router.post("/empty_model_cache", summary="Drop every unlocked model from the cache")
def empty_model_cache(mm: ManagerDep) -> dict[str, Any]:
    mm.load.clear_cache()
    return {"emptied": True}


@router.get("/i/{key}/files", summary="A model's files: relative path, size, and where they live")
def model_files(mm: ManagerDep, key: str) -> list[dict[str, Any]]:
    config = mm.store.get_model(key)
    root = Path(config.path)
    if root.is_file():
        return [{"path": root.name, "size": root.stat().st_size, "location": str(root)}]
    if not root.is_dir():
        return []
    return [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "location": str(p.resolve())}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
