"""``DownloadQueueService``: worker threads over a priority queue of download jobs.

Handlers (per job and per queue) and EventBus events run in the job's worker thread. Progress is
reported about every 1 % of bytes and at most every ``progress_interval`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import queue
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeldepot._fs import join_inside
from modeldepot._tokens import resolve_token
from modeldepot.config import DepotConfig
from modeldepot.download._fetch import FileFetcher, Stopped
from modeldepot.download._parts import remove_partial
from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._redact import redact_text
from modeldepot.download.base import (
    HANDLER_NAMES,
    AnyDownloadJob,
    DownloadEventHandler,
    DownloadExceptionHandler,
    DownloadJob,
    DownloadJobBase,
    DownloadJobStatus,
    DownloadLimits,
    DownloadQueueServiceBase,
    MultiFileDownloadJob,
    RemoteFile,
)
from modeldepot.errors import InsufficientSpaceError, IntegrityError, UnknownJobIDException
from modeldepot.events import EventBus

log = logging.getLogger(__name__)
S = DownloadJobStatus


def _now() -> datetime:
    return datetime.now(UTC)


class DownloadQueueService(DownloadQueueServiceBase):
    """A queue of downloads run by ``max_parallel_dl`` worker threads (lower priority number first)."""

    def __init__(
        self,
        max_parallel_dl: int | None = None,
        config: DepotConfig | None = None,
        event_bus: EventBus | None = None,
        limits: DownloadLimits | None = None,
        *,
        preserve_partial_downloads: bool | None = None,
        policy: ConnectPolicy | None = None,
        **handlers: Any,
    ) -> None:
        """Build the queue (``start()`` runs it).

        Args:
            policy: where connections may go; default: from ``config`` (its endpoints and
                ``trusted_hosts`` trusted, ``allow_private_urls``), else only public addresses.
        """
        handlers.pop("requests_session", None)  # seed signature; this engine has its own HTTP client
        if max_parallel_dl is None:
            max_parallel_dl = config.max_parallel_downloads if config is not None else 5
        if max_parallel_dl < 1:
            raise ValueError("max_parallel_dl must be at least 1")
        self._max_parallel = max_parallel_dl
        self._config = config
        self.policy = policy or (ConnectPolicy.from_config(config) if config is not None else ConnectPolicy())
        self._bus = event_bus
        self.limits = limits or DownloadLimits()
        if preserve_partial_downloads is None:
            preserve_partial_downloads = bool(config and config.preserve_partial_downloads)
        self._preserve = preserve_partial_downloads
        self._handlers: dict[str, Any] = {}
        for name, fn in handlers.items():
            if name not in HANDLER_NAMES:
                raise TypeError(f"unexpected keyword argument {name!r}")
            if fn is not None:
                self._handlers[name] = fn
        self._queue: queue.PriorityQueue[tuple[int, int, int, DownloadJob | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._jobs: dict[int, AnyDownloadJob] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._slots = threading.Semaphore(self.limits.max_extra_connections)
        self._emitted: dict[int, tuple[float, int]] = {}
        self._speed_probe: dict[int, tuple[float, int]] = {}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            if self._threads:
                return
            for i in range(self._max_parallel):
                t = threading.Thread(target=self._worker, name=f"download-worker-{i}", daemon=True)
                self._threads.append(t)
                t.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        """Pause every unfinished job (partials are kept for a later run) and stop the workers."""
        self.pause_all_jobs()
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put((-(2**62), next(self._seq), 0, None))
        for t in threads:
            t.join()

    def __enter__(self) -> DownloadQueueService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- creating jobs -----------------------------------------------------------------------------
    def create_download_job(
        self,
        source: str,
        dest: Path | str,
        priority: int = 10,
        access_token: str | None = None,
        expected_sha256: str | None = None,
        **handlers: Any,
    ) -> DownloadJob:
        job = DownloadJob(
            source=str(source),
            dest=Path(dest),
            priority=priority,
            access_token=access_token,
            expected_sha256=expected_sha256.lower() if expected_sha256 else None,
        )
        job.set_handlers(**handlers)
        with self._lock:
            job.id = next(self._ids)
            self._jobs[job.id] = job
        return job

    def download(
        self,
        source: str,
        dest: Path | str,
        priority: int = 10,
        access_token: str | None = None,
        on_start: DownloadEventHandler | None = None,
        on_progress: DownloadEventHandler | None = None,
        on_complete: DownloadEventHandler | None = None,
        on_cancelled: DownloadEventHandler | None = None,
        on_error: DownloadExceptionHandler | None = None,
        expected_sha256: str | None = None,
        on_paused: DownloadEventHandler | None = None,
    ) -> DownloadJob:
        job = self.create_download_job(source, dest, priority, access_token, expected_sha256)
        self.submit_download_job(
            job,
            on_start=on_start,
            on_progress=on_progress,
            on_complete=on_complete,
            on_cancelled=on_cancelled,
            on_error=on_error,
            on_paused=on_paused,
        )
        return job

    def submit_download_job(self, job: DownloadJob, **handlers: Any) -> None:
        job.set_handlers(**handlers)
        with self._lock:
            if job.id < 0:
                job.id = next(self._ids)
            self._jobs[job.id] = job
            self._enqueue(job)

    def multifile_download(
        self,
        parts: list[RemoteFile],
        dest: Path | str,
        access_token: str | None = None,
        submit_job: bool = True,
        priority: int = 10,
        **handlers: Any,
    ) -> MultiFileDownloadJob:
        """Download ``parts`` into folder ``dest`` (paths relative to it; ``..`` raises UnsafePathError)."""
        dest = Path(dest)
        targets = [join_inside(dest, str(p.path)) for p in parts]  # validate all before creating anything
        mf = MultiFileDownloadJob(dest=dest, priority=priority)
        mf.set_handlers(**handlers)
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
        mf.total_bytes = sum(p.size or 0 for p in parts)
        with self._lock:
            mf.id = next(self._ids)
            self._jobs[mf.id] = mf
            for job in mf.download_parts:
                job.id = next(self._ids)
                self._jobs[job.id] = job
        if submit_job:
            self.submit_multifile_download(mf)
        return mf

    def submit_multifile_download(self, mf: MultiFileDownloadJob) -> None:
        known = sum(p.total_bytes for p in mf.download_parts)
        if known:
            probe = mf.dest
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            free = shutil.disk_usage(probe).free
            if known > free:
                exc = InsufficientSpaceError(
                    f"{mf.dest}: {len(mf.download_parts)} files need {known:,} bytes "
                    f"but only {free:,} are free on {probe}"
                )
                with self._lock:
                    for p in mf.download_parts:
                        p.status = S.CANCELLED
                        p._done.set()
                self._fail(mf, exc)
                return
        with self._lock:
            mf.status = S.ENQUEUED
            mf._done.clear()
            mf._cancel_requested.clear()
            mf._pause_requested.clear()
            for job in mf.download_parts:
                if job.status in (S.IDLE, S.PAUSED):
                    self._enqueue(job)

    def _enqueue(self, job: DownloadJob) -> None:
        # Caller holds the lock.
        job._cancel_requested.clear()
        job._pause_requested.clear()
        job._done.clear()
        job.status = S.ENQUEUED
        job.error = job.error_type = None
        job._exception = None
        self._queue.put((job.priority, next(self._seq), job.id, job))
        self._cond.notify_all()

    # -- inspecting -------------------------------------------------------------------------------
    def list_jobs(self) -> list[AnyDownloadJob]:
        with self._lock:
            return list(self._jobs.values())

    def id_to_job(self, id: int) -> AnyDownloadJob:
        with self._lock:
            try:
                return self._jobs[id]
            except KeyError:
                raise UnknownJobIDException(f"no download job with id {id}", job_id=id) from None

    def prune_jobs(self) -> None:
        """Forget finished jobs (completed, error, cancelled)."""
        with self._lock:
            for jid in [j for j, job in self._jobs.items() if job.in_terminal_state]:
                job = self._jobs[jid]
                parent = getattr(job, "_parent", None)
                if parent is not None and not parent.in_terminal_state:
                    continue
                del self._jobs[jid]
                self._emitted.pop(jid, None)

    def join(self) -> None:
        """Block until no job is enqueued or running."""
        with self._cond:
            while any(j.status in (S.ENQUEUED, S.RUNNING) for j in self._jobs.values()):
                self._cond.wait(0.5)

    def wait_for_job(self, job: DownloadJobBase, timeout: int | float = 0) -> DownloadJobBase:
        """Block until ``job`` is finished or paused; ``timeout`` 0 waits forever (else TimeoutError)."""
        deadline = time.monotonic() + timeout if timeout else None
        with self._cond:
            while not (job.in_terminal_state or job.paused or job.status == S.IDLE):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"download job {job.id} did not finish within {timeout} s")
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return job

    # -- controlling ------------------------------------------------------------------------------
    def start_job(self, job: DownloadJobBase) -> None:
        """(Re)start a paused or idle job; a resumed job continues from the bytes on disk."""
        if isinstance(job, MultiFileDownloadJob):
            self.submit_multifile_download(job)
            return
        if not isinstance(job, DownloadJob):
            raise TypeError(f"cannot start a {type(job).__name__}")
        with self._lock:
            if job.status in (S.IDLE, S.PAUSED):
                self._jobs[job.id] = job
                self._enqueue(job)

    def pause_job(self, job: DownloadJobBase) -> None:
        if isinstance(job, MultiFileDownloadJob):
            job._pause_requested.set()
            for p in job.download_parts:
                self.pause_job(p)
            return
        with self._lock:
            if job.status == S.RUNNING:
                job._pause_requested.set()
                return
            if job.status not in (S.ENQUEUED, S.IDLE):
                return
            job.status = S.PAUSED
        self._finished(job, "on_paused", "download_paused")

    def cancel_job(self, job: DownloadJobBase) -> None:
        if isinstance(job, MultiFileDownloadJob):
            job._cancel_requested.set()
            for p in job.download_parts:
                self.cancel_job(p)
            with self._lock:
                idle = job.status in (S.IDLE, S.PAUSED, S.ENQUEUED) and not any(p.running for p in job.download_parts)
                if idle:
                    job.status = S.CANCELLED
            if idle:
                self._finished(job, "on_cancelled", "download_cancelled")
            return
        with self._lock:
            if job.status == S.RUNNING:
                job._cancel_requested.set()
                return
            if job.in_terminal_state:
                return
            job.status = S.CANCELLED
        if isinstance(job, DownloadJob):
            self._discard_partial(job)
        self._finished(job, "on_cancelled", "download_cancelled")

    def start_all_jobs(self) -> None:
        for job in self._top_level():
            self.start_job(job)

    def pause_all_jobs(self) -> None:
        for job in self._top_level():
            if not job.in_terminal_state:
                self.pause_job(job)

    def cancel_all_jobs(self) -> None:
        for job in self._top_level():
            if not job.in_terminal_state:
                self.cancel_job(job)

    def _top_level(self) -> list[AnyDownloadJob]:
        return [j for j in self.list_jobs() if getattr(j, "_parent", None) is None]

    # -- running ----------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            _prio, _seq, _id, job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.status != S.ENQUEUED:
                    continue  # cancelled, paused or already picked up by another entry
                job.status = S.RUNNING
                job.job_started = _now()
                job.job_ended = None
                self._cond.notify_all()
            try:
                self._run(job)
            except Exception:  # never let a bug kill a worker thread
                log.exception("download job %s crashed", job.id)

    def _run(self, job: DownloadJob) -> None:
        explicit = job.access_token.get_secret_value() if job.access_token else None
        token = resolve_token(job.url, explicit=explicit, config=self._config)
        fetcher: FileFetcher

        def tick() -> None:
            job.bytes = fetcher.written
            self._progress(job)

        fetcher = FileFetcher(job, self.limits, token, self._slots, lambda: self._started(job), tick, self.policy)
        self._emitted.pop(job.id, None)
        self._speed_probe.pop(job.id, None)
        try:
            path = fetcher.run()
        except Stopped:
            if job._cancel_requested.is_set():
                with self._lock:
                    job.status = S.CANCELLED
                self._discard_partial(job)
                self._finished(job, "on_cancelled", "download_cancelled")
            else:
                with self._lock:
                    job.status = S.PAUSED
                    job.bytes = fetcher.written
                self._finished(job, "on_paused", "download_paused")
            return
        except Exception as exc:
            exc.args = tuple(redact_text(a, token) if isinstance(a, str) else a for a in exc.args)
            if not isinstance(exc, IntegrityError):
                self._discard_partial(job)
            self._fail(job, exc)
            return
        job.download_path = path
        job.bytes = job.total_bytes = fetcher.written if job.total_bytes == 0 else job.total_bytes
        self._progress(job, force=True)
        with self._lock:
            job.status = S.COMPLETED
        self._finished(job, "on_complete", "download_complete")

    def _discard_partial(self, job: DownloadJob) -> None:
        if self._preserve:
            return
        target = job.download_path or (None if job.dest.is_dir() else job.dest)
        if target is not None:
            remove_partial(target)

    def _fail(self, job: DownloadJobBase, exc: BaseException) -> None:
        with self._lock:
            job._exception = exc
            job.error_type = type(exc).__name__
            job.error = str(exc)
            job.status = S.ERROR
        self._finished(job, "on_error", "download_error", exc)

    # -- events -------------------------------------------------------------------------------------
    def _started(self, job: DownloadJob) -> None:
        self._emitted[job.id] = (time.monotonic(), job.bytes)
        self._speed_probe[job.id] = (time.monotonic(), job.bytes)
        self._dispatch(job, "on_start", "download_started")

    def _progress(self, job: DownloadJobBase, force: bool = False) -> None:
        now = time.monotonic()
        t0, b0 = self._speed_probe.get(job.id, (now, job.bytes))
        if now - t0 >= 0.25:
            inst = (job.bytes - b0) / (now - t0)
            job.speed = inst if job.speed == 0 else 0.5 * job.speed + 0.5 * inst
            self._speed_probe[job.id] = (now, job.bytes)
        last_t, last_b = self._emitted.get(job.id, (0.0, -1))
        if job.bytes == last_b:
            return
        step = job.total_bytes / 100 if job.total_bytes else 0
        if not force and (now - last_t < self.limits.progress_interval or job.bytes - last_b < step):
            return
        self._emitted[job.id] = (now, job.bytes)
        self._dispatch(job, "on_progress", "download_progress")

    def _finished(self, job: DownloadJobBase, handler: str, event: str, exc: BaseException | None = None) -> None:
        with self._lock:
            job.job_ended = _now()
            job._done.set()
            self._cond.notify_all()
        self._dispatch(job, handler, event, exc)

    def _dispatch(self, job: DownloadJobBase, handler: str, event: str, exc: BaseException | None = None) -> None:
        for fn in (job._handlers.get(handler), self._handlers.get(handler)):
            if fn is None:
                continue
            try:
                fn(job, exc) if handler == "on_error" else fn(job)
            except Exception:  # a broken callback must not break the download
                log.exception("download handler %s for job %s failed", handler, job.id)
        if self._bus is not None:
            self._bus.emit(event, **self.event_payload(job))
        parent = getattr(job, "_parent", None)
        if isinstance(parent, MultiFileDownloadJob) and isinstance(job, DownloadJob):
            self._update_parent(parent, job, handler, exc)

    @staticmethod
    def event_payload(job: DownloadJobBase) -> dict[str, Any]:
        """JSON-able, secret-free description of a job for events and the API."""
        data: dict[str, Any] = {
            "id": job.id,
            "source": str(getattr(job, "source", "")),
            "dest": str(job.dest),
            "download_path": str(job.download_path) if job.download_path else None,
            "status": job.status.value,
            "bytes": job.bytes,
            "total_bytes": job.total_bytes,
            "speed": round(job.speed, 1),
            "eta": None if job.eta is None else round(job.eta, 1),
        }
        if job.error_type:
            data["error_type"] = job.error_type
            data["error"] = job.error
        if isinstance(job, MultiFileDownloadJob):
            data["parts"] = [
                {
                    "id": p.id,
                    "source": p.source,
                    "download_path": str(p.download_path) if p.download_path else None,
                    "status": p.status.value,
                    "bytes": p.bytes,
                    "total_bytes": p.total_bytes,
                }
                for p in job.download_parts
            ]
        return data

    def _update_parent(
        self, mf: MultiFileDownloadJob, part: DownloadJob, handler: str, exc: BaseException | None
    ) -> None:
        emit: tuple[str, str] | None = None
        with self._lock:
            mf.refresh_totals()
            if mf.in_terminal_state:
                return
            parts = mf.download_parts
            if handler == "on_start" and mf.status != S.RUNNING:
                mf.status = S.RUNNING
                mf.job_started = mf.job_started or _now()
                self._emitted[mf.id] = (time.monotonic(), mf.bytes)
                emit = ("on_start", "download_started")
            elif handler == "on_error":
                mf.status = S.ERROR
                mf._exception = exc
                mf.error_type = type(exc).__name__ if exc else "DownloadError"
                mf.error = f"{part.source}: {exc}"
                emit = ("on_error", "download_error")
            elif all(p.complete for p in parts):
                mf.status = S.COMPLETED
                mf.download_path = mf.dest
                emit = ("on_complete", "download_complete")
            elif all(p.in_terminal_state for p in parts) and any(p.cancelled for p in parts):
                mf.status = S.CANCELLED
                emit = ("on_cancelled", "download_cancelled")
            elif handler == "on_paused" and all(p.paused or p.complete for p in parts):
                mf.status = S.PAUSED
                emit = ("on_paused", "download_paused")
        if emit is None:
            if handler == "on_progress":
                self._progress(mf)
            return
        if emit[0] == "on_error":
            for p in mf.download_parts:
                if not p.in_terminal_state:
                    self.cancel_job(p)
        if emit[0] in ("on_start",):
            self._dispatch(mf, *emit)
        else:
            if emit[0] == "on_complete":
                self._progress(mf, force=True)
            self._finished(mf, emit[0], emit[1], exc if emit[0] == "on_error" else None)
