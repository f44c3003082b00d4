"""Faults: drops, stalls, retries, pause/resume, cancel, kill -9, changed remotes, corrupt bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.download import DownloadJobBase, DownloadQueueService
from modeldepot.errors import DownloadError, IntegrityError, RemoteAccessError, RemoteNotFoundError
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, LOCAL, MiB, payload


def _pause_after(queue: DownloadQueueService, nbytes: int) -> tuple[threading.Event, object]:
    """An on_progress handler that pauses its job once ``nbytes`` are on disk."""
    paused = threading.Event()

    def on_progress(job: DownloadJobBase) -> None:
        if job.bytes >= nbytes and not paused.is_set():
            paused.set()
            queue.pause_job(job)

    return paused, on_progress


def test_drop_mid_file_resumes_only_missing_bytes(
    hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("drop.bin", data)
    hub.faults("/drop.bin", drop_after_bytes=3 * MiB, times=1)
    job = single_queue.download(url, tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    single_queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "drop.bin").read_bytes() == data
    reqs = hub.stats.requests_for("/drop.bin")
    assert len(reqs) == 2 and (reqs[1].range or "").startswith(f"bytes={3 * MiB}-")
    assert hub.stats.bytes_sent_total < 1.1 * len(data)


def test_drop_in_multi_connection_parts(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("dropm.bin", data)
    hub.faults("/dropm.bin", drop_after_bytes=200_000, times=3)
    job = queue.download(url, tmp_path)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "dropm.bin").read_bytes() == data
    assert hub.stats.bytes_sent_total < 1.1 * len(data)


def test_pause_then_start_continues_from_disk(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("pause.bin", data)
    hub.faults("/pause.bin", speed_limit_bps=2 * MiB)
    paused, on_progress = _pause_after(queue, 1 * MiB)
    job = queue.download(url, tmp_path / "p.bin", on_progress=on_progress)  # type: ignore[arg-type]
    queue.wait_for_job(job, timeout=60)
    assert job.paused and paused.is_set()
    assert (tmp_path / "p.bin.part").exists() and (tmp_path / "p.bin.part.json").exists()
    assert not (tmp_path / "p.bin").exists()
    state = json.loads((tmp_path / "p.bin.part.json").read_text())
    on_disk = sum(b - a for a, b in state["done"])
    assert MiB <= on_disk < len(data)
    hub.clear_faults()
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "p.bin").read_bytes() == data
    assert hub.stats.bytes_sent_total < len(data) + 4 * 512 * 1024  # at most the parts in flight again
    assert not (tmp_path / "p.bin.part.json").exists()


@pytest.mark.parametrize("preserve", [False, True])
def test_cancel_deletes_partial_unless_preserved(hub: FakeHub, tmp_path: Path, preserve: bool) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("cancel.bin", data)
    hub.faults("/cancel.bin", speed_limit_bps=2 * MiB)
    cancelled: list[int] = []
    config = DepotConfig(home=tmp_path / "home", preserve_partial_downloads=preserve, allow_private_urls=True)
    q = DownloadQueueService(1, config=config, limits=FAST_LIMITS, on_cancelled=lambda j: cancelled.append(j.id))
    q.start()
    started = threading.Event()

    def on_progress(job: DownloadJobBase) -> None:
        if job.bytes >= MiB and not started.is_set():
            started.set()
            q.cancel_job(job)

    job = q.download(url, tmp_path / "out" / "c.bin", on_progress=on_progress)
    q.wait_for_job(job, timeout=60)
    q.stop()
    assert job.cancelled and cancelled == [job.id]
    assert (tmp_path / "out" / "c.bin.part").exists() is preserve
    assert not (tmp_path / "out" / "c.bin").exists()


def test_no_token_in_state_events_reprs_or_errors(hub: FakeHub, tmp_path: Path) -> None:
    from modeldepot.events import EventBus, EventRecorder

    data = payload(3 * MiB)
    hub.add_file("tok/model.bin", data)
    url = hub.url + "/tok/model.bin?token=QUERYSECRET123&x=1"
    bus = EventBus()
    rec = EventRecorder(bus)
    q = DownloadQueueService(1, event_bus=bus, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    hub.faults("/tok/*", speed_limit_bps=4 * MiB)
    _paused, on_progress = _pause_after(q, MiB)
    job = q.download(url, tmp_path / "m.bin", access_token="BEARERSECRET456", on_progress=on_progress)  # type: ignore[arg-type]
    q.wait_for_job(job, timeout=60)
    assert job.paused
    missing = q.download(hub.url + "/tok/nothere.bin?token=QUERYSECRET123", tmp_path, access_token="BEARERSECRET456")
    q.wait_for_job(missing, timeout=60)
    q.stop()
    assert isinstance(missing.exception, RemoteNotFoundError)
    texts = [
        (tmp_path / "m.bin.part.json").read_text(),
        repr(job),
        str(job),
        job.model_dump_json(),
        json.dumps(job.model_dump(mode="json")),
        json.dumps([e.to_json() for e in rec.events], default=str),
        str(missing.exception),
        missing.error or "",
        missing.model_dump_json(),
    ]
    for text in texts:
        assert "QUERYSECRET123" not in text and "BEARERSECRET456" not in text, text
    assert "token=***" in (tmp_path / "m.bin.part.json").read_text()
    assert job.url.endswith("QUERYSECRET123&x=1")  # the real URL is still used for fetching


_KILL_SCRIPT = """
import sys
from modeldepot.download import ConnectPolicy, DownloadLimits, DownloadQueueService
limits = DownloadLimits(multi_connection_threshold=1 << 20, part_size=512 << 10, max_connections=4,
                        buffer_size=64 << 10, state_interval=64 << 10)
