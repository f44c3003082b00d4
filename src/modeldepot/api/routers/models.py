"""/api/v2/models: records (list, search, get, update, delete, identify, scan, files, cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from modeldepot.api._paths import check_inside_roots
from modeldepot.api.deps import ManagerDep, RootsDep
from modeldepot.api.schemas import (
    COUNT_LIMIT,
    Deleted,
    IdentifyRequest,
    ModelFile,
    ModelFiles,
    ModelList,
    ModelUpdate,
    ScanEntry,
)
from modeldepot.configs import ModelConfigBase
from modeldepot.errors import UnknownModelException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

router = APIRouter(prefix="/api/v2/models", tags=["models"])
Text = Annotated[str | None, Query(max_length=500)]


def public(config: ModelConfigBase) -> dict[str, Any]:
    """A record as JSON; the raw remote API answer stays out of listings (it can be large)."""
    data: dict[str, Any] = config.model_dump(mode="json")
    data.pop("source_api_response", None)
    data["compatible_bases"] = sorted(data.get("compatible_bases") or [])
    return data


@router.get("/", response_model=ModelList, summary="List models, filtered and paged")
def list_models(
    mm: ManagerDep,
    name: Text = None,
    base: BaseModelType | None = None,
    type: ModelType | None = None,
    format: ModelFormat | None = None,
    tag: Annotated[list[str] | None, Query(max_length=50, description="Every tag given must be present")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Substring of name, description, tags, source")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> ModelList:
    filters: dict[str, Any] = {"name": name, "base": base, "type": type, "format": format, "tag": tag, "q": q}
    models = mm.store.search_models(**filters, offset=offset, limit=limit)
    total = mm.store.count_models(**filters, at_most=COUNT_LIMIT + 1)
    exact = total <= COUNT_LIMIT
    return ModelList(
        models=[public(m) for m in models],
        total=total if exact else COUNT_LIMIT,
        total_exact=exact,
        offset=offset,
        limit=limit,
    )


@router.get("/get_by_attrs", summary="One model by name, type and base")
def get_by_attrs(
    mm: ManagerDep, name: Annotated[str, Query(max_length=500)], type: ModelType, base: BaseModelType
) -> dict[str, Any]:
    return public(mm.store.model_info_by_name(name, base, type))


@router.get("/get_by_hash", summary="The model with this content hash")
def get_by_hash(mm: ManagerDep, hash: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
    found = mm.store.search_by_hash(hash)
    if not found:
        raise UnknownModelException(f"no model with hash {hash!r}")
    return public(found[0])


@router.get("/i/{key}", summary="One model by key")
def get_model(mm: ManagerDep, key: str) -> dict[str, Any]:
    config = mm.store.get_model(key)
    data = public(config)
    data["files_present"] = Path(config.path).exists()
    return data


@router.patch("/i/{key}", summary="Change name, description, tags, base/type overrides, trigger phrases...")
def update_model(mm: ManagerDep, key: str, changes: ModelUpdate) -> dict[str, Any]:
    data = changes.model_dump(exclude_unset=True, mode="json")
    for field in ("tags", "trigger_phrases"):
        if field in data and data[field] is not None:
            data[field] = list(dict.fromkeys(data[field]))  # the order the user typed, once each
    if "trigger_phrases" in data and data["trigger_phrases"] is not None:
        data["trigger_phrases"] = set(data["trigger_phrases"])
    mm.store.get_model(key)
    return public(mm.store.update_model(key, data))


@router.delete("/i/{key}", response_model=Deleted, summary="Delete a model (in-place files: ?unconditionally=true)")
def delete_model(mm: ManagerDep, key: str, unconditionally: bool = False) -> Deleted:
    config = mm.store.get_model(key)
    if unconditionally:
        mm.install.unconditionally_delete(key)
    else:
        mm.install.delete(key)
    return Deleted(deleted=key, name=config.name, files_removed=unconditionally or not config.inplace)


@router.post("/i/{key}/reidentify", summary="Identify a model's files again and update its record")
def reidentify(mm: ManagerDep, key: str) -> dict[str, Any]:
    mm.store.get_model(key)
    return public(mm.install.reidentify(key))


@router.get("/i/{key}/files", response_model=ModelFiles, summary="A model's files and where their bytes live")
def model_files(mm: ManagerDep, key: str) -> ModelFiles:
    config = mm.store.get_model(key)
    root = Path(config.path)
    manifest = None
    try:
        manifest = mm.storage.manifest(key)
    except UnknownModelException:
        manifest = None  # a record without a manifest (e.g. a YAML store's hand-written entry)
    files: list[ModelFile] = []
    if manifest is not None:
        for entry in manifest.entries:
            where = root if manifest.kind == "file" else root / entry.relpath
            blob = None if manifest.inplace else str(mm.storage.blobs.path_for(entry.digest))
            files.append(
                ModelFile(path=entry.relpath, size=entry.size, location=str(where), blob=blob, digest=entry.digest)
            )
    elif root.is_file():
        files.append(ModelFile(path=root.name, size=root.stat().st_size, location=str(root)))
    elif root.is_dir():
        files.extend(
            ModelFile(path=p.relative_to(root).as_posix(), size=p.stat().st_size, location=str(p))
            for p in sorted(root.rglob("*"))
            if p.is_file()
        )
    return ModelFiles(
        key=key,
        path=str(root),
        inplace=config.inplace,
        link_mode=manifest.link_mode if manifest is not None else None,
        files=files,
    )


@router.post("/identify", summary="Identify a file or folder on the server's disk (inside allowed roots)")
def identify_path(mm: ManagerDep, roots: RootsDep, body: IdentifyRequest) -> dict[str, Any]:
    from modeldepot.errors import ModelNotFoundException
    from modeldepot.identify import identify

    path = check_inside_roots(mm, body.path, roots)
    if not path.exists():
        raise ModelNotFoundException(f"{path}: no such file or folder", path=path)
    result: dict[str, Any] = identify(path).to_dict()
    result["path"] = str(path)
    return result


@router.get("/scan_folder", response_model=list[ScanEntry], summary="Model files in a folder, installed or not")
def scan_folder(
    mm: ManagerDep, roots: RootsDep, scan_path: Annotated[str, Query(min_length=1, max_length=4096)]
) -> list[ScanEntry]:
    folder = check_inside_roots(mm, scan_path, roots)
    return [ScanEntry(**e) for e in mm.install.scan_folder(folder)]


@router.get("/stats", summary="Model cache statistics (RAM / VRAM use, hits, misses)")
def cache_stats(mm: ManagerDep) -> dict[str, Any]:
    return mm.load.stats()


@router.post("/empty_model_cache", summary="Drop every unlocked model from the model cache")
def empty_model_cache(mm: ManagerDep) -> dict[str, Any]:
    dropped = mm.load.cache.clear()
    return {"dropped": dropped, "stats": mm.load.stats()}
