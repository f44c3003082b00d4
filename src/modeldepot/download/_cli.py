"""``cli_download``: one download in the foreground with a rich progress bar (``modeldepot download``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from modeldepot.config import DepotConfig
from modeldepot.download._queue import DownloadQueueService
from modeldepot.download.base import DownloadJobBase, DownloadLimits
from modeldepot.errors import DownloadError


def cli_download(
    url: str,
    dest: Path | str,
    config: DepotConfig | None = None,
    *,
    access_token: str | None = None,
    expected_sha256: str | None = None,
    limits: DownloadLimits | None = None,
    show_progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (a file, or a folder to name the file in) and return the path.

    ``dest`` is a folder when it exists as one or when it is written with a trailing slash
    (``models/``): such a folder is created, and the file inside it takes the server's name.
    Ctrl-C pauses the download (the partial file and its state stay, a re-run resumes) and
    re-raises ``KeyboardInterrupt``. Errors are raised as ``DownloadError`` subclasses.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    dest = _destination(dest)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
    )
    task = progress.add_task("connecting", total=None)
    done = threading.Event()

    def update(job: DownloadJobBase) -> None:
        name = job.download_path.name if job.download_path else "download"
        progress.update(task, description=name, completed=job.bytes, total=job.total_bytes or None)

    def finish(job: DownloadJobBase, exc: BaseException | None = None) -> None:
        update(job)
        done.set()

    queue = DownloadQueueService(max_parallel_dl=1, config=config, limits=limits)
    queue.start()
    job = None
    try:
        with progress:
            job = queue.download(
                url,
                dest,
                access_token=access_token,
                expected_sha256=expected_sha256,
                on_start=update,
                on_progress=update,
                on_complete=finish,
                on_error=finish,
                on_cancelled=finish,
                on_paused=finish,
            )
            while not done.wait(0.2):
                pass
    except KeyboardInterrupt:
        if job is not None:
            queue.pause_job(job)
            queue.wait_for_job(job, timeout=30)
        raise
    finally:
        queue.stop()
    if job.errored:
        exc = job.exception
        raise exc if exc is not None else DownloadError(job.error or "download failed", url=job.source)
    if not job.complete or job.download_path is None:
        raise DownloadError(f"{job.source}: download {job.status.value}", url=job.source)
    return job.download_path


def _destination(dest: Path | str) -> Path:
    """``dest`` as a path; a string ending in a separator names a folder, created here (``Path``
    drops the trailing slash, which would make the download a file of the folder's name)."""
    raw = os.fspath(dest)
    path = Path(raw).expanduser()
    separators = tuple(s for s in (os.sep, os.altsep) if s)
    if isinstance(raw, str) and raw.endswith(separators):
        if path.exists() and not path.is_dir():
            raise DownloadError(f"{path} is a file, not a folder to download into", url=None)
        path.mkdir(parents=True, exist_ok=True)
    return path
