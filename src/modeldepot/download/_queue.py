"""``DownloadQueueService``: worker threads over a priority queue of download jobs.

The queue keeps the jobs and takes the calls; ``_scheduler`` orders and runs them, ``_runner``
moves the bytes, ``_lifecycle`` changes their status, ``_events`` tells the handlers and the
EventBus, ``_build`` makes jobs. Handlers
run in the job's worker thread, except the single "enqueued" event, which runs in the thread that
enqueued the job.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from modeldepot.config import DepotConfig
from modeldepot.download._build import job_for_source, multifile_job, space_error, target_for
from modeldepot.download._events import ENQUEUED, Notifier, event_payload
from modeldepot.download._lifecycle import Lifecycle
from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._runner import JobRunner
from modeldepot.download._scheduler import Runnable, Scheduler
from modeldepot.download._session import check_session
from modeldepot.download.base import (
    HANDLER_NAMES,
    AnyDownloadJob,
    DownloadEventHandler,
    DownloadExceptionHandler,
    DownloadJob,
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobRemoteSource,
    DownloadJobStatus,
    DownloadLimits,
    DownloadQueueServiceBase,
    MultiFileDownloadJob,
    RemoteFile,
)
from modeldepot.errors import DownloadError, InvalidSourceError, UnknownJobIDException
from modeldepot.events import EventBus

log = logging.getLogger(__name__)
S = DownloadJobStatus


def _settled(job: DownloadJobBase) -> bool:
    """Idle, or paused or finished with every handler told (``_done`` is set after them).

    A handler that waits on its own job, while it is being told, finds it settled.
    """
    if job.status == S.IDLE:
        return True
    if not (job.in_terminal_state or job.paused):
        return False
    return job._done.is_set() or job._telling == threading.get_ident()


class DownloadQueueService(DownloadQueueServiceBase):
    """A queue of downloads run by ``max_parallel_dl`` worker threads (lower priority number first).

    Jobs run once the workers are up: ``start()`` starts them; ``join()`` and ``wait_for_job()``
    start a queue that was never started (waiting on it could never end otherwise), and
    ``autostart=True`` starts it at the first enqueued job. Until then jobs wait, so a batch
    enqueued before ``start()`` runs in priority order.
    """

    def __init__(
        self,
        max_parallel_dl: int | None = None,
        config: DepotConfig | None = None,
        event_bus: EventBus | None = None,
        limits: DownloadLimits | None = None,
        *,
        event_handlers: list[DownloadEventHandler] | None = None,
        requests_session: Any = None,
        quiet: bool = False,
        autostart: bool = False,
        preserve_partial_downloads: bool | None = None,
        policy: ConnectPolicy | None = None,
        **handlers: Any,
    ) -> None:
        """Build the queue.

        Args:
            event_handlers: seed 002's default handlers, ``handler(job)``, run for every job after
                the job's own handlers.
            requests_session: a ``requests.Session`` to stream URL jobs through instead of
                modeldepot's engine (seed 002, for tests that mount a fake server on the session;
                see ``_session`` for what changes). Anything without ``get()`` is refused.
            quiet: no log lines at INFO or above from this queue (they go to DEBUG instead).
            autostart: start the workers at the first enqueued job.
            policy: where connections may go; default: from ``config`` (its endpoints and
                ``trusted_hosts`` trusted, ``allow_private_urls``), else only public addresses.
            handlers: InvokeAI-4 style defaults: ``on_start``, ``on_progress``, ``on_complete``,
                ``on_error``, ``on_cancelled``, ``on_paused``.
        """
        if max_parallel_dl is None:
            max_parallel_dl = config.max_parallel_downloads if config is not None else 5
        if max_parallel_dl < 1:
            raise ValueError("max_parallel_dl must be at least 1")
        self.policy = policy or (ConnectPolicy.from_config(config) if config is not None else ConnectPolicy())
        self.limits = limits or DownloadLimits()
        session = check_session(requests_session) if requests_session is not None else None
        self._quiet = quiet
        self._autostart = autostart
        if preserve_partial_downloads is None:
            preserve_partial_downloads = bool(config and config.preserve_partial_downloads)
        queue_handlers: dict[str, Any] = {}
        for name, fn in handlers.items():
            if name not in HANDLER_NAMES:
                raise TypeError(f"unexpected keyword argument {name!r}")
            if fn is not None:
                queue_handlers[name] = fn
        defaults = list(event_handlers or [])
        for fn in defaults:
            if not callable(fn):
                raise TypeError(f"event_handlers must be callables, got {type(fn).__name__}")
        notifier = Notifier(queue_handlers, defaults, event_bus, self.limits.progress_interval, self._say)
        runner = JobRunner(self.limits, config, self.policy, session, quiet)
        self._ids = itertools.count(1)
        self._jobs: dict[int, AnyDownloadJob] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._life = Lifecycle(self._cond, notifier, runner, preserve_partial_downloads, self._say)
        self._scheduler = Scheduler(self._cond, max_parallel_dl, self._life.run, self._say)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, *args: Any, **kwargs: Any) -> None:
        self._scheduler.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        """Pause every unfinished job (partials are kept for a later run) and stop the workers."""
        self.pause_all_jobs()
        self._scheduler.stop()

    def __enter__(self) -> DownloadQueueService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ensure_workers(self) -> None:
        """Before waiting on enqueued jobs: start a never-started queue; a stopped one is an error."""
        with self._lock:
            if self._scheduler.running or not any(j.status == S.ENQUEUED for j in self._jobs.values()):
                return
            if self._scheduler.stopped:
                raise DownloadError("the download queue is stopped; call start() to run its enqueued jobs")
        self.start()

    # -- creating jobs -----------------------------------------------------------------------------
    def create_download_job(
        self,
        source: str | Path | Any,
        destdir: Path | str | None = None,
        filename: Path | str | None = None,
        start: bool = True,
        priority: int = 10,
        access_token: str | None = None,
        event_handlers: list[DownloadEventHandler] | None = None,
        *,
        dest: Path | str | None = None,
        expected_sha256: str | None = None,
        **handlers: Any,
    ) -> DownloadJobBase:
        """Build the job that fits ``source`` and submit it (seed 002); ``start=False`` leaves it IDLE.

        ``source``: an http(s) URL (a ``DownloadJobURL``), or a ``Path`` / an existing local path
        (a ``DownloadJobPath``, copied). The file lands at ``destdir/filename``, or inside
        ``destdir`` when it is an existing folder (or written with a trailing ``/``) under the
        name the source gives it; else ``destdir`` itself is the file. ``dest=`` is the older
        name of ``destdir``.

        Raises:
            InvalidSourceError: ``source`` is neither an http(s) URL nor an existing local path.
            UnsafePathError: ``filename`` would leave ``destdir``.
        """
        target = target_for(destdir, dest, filename)
        job = job_for_source(
            source,
            target,
            priority=priority,
            access_token=access_token,
            expected_sha256=expected_sha256,
            event_handlers=event_handlers,
        )
        return self.submit_download_job(job, start=start, **handlers)

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
        """Download the URL ``source`` to ``dest`` (a file, or a folder to name the file in) now."""
        job = DownloadJob(
            source=str(source),
            dest=dest,
            priority=priority,
            access_token=access_token,
            expected_sha256=expected_sha256.lower() if expected_sha256 else None,
        )
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

    def submit_download_job(self, job: DownloadJobBase, start: bool = True, **handlers: Any) -> DownloadJobBase:
        """Give ``job`` an id in this queue and, with ``start``, enqueue it (seed 002).

        A job already enqueued or running is left alone; a paused or finished one is enqueued again.

        Raises:
            InvalidSourceError: a bare ``DownloadJobBase`` (it names nothing the queue can fetch).
        """
        if isinstance(job, MultiFileDownloadJob):
            job.set_handlers(**handlers)
            with self._lock:
                self._register(job)
                for part in job.download_parts:
                    part._parent = job
                    self._register(part)
            if start:
                self.submit_multifile_download(job)
            return job
        if not isinstance(job, DownloadJobRemoteSource | DownloadJobPath):
            raise InvalidSourceError(
                f"a {type(job).__name__} names no source the queue can fetch; "
                "submit a DownloadJobURL (or DownloadJob), DownloadJobRemoteSource or DownloadJobPath"
            )
        job.set_handlers(**handlers)
        jobs: list[Runnable] = []
        due: list[DownloadJobBase] = []
        with self._lock:
            self._register(job)
            if start and job.status not in (S.ENQUEUED, S.RUNNING):
                self._ready(job, jobs, due)
        self._release(jobs, due)
        return job

    def multifile_download(
        self,
        parts: list[RemoteFile],
        dest: Path | str,
        access_token: str | None = None,
        submit_job: bool = True,
        priority: int = 10,
        event_handlers: list[DownloadEventHandler] | None = None,
        **handlers: Any,
    ) -> MultiFileDownloadJob:
        """Download ``parts`` into folder ``dest`` (paths relative to it; ``..`` raises UnsafePathError)."""
        mf = multifile_job(
            parts, Path(dest), priority=priority, access_token=access_token, event_handlers=event_handlers
        )
        mf.set_handlers(**handlers)
        with self._lock:
            self._register(mf)
            for job in mf.download_parts:
                self._register(job)
        if submit_job:
            self.submit_multifile_download(mf)
        return mf

    def submit_multifile_download(self, mf: MultiFileDownloadJob) -> None:
        exc = space_error(mf)
        if exc is not None:
            with self._lock:
                for p in mf.download_parts:
                    p.status = S.CANCELLED
                    p._done.set()
            self._life.fail(mf, exc)
            return
        jobs: list[Runnable] = []
        due: list[DownloadJobBase] = []
        with self._lock:
            mf.status = S.ENQUEUED
            mf._done.clear()
            mf._cancel_requested.clear()
            mf._pause_requested.clear()
            if not mf._announced:
                mf._announced = True
                due.append(mf)
            for job in mf.download_parts:
                if job.status in (S.IDLE, S.PAUSED):
                    self._ready(job, jobs, due)
        self._release(jobs, due)

    def _register(self, job: AnyDownloadJob) -> None:
        # Caller holds the lock. A job new to this queue gets a fresh id (it may come from another).
        if self._jobs.get(job.id) is not job:
            job.id = next(self._ids)
            self._jobs[job.id] = job

    def _ready(self, job: Runnable, jobs: list[Runnable], due: list[DownloadJobBase]) -> None:
        """Mark ``job`` enqueued (caller holds the lock) and add it to ``jobs`` for ``_release``;
        to ``due`` too when its "enqueued" event is due (seed 002: one per job, also across pauses)."""
        if job.in_terminal_state:
            job._announced = False  # run again: a new life, announced again
        job._cancel_requested.clear()
        job._pause_requested.clear()
        job._done.clear()
        job._handler_error = None
        job.status = S.ENQUEUED
        job.error = job.error_type = None
        job._exception = None
        jobs.append(job)
        if not job._announced:
            job._announced = True
            due.append(job)

    def _release(self, jobs: list[Runnable], due: list[DownloadJobBase]) -> None:
        """Tell the "enqueued" handlers, then put the jobs still enqueued on the heap in one go.

        In this order so no worker runs (and reports) a job before its "enqueued" event is told,
        and so jobs released together are taken in priority order.
        """
        for job in due:
            self._life.notifier.notify(job, ENQUEUED, None)
        with self._lock:
            for job in jobs:
                if job.status == S.ENQUEUED:
                    self._scheduler.push(job)
            if not jobs or not self._autostart or self._scheduler.running or self._scheduler.stopped:
                return
        self.start()

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
                parent = job._parent
                if parent is not None and not parent.in_terminal_state:
                    continue
                del self._jobs[jid]
                self._life.notifier.forget(jid)

    def join(self) -> None:
        """Block until every job is finished, paused or idle, and its handlers have run."""
        self._ensure_workers()
        with self._cond:
            while not all(_settled(j) for j in self._jobs.values()):
                self._cond.wait(0.5)

    def wait_for_job(self, job: DownloadJobBase, timeout: int | float = 0) -> DownloadJobBase:
        """Block until ``job`` is finished or paused; ``timeout`` 0 waits forever.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            UnknownJobIDException: ``job`` is unfinished and was not submitted to this queue.
        """
        if not job.in_terminal_state:
            self._known(job)
        if job.status == S.ENQUEUED:
            self._ensure_workers()
        deadline = time.monotonic() + timeout if timeout else None
        with self._cond:
            while not _settled(job):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"download job {job.id} did not finish within {timeout} s")
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return job

    def _known(self, job: DownloadJobBase) -> None:
        with self._lock:
            if self._jobs.get(job.id) is not job:
                raise UnknownJobIDException(
                    f"download job {job.id} was not submitted to this queue (or was pruned)", job_id=job.id
                )

    # -- controlling ------------------------------------------------------------------------------
    def start_job(self, job: DownloadJobBase) -> None:
        """(Re)start a paused or idle job; a resumed download continues from the bytes on disk."""
        self._known(job)
        if isinstance(job, MultiFileDownloadJob):
            self.submit_multifile_download(job)
            return
        jobs: list[Runnable] = []
        due: list[DownloadJobBase] = []
        with self._lock:
            self._start_locked(job, jobs, due)
        self._release(jobs, due)

    def _start_locked(self, job: DownloadJobBase, jobs: list[Runnable], due: list[DownloadJobBase]) -> None:
        if isinstance(job, DownloadJobRemoteSource | DownloadJobPath) and job.status in (S.IDLE, S.PAUSED):
            self._ready(job, jobs, due)

    def change_priority(self, job: DownloadJobBase, delta: int) -> None:
        """Add ``delta`` to ``job.priority`` (lower runs first); a waiting job moves in the queue."""
        self._known(job)
        with self._lock:
            job.priority += delta
            if isinstance(job, DownloadJobRemoteSource | DownloadJobPath) and job.status == S.ENQUEUED:
                self._scheduler.push(job)  # the older entry is now stale

    def pause_job(self, job: DownloadJobBase) -> None:
        """Pause ``job``; ``start_job`` continues it (a download from the bytes on disk)."""
        self._known(job)
        self._life.pause(job)

    def cancel_job(self, job: DownloadJobBase) -> None:
        """Cancel ``job`` and remove its partial files (unless kept by ``preserve_partial_downloads``)."""
        self._known(job)
        self._life.cancel(job)

    def start_all_jobs(self) -> None:
        """Enqueue every idle or paused job; jobs enqueued together start in priority order."""
        jobs: list[Runnable] = []
        due: list[DownloadJobBase] = []
        batch = self._top_level()
        with self._lock:
            for job in batch:
                self._start_locked(job, jobs, due)
        self._release(jobs, due)
        for job in batch:
            if isinstance(job, MultiFileDownloadJob) and job.status in (S.IDLE, S.PAUSED):
                self.submit_multifile_download(job)

    def pause_all_jobs(self) -> None:
        for job in self._top_level():
            if not job.in_terminal_state:
                self.pause_job(job)

    def cancel_all_jobs(self) -> None:
        for job in self._top_level():
            if not job.in_terminal_state:
                self.cancel_job(job)

    def _top_level(self) -> list[AnyDownloadJob]:
        return [j for j in self.list_jobs() if j._parent is None]

    def _say(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        log.log(logging.DEBUG if self._quiet and level >= logging.INFO else level, msg, *args, **kwargs)

    @staticmethod
    def event_payload(job: DownloadJobBase) -> dict[str, Any]:
        """JSON-able, secret-free description of a job for events and the API."""
        return event_payload(job)
