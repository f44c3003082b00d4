"""Building jobs for the queue: the right job class for a source, and multi-file jobs.

Seed 002's ``create_download_job`` "looks at the type of the source and selects the right
subclass of ``DownloadJobBase``"; that choice lives here, apart from the queue, so it can be
reused (and overridden) without touching the queue's threading.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from modeldepot._fs import join_inside
from modeldepot.download._redact import redact_url
from modeldepot.download.base import (
    DownloadEventHandler,
    DownloadJob,
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobStatus,
    MultiFileDownloadJob,
    RemoteFile,
)
from modeldepot.errors import InsufficientSpaceError, InvalidSourceError

S = DownloadJobStatus
_URL = re.compile(r"^https?://", re.IGNORECASE)

__all__ = ["job_for_source", "multifile_job", "parent_transition", "space_error", "target_for"]


def target_for(destdir: Path | str | None, dest: Path | str | None, filename: Path | str | None) -> Path | str:
    """The job's destination: ``destdir/filename``, else ``destdir`` as given (``dest`` is its old name).

    A string is passed through unchanged so a trailing ``/`` still marks a folder.

    Raises:
        UnsafePathError: ``filename`` is absolute or climbs out of ``destdir``.
    """
    if isinstance(filename, int):  # ``create_download_job(url, dest, 5)``: the older positional priority
        raise TypeError("create_download_job's third argument is filename (seed 002); pass priority= by keyword")
    if dest is not None and destdir is not None:
        raise TypeError("give destdir (or its older name dest), not both")
    folder = destdir if destdir is not None else dest
    if folder is None:
        raise TypeError("create_download_job() needs destdir")
    return join_inside(Path(folder), str(filename)) if filename is not None else folder


def job_for_source(
    source: Any,
    target: Path | str,
    *,
    priority: int = 10,
    access_token: str | None = None,
    expected_sha256: str | None = None,
    event_handlers: list[DownloadEventHandler] | None = None,
) -> DownloadJobBase:
    """A ``DownloadJobURL`` for an http(s) URL (a string or pydantic ``AnyHttpUrl``), a
    ``DownloadJobPath`` for a ``Path`` or an existing local path.

    Raises:
        InvalidSourceError: anything else (repo ids and ``civitai:`` sources are the installer's).
    """
    common: dict[str, Any] = {"dest": target, "priority": priority, "event_handlers": list(event_handlers or [])}
    text = str(source)
    if not isinstance(source, Path) and _URL.match(text):
        sha = expected_sha256.lower() if expected_sha256 else None
        return DownloadJob(source=text, access_token=access_token, expected_sha256=sha, **common)
    if isinstance(source, Path) or Path(text).expanduser().exists():
        return DownloadJobPath(source=source, **common)
    raise InvalidSourceError(
        f"{redact_url(text)}: not an http(s) URL and no such local file or folder "
        "(Hugging Face repo ids and civitai: sources are installed with the model installer)"
    )


def multifile_job(
    parts: list[RemoteFile],
    dest: Path,
    *,
    priority: int,
    access_token: str | None,
    event_handlers: list[DownloadEventHandler] | None,
) -> MultiFileDownloadJob:
    """One parent job and a ``DownloadJob`` per part (paths are checked before anything is built)."""
    targets = [join_inside(dest, str(p.path)) for p in parts]
    mf = MultiFileDownloadJob(dest=dest, priority=priority, event_handlers=list(event_handlers or []))
    for part, target in zip(parts, targets, strict=True):
        job = DownloadJob(
            source=part.url,
            dest=target,
            priority=priority,
            access_token=access_token,
            expected_sha256=part.sha256.lower() if part.sha256 else None,
            total_bytes=part.size or 0,
            download_path=target,
        )
        job._parent = mf
        mf.download_parts.append(job)
    mf.refresh_totals()
    mf.total_bytes = sum(p.size or 0 for p in parts)
    return mf


def space_error(mf: MultiFileDownloadJob) -> InsufficientSpaceError | None:
    """The error to fail ``mf`` with when its known sizes do not fit the disk, else None."""
    known = sum(p.total_bytes for p in mf.download_parts)
    if not known:
        return None
    probe = mf.dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if known <= free:
        return None
    return InsufficientSpaceError(
        f"{mf.dest}: {len(mf.download_parts)} files need {known:,} bytes but only {free:,} are free on {probe}"
    )


def parent_transition(
    mf: MultiFileDownloadJob, part: DownloadJob, handler: str, exc: BaseException | None
) -> tuple[str, str] | None:
    """Update ``mf`` after ``handler`` happened to one of its parts (caller holds the queue lock).

    Returns the (handler, bus event) the parent now owes, or None.
    """
    mf.refresh_totals()
    if mf.in_terminal_state:
        return None
    parts = mf.download_parts
    if handler == "on_start" and mf.status != S.RUNNING:
        mf.status = S.RUNNING
        return ("on_start", "download_started")
    if handler == "on_error":
        mf.status = S.ERROR
        mf._exception = exc
        mf.error_type = type(exc).__name__ if exc else "DownloadError"
        mf.error = f"{part.source}: {exc}"
        return ("on_error", "download_error")
    if all(p.complete for p in parts):
        mf.status = S.COMPLETED
        mf.download_path = mf.dest
        return ("on_complete", "download_complete")
    if all(p.in_terminal_state for p in parts) and any(p.cancelled for p in parts):
        mf.status = S.CANCELLED
        return ("on_cancelled", "download_cancelled")
    if handler == "on_paused" and all(p.paused or p.complete for p in parts):
        mf.status = S.PAUSED
        return ("on_paused", "download_paused")
    return None
