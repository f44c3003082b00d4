"""Digests taken while a download arrives: sha256 checked, blake3 and a tap handed on, one pass."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest

from modeldepot.download import DownloadJob, DownloadQueueService
from modeldepot.testing.fakehub import FakeHub

from .conftest import MiB, payload


class RecordingTap:
    """Checks it is fed the whole file once, in order, and keeps what it saw."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.next = 0
        self.seen = hashlib.sha256()
        self.restarts = 0

    def __call__(self, offset: int, piece: memoryview) -> None:
        if offset == 0 and self.next:
            self.restarts += 1
            self.next, self.seen = 0, hashlib.sha256()
        assert offset == self.next, (offset, self.next)
        self.seen.update(piece)
        self.next += len(piece)


def _run(queue: DownloadQueueService, url: str, dest: Path, taps: list[RecordingTap], sha: str | None) -> DownloadJob:
    def factory(part: Path) -> RecordingTap:
        taps.append(RecordingTap(part))
        return taps[-1]

    job = DownloadJob(source=url, dest=dest, expected_sha256=sha, compute_blake3=True)
    job._tap_factory = factory
    queue.submit_download_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    return job


@pytest.mark.parametrize("queue_name", ["queue", "single_queue"], ids=["connections", "one-stream"])
@pytest.mark.parametrize("with_sha", [True, False], ids=["sha256", "no-sha256"])
def test_blake3_sha256_and_tap_see_the_file_once(
    hub: FakeHub, tmp_path: Path, request: pytest.FixtureRequest, queue_name: str, with_sha: bool
) -> None:
    queue: DownloadQueueService = request.getfixturevalue(queue_name)
    data = payload(5 * MiB + 123)
    url = hub.add_file("d/model.safetensors", data)
    taps: list[RecordingTap] = []
    dest = tmp_path / "model.safetensors"
    job = _run(queue, url, dest, taps, hashlib.sha256(data).hexdigest() if with_sha else None)
    assert job.blake3 == blake3.blake3(data).hexdigest()
    assert job.sha256 == (hashlib.sha256(data).hexdigest() if with_sha else None)
    st = os.stat(dest)
    assert job.identity == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert len(taps) == 1 and taps[0].next == len(data) and taps[0].seen.digest() == hashlib.sha256(data).digest()
    assert taps[0].part.name == "model.safetensors.part"


def test_a_resumed_download_hashes_the_bytes_already_on_disk_too(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path
) -> None:
    from modeldepot.download._parts import PartState

    data = payload(6 * MiB)
    url = hub.add_file("r/model.bin", data)
    final = tmp_path / "model.bin"
    # What an earlier process left: the first 3 MiB on disk and its state.
    (tmp_path / "model.bin.part").write_bytes(data[: 3 * MiB] + bytes(3 * MiB))
    state = PartState(url=url, size=len(data))
    state.add(0, 3 * MiB)
    state.save(final)
    taps: list[RecordingTap] = []
    job = _run(queue, url, final, taps, hashlib.sha256(data).hexdigest())
    assert hub.stats.bytes_sent_total <= 3 * MiB + 512 * 1024  # only the rest was fetched
    assert job.blake3 == blake3.blake3(data).hexdigest() and job.sha256 == hashlib.sha256(data).hexdigest()
    assert taps[-1].seen.digest() == hashlib.sha256(data).digest()


def test_a_wrong_sha256_refetches_and_the_handed_on_digests_are_of_the_good_file(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("c/model.bin", data)
    hub.faults("/c/model.bin", corrupt_byte_at=MiB, times=1)
    taps: list[RecordingTap] = []
    job = _run(single_queue, url, tmp_path / "model.bin", taps, hashlib.sha256(data).hexdigest())
    assert job.blake3 == blake3.blake3(data).hexdigest()
    assert len(taps) == 2 and taps[-1].seen.digest() == hashlib.sha256(data).digest()  # a new tap per attempt


def test_no_digest_is_taken_unless_asked(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("n/model.bin", payload(2 * MiB))
    job = queue.download(url, tmp_path / "model.bin")
    queue.wait_for_job(job, timeout=60)
    assert job.complete and job.blake3 is None and job.sha256 is None and job.identity is None