q = DownloadQueueService(1, limits=limits, policy=ConnectPolicy(allow_private=True))
q.start()
job = q.download(sys.argv[1], sys.argv[2])
q.wait_for_job(job)
"""


def test_resume_in_new_process_after_kill_9(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(8 * MiB)
    url = hub.add_file("kill/model.bin", data)
    hub.faults("/kill/*", speed_limit_bps=2 * MiB)
    dest = tmp_path / "model.bin"
    state_file = tmp_path / "model.bin.part.json"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, url, str(dest)])
    try:
        deadline = time.monotonic() + 30
        on_disk = 0
        while on_disk < 3 * MiB:  # poll the persisted state until a good share is on disk
            assert proc.poll() is None and time.monotonic() < deadline, "child ended early"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.005)  # yields the CPU between polls; returns early if the child exits
            try:
                on_disk = sum(b - a for a, b in json.loads(state_file.read_text())["done"])
            except (OSError, ValueError):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "model.bin.part").exists() and not dest.exists()
    hub.clear_faults()
    job = queue.download(url, dest, expected_sha256=hashlib.sha256(data).hexdigest())
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert dest.read_bytes() == data
    assert hub.stats.bytes_sent_total < 1.1 * len(data), hub.stats.bytes_sent_total / len(data)
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]


def test_changed_remote_restarts_cleanly(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    old, new = payload(3 * MiB, seed=1), payload(3 * MiB, seed=2)
    url = hub.add_file("chg/model.bin", old)
    hub.faults("/chg/*", speed_limit_bps=2 * MiB)
    _paused, on_progress = _pause_after(queue, MiB)
    job = queue.download(url, tmp_path / "m.bin", on_progress=on_progress)  # type: ignore[arg-type]
    queue.wait_for_job(job, timeout=60)
    assert job.paused
    hub.clear_faults()
    hub.replace_file("chg/model.bin", new)  # same size, new ETag
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "m.bin").read_bytes() == new


def test_stall_is_detected_and_retried(hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    url = hub.add_file("stall.bin", data)
    hub.faults("/stall.bin", stall_seconds=120, stall_after_bytes=MiB, times=1)
    job = single_queue.download(url, tmp_path)
    single_queue.wait_for_job(job, timeout=60)  # far below the 120 s stall
    assert job.complete, job.error
    assert (tmp_path / "stall.bin").read_bytes() == data
    reqs = hub.stats.requests_for("/stall.bin")
    assert len(reqs) == 2 and reqs[1].range is not None and reqs[1].range != "bytes=0-"


def test_503_with_retry_after_is_retried(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("busy.bin", b"b" * 5000)
    hub.faults("/busy.bin", status=503, retry_after=0.2, status_times=2)
    t0 = time.monotonic()
    job = queue.download(url, tmp_path)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert time.monotonic() - t0 >= 0.4  # two Retry-After waits were honoured
    assert [r.status for r in hub.stats.requests_for("/busy.bin")] == [503, 503, 206]


def test_persistent_503_gives_up(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("down.bin", b"b" * 5000)
    hub.faults("/down.bin", status=500, status_times=0)
    job = queue.download(url, tmp_path)
    queue.wait_for_job(job, timeout=60)
    assert job.errored and isinstance(job.exception, DownloadError)
    assert "HTTP 500" in (job.error or "") and "/down.bin" in (job.error or "")
    assert len(hub.stats.requests_for("/down.bin")) == FAST_LIMITS.max_retries + 1


def test_401_and_404_are_final(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    hub.add_hf_repo("org/gated", {"model.safetensors": b"weights"}, gated_token="hf_right")
    gated = f"{hub.url}/org/gated/resolve/main/model.safetensors"
    j1 = queue.download(gated, tmp_path)
    j2 = queue.download(gated, tmp_path, access_token="hf_wrong")
    j3 = queue.download(hub.url + "/nope/missing.bin", tmp_path)
    for j in (j1, j2, j3):
        queue.wait_for_job(j, timeout=60)
        assert j.errored
    assert isinstance(j1.exception, RemoteAccessError) and isinstance(j1.exception, PermissionError)
    assert isinstance(j2.exception, RemoteAccessError)
    assert isinstance(j3.exception, RemoteNotFoundError) and isinstance(j3.exception, FileNotFoundError)
    assert "org/gated/resolve/main/model.safetensors" in str(j1.exception)
    assert "/nope/missing.bin" in str(j3.exception) and "404" in str(j3.exception)
    assert len(hub.stats.requests_for("/nope/missing.bin")) == 1  # not retried
    ok = queue.download(gated, tmp_path, access_token="hf_right")
    queue.wait_for_job(ok, timeout=60)
    assert ok.complete and (tmp_path / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_token_from_config(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_hf_repo("org/gated2", {"m.bin": b"w" * 100}, gated_token="hf_cfg")
    config = DepotConfig(
        home=tmp_path / "h", hf_endpoint=hub.url, remote_api_tokens=[{"url_regex": r"127\.0\.0\.1", "token": "hf_cfg"}]
    )
    q = DownloadQueueService(1, config=config, limits=FAST_LIMITS)
    q.start()
    job = q.download(f"{hub.url}/org/gated2/resolve/main/m.bin", tmp_path)
    q.wait_for_job(job, timeout=60)
    q.stop()
    assert job.complete, job.error


def test_corrupt_byte_is_refetched(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("bad.bin", data)
    hub.faults("/bad.bin", corrupt_byte_at=2 * MiB + 7, times=1)
    job = queue.download(url, tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "bad.bin").read_bytes() == data


def test_persistent_corruption_is_reported(hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(1 * MiB)
    url = hub.add_file("rot.bin", data)
    hub.faults("/rot.bin", corrupt_byte_at=10)
    job = single_queue.download(url, tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    single_queue.wait_for_job(job, timeout=60)
    assert job.errored and isinstance(job.exception, IntegrityError)
    assert "sha256" in (job.error or "")
    assert list(tmp_path.iterdir()) == []  # never a corrupt file, not even a partial
    assert len(hub.stats.requests_for("/rot.bin")) == 2  # one refetch, then give up


def test_stop_pauses_and_a_new_queue_resumes(hub: FakeHub, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("stop/model.bin", data)
    hub.faults("/stop/*", speed_limit_bps=2 * MiB)
    q1 = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    q1.start()
    halfway = threading.Event()
    job = q1.download(url, tmp_path / "m.bin", on_progress=lambda j: j.bytes >= MiB and halfway.set())  # type: ignore[func-returns-value]
    assert halfway.wait(20)
    q1.stop()
    assert job.paused and (tmp_path / "m.bin.part.json").exists()
    hub.clear_faults()
    q2 = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    q2.start()
    again = q2.download(url, tmp_path / "m.bin")
    q2.wait_for_job(again, timeout=60)
    q2.stop()
    assert again.complete, again.error
    assert (tmp_path / "m.bin").read_bytes() == data
    assert hub.stats.bytes_sent_total < len(data) + 4 * 512 * 1024


def test_multifile_part_error_fails_the_whole_job(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    from modeldepot.download import RemoteFile

    ok = hub.add_file("mf/ok.bin", payload(2 * MiB))
    hub.faults("/mf/ok.bin", speed_limit_bps=2 * MiB)
    errors: list[BaseException | None] = []
    mf = queue.multifile_download(
        [RemoteFile(ok, "ok.bin"), RemoteFile(hub.url + "/mf/missing.bin", "sub/missing.bin")],
        tmp_path / "repo",
        on_error=lambda j, e: errors.append(e),
    )
    queue.wait_for_job(mf, timeout=60)
    for p in mf.download_parts:
        queue.wait_for_job(p, timeout=60)
    assert mf.errored and isinstance(mf.exception, RemoteNotFoundError) and len(errors) == 1
    assert "missing.bin" in (mf.error or "")
    assert {p.status.value for p in mf.download_parts} == {"error", "cancelled"}
    assert not any(p.name.endswith(".part") for p in (tmp_path / "repo").rglob("*"))


@pytest.mark.parametrize("declared", [1000, 10 * MiB])
def test_wrong_content_length(hub: FakeHub, single_queue: DownloadQueueService, tmp_path: Path, declared: int) -> None:
    data = payload(2 * MiB)
    url = hub.add_file("wcl.bin", data)
    hub.faults("/wcl.bin", wrong_content_length=declared, times=1)
    job = single_queue.download(url, tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    single_queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "wcl.bin").read_bytes() == data
