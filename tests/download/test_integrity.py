"""Integrity: a cut body, a failed write or an unexpected status never ends COMPLETED.

Bodies without Content-Length end only cleanly; write errors are final, never retried as network
errors; every request's status is checked; a partial file survives an error only if it can resume.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.download import DownloadJob, DownloadJobBase, DownloadQueueService
from modeldepot.errors import DownloadError, InsufficientSpaceError, RemoteNotFoundError
from modeldepot.testing.fakehub import FakeHub

from .conftest import LOCAL, SINGLE_LIMITS, MiB, payload


@pytest.fixture
def keeping_queue() -> Iterator[DownloadQueueService]:
    """One stream, and partial files kept on error: what is left is what the fetcher chose to keep."""
    q = DownloadQueueService(max_parallel_dl=1, limits=SINGLE_LIMITS, preserve_partial_downloads=True, policy=LOCAL)
    q.start()
    yield q
    q.stop()


def _run(q: DownloadQueueService, url: str, dest: Path) -> DownloadJob:
    job = q.download(url, dest)
    q.wait_for_job(job, timeout=60)
    return job


def _assert_failed_cleanly(job: DownloadJob, url: str, folder: Path) -> str:
    """ERROR, a message naming the URL, and nothing on disk: no file, no part, no part state."""
    assert job.errored and not job.complete, (job.status, job.error)
    assert isinstance(job.exception, DownloadError)
    message = job.error or ""
    assert url in message and "\n" not in message, message
    assert sorted(os.listdir(folder)) == [], message
    return message


# -- bodies without Content-Length ---------------------------------------------------------------


def test_chunked_body_cut_mid_data_is_an_error(
    hub: FakeHub, keeping_queue: DownloadQueueService, tmp_path: Path
) -> None:
    url = hub.add_file("chunk/cut.bin", payload(3 * MiB), send_content_length=False, chunked=True)
    hub.faults("/chunk/cut.bin", drop_after_bytes=MiB)
    job = _run(keeping_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert f"after {MiB:,} bytes" in message
    assert len(hub.stats.requests_for("/chunk/cut.bin")) == 1  # a stream without ranges is not resumed


def test_chunked_body_without_last_chunk_is_an_error(
    hub: FakeHub, keeping_queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(2 * MiB)
    url = hub.add_file("chunk/noend.bin", data, send_content_length=False, chunked=True)
    hub.faults("/chunk/noend.bin", omit_last_chunk=True)
    job = _run(keeping_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert f"after {len(data):,} bytes" in message  # every byte came, but the end was never seen


def test_close_delimited_body_cut_by_a_reset_is_an_error(
    hub: FakeHub, keeping_queue: DownloadQueueService, tmp_path: Path
) -> None:
    url = hub.add_file("nolen/reset.bin", payload(3 * MiB), send_content_length=False)
    hub.faults("/nolen/reset.bin", drop_after_bytes=MiB, drop_with_reset=True)
    job = _run(keeping_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert re.search(r"(after|at byte) [\d,]+", message), message


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_without_length_that_end_cleanly_complete(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, chunked: bool
) -> None:
    data = payload(2 * MiB + 123)
    url = hub.add_file("nolen/ok.bin", data, send_content_length=False, chunked=chunked)
    job = _run(single_queue, url, tmp_path)
    assert job.complete, job.error
    assert (tmp_path / "ok.bin").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["ok.bin"]


# -- bodies shorter than their Content-Length ---------------------------------------------------


def test_short_body_from_a_server_ignoring_range_starts_over(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("nr/short.bin", data)
    hub.faults("/nr/short.bin", ignore_range=True)
    hub.faults("/nr/short.bin", ignore_range=True, drop_after_bytes=MiB, times=1)
    job = _run(single_queue, url, tmp_path)
    assert job.complete, job.error
    assert (tmp_path / "short.bin").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["short.bin"]
    assert [r.status for r in hub.stats.requests_for("/nr/short.bin")] == [200, 200]  # cut, then whole


def test_short_bodies_every_time_from_a_server_ignoring_range_end_in_error(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    url = hub.add_file("nr/always.bin", payload(3 * MiB))
    hub.faults("/nr/always.bin", ignore_range=True, drop_after_bytes=MiB)
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert f"after {MiB:,} of {3 * MiB:,} bytes" in message and "does not support ranges" in message
    assert len(hub.stats.requests_for("/nr/always.bin")) == SINGLE_LIMITS.max_restarts + 1


# -- write errors ---------------------------------------------------------------------------------


def _fail_writes_after(monkeypatch: pytest.MonkeyPatch, nbytes: int, err: int) -> list[int]:
    """``os.pwrite`` of the ``.part`` file fails with ``err`` once ``nbytes`` are written to it (the
    in-place saves of the part state go through ``os.pwrite`` too; they are not counted)."""
    real = os.pwrite
    written = [0]

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            return real(fd, data, offset)
        if written[0] >= nbytes:
            raise OSError(err, os.strerror(err))
        n = real(fd, data, offset)
        written[0] += n
        return n

    monkeypatch.setattr("modeldepot.download._transfer.os.pwrite", pwrite)
    return written


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_is_insufficient_space_and_not_retried(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("full/model.bin", data)
    written = _fail_writes_after(monkeypatch, MiB, err)
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert isinstance(job.exception, InsufficientSpaceError) and job.error_type == "InsufficientSpaceError"
    assert re.search(
        rf"no space left on {re.escape(str(tmp_path))}: need {len(data) - written[0]} bytes, have \d+$", message
    )
    assert len(hub.stats.requests_for("/full/model.bin")) == 1  # no retry: the disk, not the network


def test_disk_full_keeps_a_resumable_partial_when_asked(
    hub: FakeHub, keeping_queue: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("full/keep.bin", data)  # ranges and an ETag: the part file can resume
    written = _fail_writes_after(monkeypatch, MiB, errno.ENOSPC)
    job = _run(keeping_queue, url, tmp_path / "keep.bin")
    assert isinstance(job.exception, InsufficientSpaceError), job.error
    assert sorted(os.listdir(tmp_path)) == ["keep.bin.part", "keep.bin.part.json"]
    monkeypatch.undo()  # space freed
    hub.stats.reset()
    again = _run(keeping_queue, url, tmp_path / "keep.bin")
    assert again.complete, again.error
    assert (tmp_path / "keep.bin").read_bytes() == data
    assert hub.stats.bytes_sent_total == len(data) - written[0]  # state saved at the error: nothing refetched


def test_disk_full_on_a_stream_of_unknown_length(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub.add_file("full/stream.bin", payload(3 * MiB), send_content_length=False, chunked=True)
    _fail_writes_after(monkeypatch, MiB, errno.ENOSPC)
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert isinstance(job.exception, InsufficientSpaceError)
    assert re.search(rf"no space left on {re.escape(str(tmp_path))}: need more space, have \d+$", message)
    assert len(hub.stats.requests_for("/full/stream.bin")) == 1


def test_other_write_errors_are_download_errors_and_not_retried(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub.add_file("eio/model.bin", payload(3 * MiB))
    _fail_writes_after(monkeypatch, MiB, errno.EIO)
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert not isinstance(job.exception, InsufficientSpaceError)
    assert "cannot write" in message and os.strerror(errno.EIO) in message
    assert len(hub.stats.requests_for("/eio/model.bin")) == 1


# -- statuses -------------------------------------------------------------------------------------


def test_416_probe_then_404_is_not_found(hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("st/gone.bin", payload(MiB))
    hub.faults("/st/gone.bin", status=404, status_times=0)
    hub.faults("/st/gone.bin", status=416, times=1)  # newest rule first, used once
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert isinstance(job.exception, RemoteNotFoundError) and "HTTP 404" in message
    assert [r.status for r in hub.stats.requests_for("/st/gone.bin")] == [416, 404]


def test_416_probe_then_500_retries_then_fails(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    url = hub.add_file("st/broken.bin", payload(MiB))
    hub.faults("/st/broken.bin", status=500, status_times=0)
    hub.faults("/st/broken.bin", status=416, times=1)
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert "HTTP 500" in message
    attempts = SINGLE_LIMITS.max_retries + 1
    assert [r.status for r in hub.stats.requests_for("/st/broken.bin")] == [416] + [500] * attempts


def test_416_probe_on_an_empty_file_fetches_it_plainly(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    url = hub.add_file("st/empty.bin", b"")
    job = _run(single_queue, url, tmp_path)
    assert job.complete, job.error
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert [r.status for r in hub.stats.requests_for("/st/empty.bin")] == [416, 200]


@pytest.mark.parametrize("status", [204, 302])
def test_unexpected_status_on_the_first_request(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, status: int
) -> None:
    url = hub.add_file("st/odd.bin", payload(MiB))
    hub.faults("/st/odd.bin", status=status, status_times=0)  # a 302 without Location
    job = _run(single_queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert f"HTTP {status}" in message


@pytest.mark.parametrize("status", [404, 204])
def test_unexpected_status_on_a_later_ranged_request(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path, status: int
) -> None:
    url = hub.add_file("st/parts.bin", payload(4 * MiB))
    hub.faults("/st/parts.bin", status=status, status_times=0)
    hub.faults("/st/parts.bin", speed_limit_bps=1 << 40, times=1)  # a harmless rule: the first request is served
    job = _run(queue, url, tmp_path)
    message = _assert_failed_cleanly(job, url, tmp_path)
    assert f"HTTP {status}" in message


def test_resume_beyond_a_shrunk_remote_starts_over(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    old, new = payload(3 * MiB, seed=1), payload(MiB, seed=2)
    url = hub.add_file("shrink/m.bin", old, etag="v1")  # a server whose ETag does not follow the content
    hub.faults("/shrink/*", speed_limit_bps=2 * MiB)

    paused = threading.Event()

    def on_progress(job: DownloadJobBase) -> None:
        if job.bytes >= 2 * MiB and not paused.is_set():
            paused.set()
            single_queue.pause_job(job)

    job = single_queue.download(url, tmp_path / "m.bin", on_progress=on_progress)
    single_queue.wait_for_job(job, timeout=60)
    assert job.paused, job.status
    hub.clear_faults()
    hub.replace_file("shrink/m.bin", new, etag="v1")
    single_queue.start_job(job)
    single_queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "m.bin").read_bytes() == new
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]
    assert [r.status for r in hub.stats.requests_for("/shrink/m.bin")][-2:] == [416, 206]
