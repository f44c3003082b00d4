"""Download jobs, their statuses and limits, and the queue's abstract interface (DESIGN.md §2).

The job classes follow seed 002's hierarchy::

    DownloadJobBase                 id, priority, source, destination, status, event_handlers, ...
    ├── DownloadJobPath             a local file or folder copied (or moved) to the destination
    ├── DownloadJobRemoteSource     bytes, total_bytes, access_token: anything fetched over HTTP
    │   └── DownloadJobURL          an http(s) URL, checked when the job is built (= ``DownloadJob``)
    └── MultiFileDownloadJob        several URLs into one folder, with one total

Jobs are pydantic models so the API can serve them as JSON; the runtime plumbing (handlers, the
real URL with any query token, the access token, the exception) is excluded from dumps and reprs.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from modeldepot.download._redact import redact_url
from modeldepot.errors import InvalidSourceError

MiB = 1024 * 1024
_SEPARATORS = tuple(s for s in (os.sep, os.altsep) if s)


class DownloadJobStatus(StrEnum):
    """State of a download job; the values are the seed's names, exactly."""

    IDLE = "idle"  # created, not submitted
    ENQUEUED = "enqueued"  # waiting in the queue
    RUNNING = "running"
    PAUSED = "paused"  # stopped; partial file and part state kept for a later start_job
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR, DownloadJobStatus.CANCELLED})


