"""``download_file``: one download in the foreground, for a command or a script (no display here).

The ``modeldepot download`` command (``cli/download.py``) draws its progress bar from the
``on_progress`` callback; this module never imports rich.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from modeldepot.config import DepotConfig
from modeldepot.download._queue import DownloadQueueService
from modeldepot.download.base import DownloadJobBase, DownloadLimits
from modeldepot.errors import DownloadError

ProgressCallback = Callable[[DownloadJobBase], None]


def download_file(
    url: str,
    dest: Path | str,
    config: DepotConfig | None = None,
    *,
    access_token: str | None = None,
    expected_sha256: str | None = None,
    limits: DownloadLimits | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (a file, or a folder to name the file in) and return the path.

    ``dest`` is a folder when it exists as one or when it is written with a trailing slash
    (``models/``): such a folder is created, and the file inside it takes the server's name.
    ``on_progress(job)`` is called when the job starts, as bytes arrive and once when it ends.
    Ctrl-C pauses the download (the partial file and its state stay, a re-run resumes) and
    re-raises ``KeyboardInterrupt``. Errors are raised as ``DownloadError`` subclasses.
    """
    dest = _destination(dest)
    done = threading.Event()

    def update(job: DownloadJobBase) -> None:
        if on_progress is not None:
            on_progress(job)

    def finish(job: DownloadJobBase, exc: BaseException | None = None) -> None:
        update(job)
        done.set()

    queue = DownloadQueueService(max_parallel_dl=1, config=config, limits=limits)
    queue.start()
    job = None
    try:
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
        while not done.wait(0.2):  # a short wait keeps Ctrl-C responsive
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


__all__ = ["ProgressCallback", "download_file"]
