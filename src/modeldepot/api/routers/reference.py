"""/api/v2/reference: the models each Nataili service knows, and their downloads.

``GET /api/v2/reference`` lists every service's entries with availability and download progress;
``POST /api/v2/reference/{service}/{key}/download`` starts a download in a background thread (one
per entry at a time: a second POST while it runs returns the same state) and answers 202 at once.
A client polls the list (or the entry) for ``download.bytes`` / ``total_bytes`` until ``status`` is
``completed`` or ``error``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, status

from modeldepot.api.deps import ReferenceDep
from modeldepot.api.schemas import ReferenceDetail, ReferenceDownload, ReferenceFile, ReferenceItem
from modeldepot.errors import ModelDepotError, UnknownModelException

if TYPE_CHECKING:
    from modeldepot.manager import ModelManager
    from modeldepot.managers import BaseModelManager, SuperModelManager
    from modeldepot.reference import ModelReference

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/reference", tags=["reference"])


@dataclass
class _Download:
    status: Literal["idle", "running", "completed", "error"] = "idle"
    error: str | None = None
    urls: frozenset[str] = frozenset()
    #: Queue jobs that existed before this download started (they are not its files).
    before: frozenset[int] = frozenset()
    thread: threading.Thread | None = field(default=None, repr=False)


class ReferenceDownloads:
    """The app's managers (built on first use, over the app's depot) and its reference downloads.

    Args:
        depot: the app's ``ModelManager``.
        references: per service, a path, URL or ``ModelReference`` replacing the shipped one.
        cache_home: the Nataili folder (default: ``NATAILI_CACHE_HOME`` / ``XDG_CACHE_HOME`` / ``~/.cache``).
    """

    def __init__(
        self,
        depot: ModelManager,
        references: Mapping[str, str | os.PathLike[str] | ModelReference] | None = None,
        cache_home: str | os.PathLike[str] | None = None,
    ) -> None:
        self.depot = depot
        self._references = dict(references or {})
        self._cache_home = cache_home
        self._super: SuperModelManager | None = None
        self._lock = threading.Lock()
        self._downloads: dict[tuple[str, str], _Download] = {}
        self._closing = False

    @property
    def managers(self) -> dict[str, BaseModelManager]:
        with self._lock:
            if self._super is None:
                from modeldepot.managers import MANAGERS, SuperModelManager

                self._super = SuperModelManager(
                    **{s: True for s in MANAGERS},
                    depot=self.depot,
                    references=self._references or None,
                    cache_home=self._cache_home,
                )
            return self._super.managers

    def manager(self, service: str) -> BaseModelManager:
        managers = self.managers
        if service not in managers:
            raise UnknownModelException(f"no service {service!r}; services: {', '.join(managers)}", key=service)
        return managers[service]

    # Items ----------------------------------------------------------------------------------
    def item(self, manager: BaseModelManager, key: str) -> ReferenceItem:
        return ReferenceItem(**manager.describe(key), download=self.progress(manager.service, key))

    def detail(self, manager: BaseModelManager, key: str) -> ReferenceDetail:
        entry = manager.models[key]
        files = [
            ReferenceFile(
                path=f.path,
                location=str(manager.path / f.path),
                present=(manager.path / f.path.rstrip("/")).exists(),
                sha256sum=f.sha256sum,
                md5sum=f.md5sum,
            )
            for f in entry.files
        ]
        return ReferenceDetail(
            **self.item(manager, key).model_dump(), folder=str(manager.path), files=files, entry=entry.dump()
        )

    def progress(self, service: str, key: str) -> ReferenceDownload:
        with self._lock:
            state = self._downloads.get((service, key))
        if state is None:
            return ReferenceDownload(status="idle")
        done = total = 0
        latest: dict[str, Any] = {}
        for job in self.depot.downloads.list_jobs():
            url = str(getattr(job, "url", job.source))
            # The newest job of each of the entry's URLs (a retried file has an older one too).
            if job.id not in state.before and url in state.urls and (url not in latest or job.id > latest[url].id):
                latest[url] = job
        for job in latest.values():
            done += job.bytes
            total += job.total_bytes
        return ReferenceDownload(status=state.status, bytes=done, total_bytes=total, error=state.error)

    # Downloads ------------------------------------------------------------------------------
    def start(self, manager: BaseModelManager, key: str) -> None:
        """Download ``key`` in a thread unless it is already downloading."""
        entry = manager.models[key]
        slot = (manager.service, key)
        with self._lock:
            current = self._downloads.get(slot)
            if current is not None and current.status == "running":
                return
            if self._closing:
                raise ModelDepotError("the server is shutting down; no download is started")
            state = _Download(
                status="running",
                urls=frozenset(d.file_url for d in entry.config.download if d.file_url),
                before=frozenset(j.id for j in self.depot.downloads.list_jobs()),
            )
            state.thread = threading.Thread(
                target=self._run, args=(manager, key, state), name=f"reference-{manager.service}-{key}", daemon=True
            )
            self._downloads[slot] = state
        state.thread.start()

    def _run(self, manager: BaseModelManager, key: str, state: _Download) -> None:
        try:
            manager.download_model(key)
        except ModelDepotError as exc:
            state.error, state.status = str(exc), "error"
        except Exception as exc:  # a thread must not die silently: the item says what went wrong
            log.exception("reference download of %s/%s failed", manager.service, key)
            state.error, state.status = f"{type(exc).__name__}: {exc}", "error"
        else:
            state.status = "completed"

    def close(self) -> None:
        """Cancel the running downloads and wait for their threads (before the depot closes)."""
        with self._lock:
            self._closing = True
            running = [s for s in self._downloads.values() if s.status == "running"]
        for state in running:
            for job in self.depot.downloads.list_jobs():
                if job.id not in state.before and str(getattr(job, "url", job.source)) in state.urls:
                    self.depot.downloads.cancel_job(job)
        for state in running:
            if state.thread is not None:
                state.thread.join(timeout=60)


@router.get("", summary="Known models of every service (or one), with availability and download progress")
@router.get("/", include_in_schema=False)
def list_reference(
    ref: ReferenceDep,
    service: Annotated[str | None, Query(max_length=100, description="Only this service")] = None,
    available: Annotated[bool | None, Query(description="Only available (true) or unavailable (false) models")] = None,
) -> list[ReferenceItem]:
    managers = [ref.manager(service)] if service is not None else list(ref.managers.values())
    items = [ref.item(m, key) for m in managers for key in m.models]
    return [i for i in items if available is None or i.available == available]


@router.get("/{service}/{key:path}", summary="One reference entry: every field, its files and where they are")
def get_entry(ref: ReferenceDep, service: str, key: str) -> ReferenceDetail:
    manager = ref.manager(service)
    return ref.detail(manager, key)


@router.post(
    "/{service}/{key:path}",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start downloading a reference entry (POST .../{key}/download); poll the item for progress",
)
def download_entry(ref: ReferenceDep, service: str, key: str) -> ReferenceItem:
    key, download = _split(key)
    if not download:
        raise UnknownModelException(f"no such action on {service}/{key}: POST .../{key}/download", key=key)
    manager = ref.manager(service)
    ref.start(manager, key)  # an unknown key is a 404 before any thread starts
    return ref.item(manager, key)


def _split(path: str) -> tuple[str, bool]:
    """Reference keys may hold ``/`` (``ViT-L/14``): the key is the path, less a final ``/download``."""
    if path.endswith("/download"):
        return path.removesuffix("/download"), True
    return path, False
