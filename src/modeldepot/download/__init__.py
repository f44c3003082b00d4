"""Download queue: fast (ranged, multi-connection, ``pwrite``), resumable and verified downloads.

Public API (DESIGN.md §2): ``DownloadQueueService``, ``DownloadJob``, ``DownloadJobStatus``,
``MultiFileDownloadJob``, ``RemoteFile``, ``DownloadLimits``, ``ConnectPolicy`` and ``download_file``
(one download in the foreground; the ``modeldepot download`` command draws its bar around it).
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
    DownloadJobStatus,
    DownloadLimits,
    DownloadQueueServiceBase,
    MultiFileDownloadJob,
    RemoteFile,
)

__all__ = [
    "AnyDownloadJob",
    "ConnectPolicy",
    "DownloadEventHandler",
    "DownloadExceptionHandler",
    "DownloadJob",
    "DownloadJobBase",
    "DownloadJobStatus",
    "DownloadLimits",
    "DownloadQueueService",
    "DownloadQueueServiceBase",
    "MultiFileDownloadJob",
    "RemoteFile",
    "download_file",
    "redact_url",
    "strip_secrets",
]
