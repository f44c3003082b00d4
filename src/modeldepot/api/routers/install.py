"""/api/v2/models/install: install jobs (start, list, get, cancel, pause, resume, prune).

Jobs are rendered with ``ModelInstallJob.to_public()``, which never holds the access token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from modeldepot.api._paths import check_inside_roots
from modeldepot.api.deps import ManagerDep, RootsDep
from modeldepot.api.schemas import InstallOverrides

router = APIRouter(prefix="/api/v2/models/install", tags=["install"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Install a model from a source string")
@router.post("/", status_code=status.HTTP_201_CREATED, include_in_schema=False)
def install(
    mm: ManagerDep,
    roots: RootsDep,
    source: Annotated[
        str, Query(min_length=1, max_length=4096, description="org/repo[:variant][:subfolder], URL, civitai:ID, path")
    ],
    inplace: bool = False,
    access_token: Annotated[
        str | None, Query(max_length=4096, description="Used for this install only; never stored or shown")
    ] = None,
    overrides: Annotated[InstallOverrides | None, Body()] = None,
) -> dict[str, Any]:
    from modeldepot.remote import LocalModelSource, parse_source

    parsed = parse_source(source, config=mm.config, access_token=access_token or None)
    if isinstance(parsed, LocalModelSource):
        # A path on the server's disk: only inside the folders the server may read.
        check_inside_roots(mm, str(parsed.path), roots)
    config = overrides.model_dump(exclude_none=True, mode="json") if overrides else None
    job = mm.install.import_model(parsed, config, inplace)
    return job.to_public()


@router.get("", summary="All install jobs")
@router.get("/", include_in_schema=False)
def list_jobs(mm: ManagerDep) -> list[dict[str, Any]]:
    return [job.to_public() for job in mm.install.list_jobs()]


@router.delete("", summary="Prune finished jobs")
@router.delete("/", include_in_schema=False)
def prune(mm: ManagerDep) -> dict[str, Any]:
    before = {job.id for job in mm.install.list_jobs()}
    mm.install.prune_jobs()
    after = {job.id for job in mm.install.list_jobs()}
    return {"pruned": sorted(before - after)}


@router.get("/{job_id}", summary="One install job")
def get_job(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    return mm.install.get_job_by_id(job_id).to_public()


@router.delete("/{job_id}", summary="Cancel an install job")
def cancel(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.cancel_job(job)
    return job.to_public()


@router.post("/{job_id}/pause", summary="Pause an install job's downloads (partial files are kept)")
def pause(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.pause_job(job)
    return job.to_public()


@router.post("/{job_id}/resume", summary="Resume a paused install job")
def resume(mm: ManagerDep, job_id: int) -> dict[str, Any]:
    job = mm.install.get_job_by_id(job_id)
    mm.install.resume_job(job)
    return job.to_public()
