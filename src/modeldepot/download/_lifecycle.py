"""How a job's status changes once it runs, pauses, is cancelled or fails, and who is told.

Seed 002's statuses: a job is ``running`` while its bytes move, ``paused`` when stopped with its
partial kept, and ends ``completed``, ``error`` or ``cancelled``. Every change is told to the
handlers (``_events.Notifier``); a part of a multi-file job also moves its parent
(``_build.parent_transition``). Partial files of a failed or cancelled remote job are removed
unless the job or the queue keeps them (``preserve_partial_downloads``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from modeldepot.download._build import parent_transition
from modeldepot.download._events import Notifier
from modeldepot.download._parts import remove_partial
from modeldepot.download._runner import JobRunner
from modeldepot.download._scheduler import Runnable
from modeldepot.download.base import (
    DownloadJob,
    DownloadJobBase,
    DownloadJobRemoteSource,
    DownloadJobStatus,
    MultiFileDownloadJob,
)
from modeldepot.errors import IntegrityError

S = DownloadJobStatus

__all__ = ["Lifecycle"]


def _now() -> datetime:
    return datetime.now(UTC)


class Lifecycle:
    """Status transitions of one queue's jobs; ``cond`` is the queue's lock."""

    def __init__(
        self,
        cond: threading.Condition,
        notifier: Notifier,
        runner: JobRunner,
        preserve: bool,
        say: Callable[..., None],
    ) -> None:
        self._cond = cond
        self.notifier = notifier
        notifier.on_handler_error = self.handler_failed
        self._runner = runner
        self._preserve = preserve
        self._say = say

    # -- running ------------------------------------------------------------------------------------
    def run(self, job: Runnable) -> None:
        """Run ``job`` in this (worker) thread and settle its status."""
        if job._dest_is_dir:
            job.dest.mkdir(parents=True, exist_ok=True)
        self.notifier.forget(job.id)
        out = self._runner.run(job, lambda: self.started(job), lambda: self.progress(job))
        if out.stopped:
            self._stopped(job, out.written)
            return
        if out.error is not None:
            if not isinstance(out.error, IntegrityError):  # the fetcher already chose what to keep
                self.discard_partial(job)
            self.fail(job, out.error)
            return
        job.download_path = out.path
        job.bytes = job.total_bytes = out.written if job.total_bytes == 0 else job.total_bytes
        self.progress(job, force=True)
        if job._handler_error is not None:  # a handler failed after the last byte: still an error
            self.fail(job, job._handler_error)
            return
        with self._cond:
            job.status = S.COMPLETED
        self.finished(job, "on_complete", "download_complete")

    def _stopped(self, job: Runnable, written: int) -> None:
        if job._handler_error is not None:
            self.discard_partial(job)
            self.fail(job, job._handler_error)
        elif job._cancel_requested.is_set():
            with self._cond:
                job.status = S.CANCELLED
            self.discard_partial(job)
            self.finished(job, "on_cancelled", "download_cancelled")
        else:
            with self._cond:
                job.status = S.PAUSED
                job.bytes = written
            self.finished(job, "on_paused", "download_paused")

    # -- control ------------------------------------------------------------------------------------
    def pause(self, job: DownloadJobBase) -> None:
        """A running job stops at its next buffer; a waiting one is paused at once."""
        if isinstance(job, MultiFileDownloadJob):
            job._pause_requested.set()
            for p in job.download_parts:
                self.pause(p)
            return
        with self._cond:
            if job.status == S.RUNNING:
                job._pause_requested.set()
                return
            if job.status not in (S.ENQUEUED, S.IDLE):
                return
            job.status = S.PAUSED
        self.finished(job, "on_paused", "download_paused")

    def cancel(self, job: DownloadJobBase) -> None:
        if isinstance(job, MultiFileDownloadJob):
            job._cancel_requested.set()
            for p in job.download_parts:
                self.cancel(p)
            with self._cond:
                idle = job.status in (S.IDLE, S.PAUSED, S.ENQUEUED) and not any(p.running for p in job.download_parts)
                if idle:
                    job.status = S.CANCELLED
            if idle:
                self.finished(job, "on_cancelled", "download_cancelled")
            return
        with self._cond:
            if job.status == S.RUNNING:
                job._cancel_requested.set()
                return
            if job.in_terminal_state:
                return
            job.status = S.CANCELLED
        self.discard_partial(job)
        self.finished(job, "on_cancelled", "download_cancelled")

    def discard_partial(self, job: DownloadJobBase) -> None:
        # Local copies clean up after themselves; only remote partials are resumable leftovers.
        if self._preserve or job.preserve_partial_downloads or not isinstance(job, DownloadJobRemoteSource):
            return
        target = job.download_path or (None if job.dest.is_dir() else job.dest)
        if target is not None:
            remove_partial(target)

    def fail(self, job: DownloadJobBase, exc: BaseException) -> None:
        with self._cond:
            job._exception = exc
            job.error_type = type(exc).__name__
            job.error = str(exc)
            job.status = S.ERROR
        self.finished(job, "on_error", "download_error", exc)

    def handler_failed(self, job: DownloadJobBase, exc: BaseException) -> None:
        """One of the job's ``event_handlers`` raised: the job ends in ERROR with that exception."""
        with self._cond:
            if job.in_terminal_state or job._handler_error is not None:
                return
            job._handler_error = exc
            if job.status == S.RUNNING:
                job._pause_requested.set()  # the worker sees the stop and fails the job
                return
        self.fail(job, exc)
        if isinstance(job, MultiFileDownloadJob):
            for p in job.download_parts:
                if not p.in_terminal_state:
                    self.cancel(p)

    # -- telling ------------------------------------------------------------------------------------
    def started(self, job: DownloadJobBase) -> None:
        self.notifier.started(job)
        self._after(job, "on_start")

    def progress(self, job: DownloadJobBase, force: bool = False) -> None:
        self.notifier.progress(job, force)
        self._after(job, "on_progress")

    def finished(self, job: DownloadJobBase, handler: str, event: str, exc: BaseException | None = None) -> None:
        """``job`` stopped (paused) or ended: tell the handlers, then wake the waiters.

        In that order so that ``join()`` or ``wait_for_job()`` return only once the handlers
        have seen the final status (a caller may read what they recorded right away).
        """
        with self._cond:
            if job.in_terminal_state:
                job.job_ended = _now()
        if job.in_terminal_state:
            self._say(logging.INFO, "download %s %s: %s", job.id, job.status.value, job.source)
        job._telling = threading.get_ident()  # a handler waiting on its own job must not deadlock
        try:
            self.notifier.notify(job, handler, event, exc)
            self._after(job, handler, exc)
        finally:
            with self._cond:
                job._telling = None
                job._done.set()
                self._cond.notify_all()

    def _after(self, job: DownloadJobBase, handler: str, exc: BaseException | None = None) -> None:
        parent = job._parent
        if isinstance(parent, MultiFileDownloadJob) and isinstance(job, DownloadJob):
            self._update_parent(parent, job, handler, exc)

    def _update_parent(
        self, mf: MultiFileDownloadJob, part: DownloadJob, handler: str, exc: BaseException | None
    ) -> None:
        with self._cond:
            emit = parent_transition(mf, part, handler, exc)
            if emit is not None and emit[0] == "on_start":
                mf.job_started = mf.job_started or _now()
                self.notifier.mark(mf)
        if emit is None:
            if handler == "on_progress":
                self.notifier.progress(mf)
            return
        if emit[0] == "on_error":
            for p in mf.download_parts:
                if not p.in_terminal_state:
                    self.cancel(p)
        if emit[0] == "on_start":
            self.notifier.notify(mf, *emit)
        else:
            if emit[0] == "on_complete":
                self.notifier.progress(mf, force=True)
            self.finished(mf, emit[0], emit[1], exc if emit[0] == "on_error" else None)
