from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from modeldepot.download import ConnectPolicy, DownloadLimits, DownloadQueueService
from modeldepot.testing.fakehub import FakeHub

MiB = 1024 * 1024

#: Small-file settings: anything >= 1 MiB is split into 512 KiB parts over up to 4 connections.
FAST_LIMITS = DownloadLimits(
    multi_connection_threshold=1 * MiB,
    part_size=512 * 1024,
    max_connections=4,
    fast_stream_bps=None,  # always use the connections, even on fast loopback
    buffer_size=64 * 1024,
    stall_timeout=2.0,  # generous: a loaded 2-core machine can pause a reader for a second
    max_retries=4,
    backoff_base=0.02,
    backoff_max=0.5,
    state_interval=64 * 1024,
    progress_interval=0.02,
)
#: One stream whatever the size.
SINGLE_LIMITS = DownloadLimits(
    multi_connection_threshold=1 << 40,
    part_size=1 << 40,
    max_connections=1,
    buffer_size=64 * 1024,
    stall_timeout=2.0,  # generous: a loaded 2-core machine can pause a reader for a second
    max_retries=4,
    backoff_base=0.02,
    backoff_max=0.5,
    state_interval=64 * 1024,
    progress_interval=0.02,
)


#: fakehub listens on 127.0.0.1; a queue without a config would refuse it (private address).
LOCAL = ConnectPolicy(allow_private=True)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size) if seed else os.urandom(size)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def queue() -> Iterator[DownloadQueueService]:
    q = DownloadQueueService(max_parallel_dl=3, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    yield q
    q.stop()


@pytest.fixture
def single_queue() -> Iterator[DownloadQueueService]:
    q = DownloadQueueService(max_parallel_dl=2, limits=SINGLE_LIMITS, policy=LOCAL)
    q.start()
    yield q
    q.stop()