@dataclass(frozen=True)
class DownloadLimits:
    """Tuning knobs of the transfer engine (all sizes in bytes, times in seconds)."""

    #: Files at least this large are fetched over several Range connections.
    multi_connection_threshold: int = 64 * MiB
    #: Size of each Range request when a file is split (work is pulled by the connections).
    part_size: int = 32 * MiB
    #: Connections per file.
    max_connections: int = 8
    #: If one connection alone already moves this many bytes/s during its first
    #: ``ramp_probe_seconds``, no more are opened (the CPU, not the link, is the limit: loopback,
    #: LAN). Otherwise connections are doubled after each such window while the total rate grows
    #: by ``ramp_gain`` (a doubling that does not pay is taken back). None: always open
    #: ``max_connections``.
    fast_stream_bps: int | None = 400 * MiB
    ramp_probe_seconds: float = 1.0
    ramp_gain: float = 1.3
    #: Extra connections (beyond one per running job) shared by the whole queue.
    max_extra_connections: int = 16
    #: Receive buffer per connection; data is written with one pwrite per filled buffer.
    buffer_size: int = 1 * MiB
    #: Fixed kernel receive buffer per connection (None: kernel autotuning, the right choice for
    #: real networks). See ``clamp_rcvbuf`` for the loopback/LAN case.
    socket_rcvbuf: int | None = None
    #: When more than this many bytes wait in a socket's kernel queue (the disk/CPU, not the
    #: network, is the bottleneck), its receive buffer is clamped to this size. A full buffer adds
    #: nothing to speed then, but is lost on kill -9 or pause (autotuning grows it to tcp_rmem max,
    #: often 32 MiB per connection). 0 disables.
    clamp_rcvbuf: int = 512 * 1024
    #: No byte for this long on a connection: the part is retried.
    stall_timeout: float = 30.0
    #: Attempts per request after a retryable failure (reset whenever bytes arrive).
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: Part state (``<name>.part.json``) is rewritten after this many new bytes (in place: one
    #: page write, ~30 us with the JSON, in the connection's thread), and at least every
    #: ``state_save_seconds`` while bytes arrive. A kill -9 refetches up to this much again: 4 MiB
    #: keeps ten kills in a 1 GiB file near 1 % extra (bench_transfer.py), at 11 ms of saving per
    #: GiB (1 MiB: 20-28 ms).
    state_interval: int = 4 * MiB
    state_save_seconds: float = 1.0
    #: Progress events: at most one per this many seconds (and about every 1 % of bytes).
    progress_interval: float = 0.1
    #: fsync the finished file before the rename that publishes it (DESIGN.md §4). Only turn off
    #: for benchmarks against tools that do not sync (curl).
    fsync: bool = True
    #: With ``fsync``, each connection starts writeback of every this many bytes it wrote
    #: (``sync_file_range``), so the disk writes while the network reads and the final fsync is
    #: short. 0: leave it all to the final fsync.
    writeback_every: int = 16 * MiB
    #: Reserve the whole ``.part`` file up front (``posix_fallocate``): a full disk fails at the
    #: start, not at 90 %, and several connections' ranges do not fragment the file.
    preallocate: bool = True
    #: Restarts from zero when the remote changed under us (ETag/size), before giving up.
    max_restarts: int = 2

    def __post_init__(self) -> None:
        if self.part_size < 1 or self.buffer_size < 4096 or self.max_connections < 1:
            raise ValueError("DownloadLimits: part_size, buffer_size (>=4096) and max_connections must be positive")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a multi-file download: ``path`` is relative to the job's destination folder."""

    url: str
    path: Path | str
    size: int | None = None
    sha256: str | None = None

    def __repr__(self) -> str:
        return f"RemoteFile(url={redact_url(self.url)!r}, path={str(self.path)!r}, size={self.size})"


#: Seed 002's handler: called with the job at every status change (and about every 1 % of a
#: running download); it looks at ``job.status``.
DownloadEventHandler = Callable[["DownloadJobBase"], None]
DownloadExceptionHandler = Callable[["DownloadJobBase", "BaseException | None"], None]
HANDLER_NAMES = ("on_start", "on_progress", "on_complete", "on_error", "on_cancelled", "on_paused")


class DownloadJobBase(BaseModel):
    """Fields and status helpers shared by every job (seed 002's ``DownloadJobBase``).

    ``destination`` (also accepted, and readable, as ``dest``) is a file path, or an existing
    folder to put the file in under the name the source gives it. ``event_handlers`` are
    ``handler(job)`` callables run in the job's thread whenever its status changes; they are
    never dumped. ``job_sequence`` numbers the jobs in the order workers took them off the queue.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=False)

    id: int = -1
    source: str | Path = ""
    dest: Path
    download_path: Path | None = None
    priority: int = 10
    status: DownloadJobStatus = DownloadJobStatus.IDLE
    event_handlers: list[DownloadEventHandler] = Field(default_factory=list, exclude=True, repr=False)
    bytes: int = 0
    total_bytes: int = 0
    speed: float = 0.0  # bytes per second, smoothed
    error_type: str | None = None
    error: str | None = None
    job_started: datetime | None = None
    job_ended: datetime | None = None
    job_sequence: int | None = None
    #: Keep partial files after an error or a cancel (the queue's own setting also keeps them).
    preserve_partial_downloads: bool = False

    _handlers: dict[str, Any] = PrivateAttr(default_factory=dict)
    _exception: BaseException | None = PrivateAttr(default=None)
    _cancel_requested: threading.Event = PrivateAttr(default_factory=threading.Event)
    _pause_requested: threading.Event = PrivateAttr(default_factory=threading.Event)
    _done: threading.Event = PrivateAttr(default_factory=threading.Event)
    # Set when one of ``event_handlers`` raised: the job stops and ends in ERROR with it.
    _handler_error: BaseException | None = PrivateAttr(default=None)
    _announced: bool = PrivateAttr(default=False)  # the single "enqueued" event was sent
    _telling: int | None = PrivateAttr(default=None)  # thread running its final handlers, if any
    _entry: int = PrivateAttr(default=-1)  # the queue entry that may run this job (older ones are stale)
    _parent: Any = PrivateAttr(default=None)
    # ``destination="models/"``: a folder even before it exists (``Path`` drops the slash).
    _dest_is_dir: bool = PrivateAttr(default=False)

    def __init__(self, **data: Any) -> None:
        if "destination" in data:
            if data.get("dest") is not None:
                raise TypeError("give either destination= or dest=, not both")
            data["dest"] = data.pop("destination")
        raw = data.get("dest")
        super().__init__(**data)
        self._dest_is_dir = isinstance(raw, str) and raw.endswith(_SEPARATORS)

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def destination(self) -> Path:
        """Seed 002's name of ``dest``."""
        return self.dest

    @destination.setter
    def destination(self, value: Path | str) -> None:
        self.dest = Path(value)

    # -- event handlers (seed 002) -------------------------------------------------------------
    def add_event_handler(self, handler: DownloadEventHandler) -> None:
        """Add ``handler(job)`` after the handlers already attached (pause the job first if it runs)."""
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, got {type(handler).__name__}")
        self.event_handlers.append(handler)

    def clear_event_handlers(self) -> None:
        """Remove every handler attached to this job (the queue's default handlers still run)."""
        self.event_handlers.clear()

    # -- status helpers (seed names) ------------------------------------------------------------
    @property
    def in_terminal_state(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def complete(self) -> bool:
        return self.status == DownloadJobStatus.COMPLETED

    @property
    def succeeded(self) -> bool:
        return self.complete

    @property
    def running(self) -> bool:
        return self.status == DownloadJobStatus.RUNNING

    @property
    def waiting(self) -> bool:
        return self.status in (DownloadJobStatus.IDLE, DownloadJobStatus.ENQUEUED)

    @property
    def errored(self) -> bool:
        return self.status == DownloadJobStatus.ERROR

    @property
    def cancelled(self) -> bool:
        return self.status == DownloadJobStatus.CANCELLED

    @property
    def paused(self) -> bool:
        return self.status == DownloadJobStatus.PAUSED

    @property
    def exception(self) -> BaseException | None:
        """The exception behind ``status == error`` (not serialised)."""
        return self._exception

    @property
    def eta(self) -> float | None:
        if self.speed <= 0 or self.total_bytes <= 0:
            return None
        return max(0.0, (self.total_bytes - self.bytes) / self.speed)

    def cancel(self) -> None:
        """Ask the worker to stop and delete the partial file (the queue's ``cancel_job`` also works)."""
        self._cancel_requested.set()

    def pause(self) -> None:
        self._pause_requested.set()

    def set_handlers(self, **handlers: Any) -> None:
        for name, fn in handlers.items():
            if name not in HANDLER_NAMES:
                raise TypeError(f"unknown download handler {name!r}; expected one of {', '.join(HANDLER_NAMES)}")
            if fn is not None:
                self._handlers[name] = fn


class DownloadJobPath(DownloadJobBase):
    """A local file or folder brought to ``destination`` through the same queue and events.

    The source is **copied** (it stays where it is) unless ``move=True``: then it is renamed when
    source and destination share a file system, else copied and the source removed afterwards.
    The copy is written under a temporary name beside the destination and renamed when complete;
    a paused copy starts again from the beginning.
    """

    source: Path
    move: bool = False

    def __init__(self, **data: Any) -> None:
        if "source" in data:
            data["source"] = Path(data["source"]).expanduser()
        super().__init__(**data)


class DownloadJobRemoteSource(DownloadJobBase):
    """Anything fetched from a remote: adds ``bytes``/``total_bytes`` progress and ``access_token``.

    ``source`` is shown and dumped with secrets (``?token=``, signatures, passwords) replaced by
    ``***``; the real URL is kept privately for the fetch (``url``). ``access_token`` is a
    ``SecretStr``: never dumped, logged or shown.
    """

    source: str
    access_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    content_type: str | None = None
    expected_sha256: str | None = None
    #: sha256 of the finished file when it was computed (expected or streamed).
    sha256: str | None = None
    #: Also take the blake3 of the file while it arrives (``blake3``), so a content store can
    #: take the file without reading it again (``identity`` says which file version it is of).
    compute_blake3: bool = False
    blake3: str | None = None
    connections: int = 0

    _url: str = PrivateAttr(default="")
    #: ``TapFactory`` (``_digests``): a tap fed the file's bytes in the same pass as the digests.
    _tap_factory: Any = PrivateAttr(default=None)
    _identity: tuple[int, int, int] | None = PrivateAttr(default=None)

    @property
    def identity(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime_ns) of the finished file when ``blake3`` was taken; a file whose
        ``stat`` no longer matches was changed since, and its ``blake3`` does not apply."""
        return self._identity

    def __init__(self, **data: Any) -> None:
        raw = str(data.get("source", ""))
        data["source"] = redact_url(raw)
        token = data.get("access_token")
        if isinstance(token, str):
            data["access_token"] = SecretStr(token)
        super().__init__(**data)
        self._url = raw

    @property
    def url(self) -> str:
        """The real URL (may hold a query token): use it to fetch, never to show."""
        return self._url or self.source


class DownloadJobURL(DownloadJobRemoteSource):
    """One http(s) URL to one file (or into a folder, named by Content-Disposition or the URL).

    Raises:
        InvalidSourceError: when ``source`` is not an http or https URL with a host.
    """

    def __init__(self, **data: Any) -> None:
        raw = str(data.get("source", ""))
        try:
            parts = urlsplit(raw)
            ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            raise InvalidSourceError(f"{redact_url(raw) or '(empty)'}: not an http(s) URL a download job can fetch")
        super().__init__(**data)


#: The URL job under the name the installer, the CLI and earlier releases use.
DownloadJob = DownloadJobURL


class MultiFileDownloadJob(DownloadJobBase):
    """Several files into one folder, with one total; ``download_parts`` are ordinary jobs."""

    download_parts: list[DownloadJob] = Field(default_factory=list)

    def refresh_totals(self) -> None:
        self.source = f"{len(self.download_parts)} files"
        self.bytes = sum(p.bytes for p in self.download_parts)
        self.total_bytes = sum(p.total_bytes for p in self.download_parts)
        self.speed = sum(p.speed for p in self.download_parts if p.running)


AnyDownloadJob = DownloadJobRemoteSource | DownloadJobPath | MultiFileDownloadJob


class DownloadQueueServiceBase(ABC):
    """The seed's download queue interface (seed 002's names, plus InvokeAI 4's ``download``)."""

    @abstractmethod
    def start(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def stop(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
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
    ) -> DownloadJob: ...

    @abstractmethod
    def multifile_download(
        self, parts: list[RemoteFile], dest: Path | str, access_token: str | None = None, **kwargs: Any
    ) -> MultiFileDownloadJob: ...

    @abstractmethod
    def submit_download_job(self, job: DownloadJobBase, start: bool = True, **handlers: Any) -> DownloadJobBase: ...

    @abstractmethod
    def create_download_job(
        self,
        source: str | Path,
        destdir: Path | str | None = None,
        filename: Path | str | None = None,
        start: bool = True,
        priority: int = 10,
        access_token: str | None = None,
        event_handlers: list[DownloadEventHandler] | None = None,
        **kwargs: Any,
    ) -> DownloadJobBase: ...

    @abstractmethod
    def list_jobs(self) -> list[AnyDownloadJob]: ...

    @abstractmethod
    def id_to_job(self, id: int) -> AnyDownloadJob: ...

    @abstractmethod
    def start_all_jobs(self) -> None: ...

    @abstractmethod
    def pause_all_jobs(self) -> None: ...

    @abstractmethod
    def cancel_all_jobs(self) -> None: ...

    @abstractmethod
    def prune_jobs(self) -> None: ...

    @abstractmethod
    def start_job(self, job: DownloadJobBase) -> None: ...

    @abstractmethod
    def pause_job(self, job: DownloadJobBase) -> None: ...

    @abstractmethod
    def cancel_job(self, job: DownloadJobBase) -> None: ...

    @abstractmethod
    def change_priority(self, job: DownloadJobBase, delta: int) -> None: ...

    @abstractmethod
    def join(self) -> None: ...

    @abstractmethod
    def wait_for_job(self, job: DownloadJobBase, timeout: int | float = 0) -> DownloadJobBase: ...
