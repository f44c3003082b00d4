"""Download queue: fast (ranged, multi-connection, ``pwrite``), resumable and verified downloads.

Public API (DESIGN.md §2, seed 002 "The Download Queue"): ``DownloadQueueService``, the job
classes ``DownloadJobBase``, ``DownloadJobPath``, ``DownloadJobRemoteSource``, ``DownloadJobURL``
(also named ``DownloadJob``) and ``MultiFileDownloadJob``, ``DownloadJobStatus``,
``DownloadEventHandler``, ``RemoteFile``, ``DownloadLimits``, ``ConnectPolicy`` and
``download_file`` (one download in the foreground; the ``modeldepot download`` command draws its
bar around it).
"""

from __future__ import annotations

from modeldepot.download._foreground import download_file
from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._queue import DownloadQueueService
from modeldepot.download._redact import redact_url, strip_secrets
from modeldepot.download.base import (
    AnyDownloadJob,
    DownloadEventHandler,
    DownloadExceptionHandler,
    DownloadJob,
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobRemoteSource,
    DownloadJobStatus,
    DownloadJobURL,
    DownloadLimits,
    DownloadQueueServiceBase,
    MultiFileDownloadJob,
    RemoteFile,
)
from modeldepot.errors import UnknownJobIDException

__all__ = [
    "AnyDownloadJob",
    "ConnectPolicy",
    "DownloadEventHandler",
    "DownloadExceptionHandler",
    "DownloadJob",
    "DownloadJobBase",
    "DownloadJobPath",
    "DownloadJobRemoteSource",
    "DownloadJobStatus",
    "DownloadJobURL",
    "DownloadLimits",
    "DownloadQueueService",
    "DownloadQueueServiceBase",
    "MultiFileDownloadJob",
    "RemoteFile",
    "UnknownJobIDException",
    "download_file",
    "redact_url",
    "strip_secrets",
]
