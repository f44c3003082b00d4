"""/api/v2/models/install: install jobs (start, list, get, cancel, pause, resume, prune)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from modeldepot.api.deps import ManagerDep
from modeldepot.api.routers.models import check_inside_roots
from modeldepot.api.schemas import InstallOverrides

router = APIRouter(prefix="/api/v2/models/install", tags=["install"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Install a model from a source string")
@router.post("/", status_code=status.HTTP_201_CREATED, include_in_schema=False)
def install(
    mm: ManagerDep,
    source: Annotated[str, Query(min_length=1, max_length=4096)],
    inplace: bool = False,
    access_token: Annotated[str | None, Query(max_length=4096)] = None,
    overrides: Annotated[InstallOverrides | None, Body()] = None,
) -> dict[str, Any]:
    from modeldepot.remote import LocalModelSource, parse_source

    parsed = parse_source(source, config=mm.config)
    if isinstance(parsed, LocalModelSource):
        check_inside_roots(mm, str(parsed.path))
    config = overrides.model_dump(exclude_none=True, mode="json") if overrides else None
    job = mm.install.heuristic_import(source, config=config, access_token=access_token, inplace=inplace)
    result: dict[str, Any] = job.to_public()
    return result


@router.get("", summary="All install jobs")
@router.get("/", include_in_schema=False)
def list_jobs(mm: ManagerDep) -> list[dict[str, Any]]:
    return [job.to_public() for job in mm.install.list_jobs()]


@router.delete("", summary="Prune finished jobs")
@router.delete("/", include_in_schema=False)
def prune(mm: ManagerDep) -> dict[str, Any]:
    mm.install.prune_jobs()
    return {"pruned": True}


@router.get("/{job_id}", summary="One install job")
def get_job(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    result: dict[str, Any] = mm.install.get_job_by_id(job_id).to_public()
    return result


@router.delete("/{job_id}", summary="Cancel an install job")
def cancel(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.cancel_job(job)
    result: dict[str, Any] = job.to_public()
    return result


@router.post("/{job_id}/pause", summary="Pause an install job's downloads")
def pause(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.pause_job(job)
    result: dict[str, Any] = job.to_public()
    return result


@router.post("/{job_id}/resume", summary="Resume a paused install job")
def resume(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.resume_job(job)
    result: dict[str, Any] = job.to_public()
    return result
