"""The heap of enqueued jobs and the worker threads that pop it.

Workers pop under the queue's own lock (the ``Condition`` passed in), so a batch enqueued under
that lock (``start_all_jobs``) is always taken in priority order, never first-come. A job pushed
again (a new priority, a restart) gets a new entry; the older one is recognised as stale by its
number and skipped, as is an entry whose job was paused or cancelled while it waited.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from modeldepot.download.base import DownloadJobPath, DownloadJobRemoteSource, DownloadJobStatus

Runnable = DownloadJobRemoteSource | DownloadJobPath

__all__ = ["Runnable", "Scheduler"]


class Scheduler:
    """Lower ``priority`` first, then submission order; ``job_sequence`` numbers the jobs taken."""

    def __init__(
        self,
        cond: threading.Condition,
        workers: int,
        run: Callable[[Runnable], None],
        say: Callable[..., None],
    ) -> None:
        self._cond = cond
        self._workers = workers
        self._run = run
        self._say = say
        self._heap: list[tuple[int, int, Runnable]] = []
        self._entries = itertools.count()
        self._taken = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._exit = False
        #: ``stop()`` was called (and ``start()`` not since).
        self.stopped = False

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._exit = self.stopped = False
            for i in range(self._workers):
                t = threading.Thread(target=self._worker, name=f"download-worker-{i}", daemon=True)
                self._threads.append(t)
                t.start()

    def stop(self) -> None:
        """Let the workers finish their current job and end (pause running jobs first)."""
        with self._cond:
            threads, self._threads = self._threads, []
            self._exit = self.stopped = True
            self._cond.notify_all()
        for t in threads:
            t.join()

    def push(self, job: Runnable) -> None:
        """Queue ``job`` at its current priority (caller holds the lock)."""
        job._entry = next(self._entries)
        heapq.heappush(self._heap, (job.priority, job._entry, job))
        self._cond.notify_all()

    def _take(self) -> Runnable | None:
        # Caller holds the lock.
        while True:
            while not self._heap and not self._exit:
                self._cond.wait()
            if self._exit:
                return None
            _prio, entry, job = heapq.heappop(self._heap)
            if job._entry != entry or job.status != DownloadJobStatus.ENQUEUED:
                continue
            job.status = DownloadJobStatus.RUNNING
            job.job_sequence = next(self._taken)
            job.job_started = job.job_started or datetime.now(UTC)
            job.job_ended = None
            self._cond.notify_all()
            return job

    def _worker(self) -> None:
        while True:
            with self._cond:
                job = self._take()
            if job is None:
                return
            self._say(logging.INFO, "download %s started: %s -> %s", job.id, job.source, job.dest)
            try:
                self._run(job)
            except Exception:  # never let a bug kill a worker thread
                self._say(logging.ERROR, "download job %s crashed", job.id, exc_info=True)
