"""Running one job's transfer in its worker thread, whatever moves the bytes.

A ``DownloadJobPath`` is copied by ``LocalCopy``; a remote job goes through the engine
(``FileFetcher``) or, when the queue was given one, a ``requests`` session (``SessionFetcher``).
The queue only sees an ``Outcome``: a finished path, a stop (pause or cancel), or an error whose
text no longer holds the token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldepot._tokens import resolve_token
from modeldepot.config import DepotConfig
from modeldepot.download._fetch import FileFetcher, Stopped
from modeldepot.download._local import LocalCopy
from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._redact import redact_text
from modeldepot.download._scheduler import Runnable
from modeldepot.download._session import SessionFetcher
from modeldepot.download.base import DownloadJobPath, DownloadLimits

__all__ = ["JobRunner", "Outcome"]


@dataclass
class Outcome:
    """How a run ended: ``path`` when complete, ``stopped`` on pause/cancel, else ``error``."""

    path: Path | None = None
    stopped: bool = False
    error: Exception | None = None
    written: int = 0


class JobRunner:
    """Transfer settings shared by every job of one queue."""

    def __init__(
        self,
        limits: DownloadLimits,
        config: DepotConfig | None,
        policy: ConnectPolicy,
        session: Any,
        quiet: bool,
    ) -> None:
        self.limits = limits
        self.config = config
        self.policy = policy
        self.session = session
        self.quiet = quiet
        self._slots = threading.Semaphore(limits.max_extra_connections)

    def run(self, job: Runnable, started: Callable[[], None], progress: Callable[[], None]) -> Outcome:
        """Run ``job`` once; ``started`` when its size is known, ``progress`` as bytes arrive."""
        token: str | None = None
        worker: FileFetcher | SessionFetcher | LocalCopy

        def stop() -> bool:
            return job._cancel_requested.is_set() or job._pause_requested.is_set()

        def tick() -> None:
            if isinstance(worker, FileFetcher):
                job.bytes = worker.written
            progress()

        if isinstance(job, DownloadJobPath):
            worker = LocalCopy(job, stop, started, tick, fsync=self.limits.fsync)
        else:
            explicit = job.access_token.get_secret_value() if job.access_token else None
            token = resolve_token(job.url, explicit=explicit, config=self.config)
            if self.session is not None:
                worker = SessionFetcher(self.session, job, self.limits, token, stop, started, tick)
            else:
                worker = FileFetcher(job, self.limits, token, self._slots, started, tick, self.policy)
                worker.quiet = self.quiet
        try:
            path = worker.run()
        except Stopped:
            return Outcome(stopped=True, written=_written(worker, job))
        except Exception as exc:
            exc.args = tuple(redact_text(a, token) if isinstance(a, str) else a for a in exc.args)
            return Outcome(error=exc, written=_written(worker, job))
        return Outcome(path=path, written=_written(worker, job))


def _written(worker: FileFetcher | SessionFetcher | LocalCopy, job: Runnable) -> int:
    return job.bytes if isinstance(worker, LocalCopy) else worker.written
