"""Plain downloads: naming, priority, multi-connection, fallbacks, events, free space."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

import modeldepot.download as dl
from modeldepot.config import DepotConfig
from modeldepot.download import (
    DownloadJob,
    DownloadJobStatus,
    DownloadQueueService,
    RemoteFile,
    download_file,
)
from modeldepot.errors import InsufficientSpaceError, UnknownJobIDException, UnsafePathError
from modeldepot.events import EventBus, EventRecorder
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, LOCAL, MiB, payload


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_exports() -> None:
    for name in dl.__all__:
        assert hasattr(dl, name), name
    assert [s.value for s in DownloadJobStatus] == [
        "idle", "enqueued", "running", "paused", "completed", "error", "cancelled",
    ]  # fmt: skip


def test_download_to_file_path(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(300_000)
    url = hub.add_file("a/small.bin", data)
    dest = tmp_path / "sub" / "out.bin"
    job = queue.download(url, dest)
    queue.wait_for_job(job, timeout=60)
    assert job.complete and job.succeeded and job.in_terminal_state
    assert job.download_path == dest and dest.read_bytes() == data
    assert job.bytes == job.total_bytes == len(data)
    assert job.job_started is not None and job.job_ended is not None
    assert _files(tmp_path) == ["sub/out.bin"]  # no .part / .part.json left behind


def test_name_from_content_disposition_and_url(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(1000)
    u1 = hub.add_file("dir/model.safetensors", data, content_disposition='attachment; filename="x.safetensors"')
    u2 = hub.add_file("dir/plain name.bin", data)
    u3 = hub.add_file("dir/utf", data, content_disposition="attachment; filename*=UTF-8''caf%C3%A9.ckpt")
    jobs = [queue.download(u, tmp_path) for u in (u1, u2, u3)]
    for j in jobs:
        queue.wait_for_job(j, timeout=60)
        assert j.complete, j.error
    assert _files(tmp_path) == sorted(["x.safetensors", "plain name.bin", "café.ckpt"])


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../evil.bin"', "evil.bin"),
        ('attachment; filename="..\\\\..\\\\win.bin"', "win.bin"),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ('attachment; filename=".."', "fallback.bin"),
        ('attachment; filename="a\x01b.bin"', "fallback.bin"),
        ('attachment; filename="name.bin.part"', "fallback.bin"),
    ],
)
def test_content_disposition_traversal_is_neutralised(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path, disposition: str, expected: str
) -> None:
    dest = tmp_path / "inside"
    dest.mkdir()
    url = hub.add_file("x/fallback.bin", b"payload", content_disposition=disposition)
    job = queue.download(url, dest)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert _files(tmp_path) == [f"inside/{expected}"]


def test_priority_order(hub: FakeHub, tmp_path: Path) -> None:
    url = hub.add_file("p.bin", b"x" * 1000)
    order: list[int] = []
    q = DownloadQueueService(
        max_parallel_dl=1, limits=FAST_LIMITS, on_start=lambda j: order.append(j.priority), policy=LOCAL
    )
    jobs = [q.download(url, tmp_path / f"f{p}.bin", priority=p) for p in (30, 5, 20, 10)]
    assert all(j.status == DownloadJobStatus.ENQUEUED and j.waiting for j in jobs)
    q.start()
    q.join()
    q.stop()
    assert order == [5, 10, 20, 30]


def test_multi_connection_uses_ranges(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(6 * MiB)
    url = hub.add_file("big/model.bin", data)
    job = queue.download(url, tmp_path / "m.bin", expected_sha256=hashlib.sha256(data).hexdigest())
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "m.bin").read_bytes() == data
    assert job.connections > 1 and job.sha256 == hashlib.sha256(data).hexdigest()
    reqs = hub.stats.requests_for("/big/model.bin")
    assert len(reqs) == 12  # 6 MiB in 512 KiB parts
    assert all(r.status == 206 and r.range and r.range.startswith("bytes=") for r in reqs)
    assert hub.stats.bytes_sent_total == len(data)


def test_server_ignoring_range_falls_back_to_one_stream(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(3 * MiB)
    url = hub.add_file("nr/model.bin", data)
    hub.faults("/nr/*", ignore_range=True)
    job = queue.download(url, tmp_path / "m.bin")
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "m.bin").read_bytes() == data
    reqs = hub.stats.requests_for("/nr/model.bin")
    assert [r.status for r in reqs] == [200]
    assert hub.stats.bytes_sent_total == len(data)


def test_no_content_length(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    url = hub.add_file("nolen.bin", data, send_content_length=False)
    job = queue.download(url, tmp_path)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "nolen.bin").read_bytes() == data
    assert job.total_bytes == len(data)


def test_events_order_and_payloads(hub: FakeHub, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("ev.bin", data)
    hub.faults("/ev.bin", speed_limit_bps=16 * MiB)
    bus = EventBus()
    rec = EventRecorder(bus)
    seen: list[tuple[str, str]] = []
    q = DownloadQueueService(1, event_bus=bus, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    job = q.download(
        url,
        tmp_path,
        on_start=lambda j: seen.append(("start", threading.current_thread().name)),
        on_progress=lambda j: seen.append(("progress", threading.current_thread().name)),
        on_complete=lambda j: seen.append(("complete", threading.current_thread().name)),
    )
    q.wait_for_job(job, timeout=60)
    q.stop()
    names = rec.names()
    assert names[0] == "download_started" and names[-1] == "download_complete"
    assert set(names[1:-1]) == {"download_progress"}
    assert 2 <= len(names) - 2 <= 101
    steps = [e.payload["bytes"] for e in rec.events if e.name == "download_progress"]
    assert steps == sorted(steps) and steps[-1] == len(data)
    p = rec.events[-1].payload
    assert {"id", "source", "dest", "bytes", "total_bytes", "speed", "eta", "status"} <= set(p)
    assert p["total_bytes"] == len(data) and p["status"] == "completed"
    # Handlers ran in the job's worker thread, in order.
    assert seen[0][0] == "start" and seen[-1][0] == "complete"
    assert {s[1] for s in seen} == {"download-worker-0"}


def test_broken_callbacks_do_not_break_downloads(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("cb.bin", b"abc" * 1000)

    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    job = queue.download(url, tmp_path, on_start=boom, on_progress=boom, on_complete=boom)
    queue.wait_for_job(job, timeout=60)
    assert job.complete


def test_free_space_checked_before_writing(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hub.add_file("huge.bin", payload(2 * MiB))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    dest = tmp_path / "d"
    dest.mkdir()
    job = queue.download(url, dest)
    queue.wait_for_job(job, timeout=60)
    assert job.errored and isinstance(job.exception, InsufficientSpaceError)
    assert job.error_type == "InsufficientSpaceError" and "free" in (job.error or "")
    assert _files(dest) == []
    mf = queue.multifile_download([RemoteFile(url, "a/huge.bin", size=2 * MiB)], tmp_path / "mf")
    queue.wait_for_job(mf, timeout=60)
    assert mf.errored and isinstance(mf.exception, InsufficientSpaceError)
    assert not (tmp_path / "mf").exists()


def test_multifile_download_with_total(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    files = {
        "model_index.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": payload(3 * MiB),
        "vae/diffusion_pytorch_model.safetensors": payload(512 * 1024),
        "text_encoder/config.json": b'{"a": 1}',
    }
    hub.add_hf_repo("org/name", {k: v for k, v in files.items()})
    parts = [
        RemoteFile(f"{hub.url}/org/name/resolve/main/{p}", p, size=len(b), sha256=hashlib.sha256(b).hexdigest())
        for p, b in files.items()
    ]
    bus = EventBus()
    rec = EventRecorder(bus)
    q = DownloadQueueService(3, event_bus=bus, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    mf = q.multifile_download(parts, tmp_path / "repo")
    q.wait_for_job(mf, timeout=60)
    q.stop()
    assert mf.complete, mf.error
    assert mf.total_bytes == mf.bytes == sum(len(b) for b in files.values())
    for p, b in files.items():
        assert (tmp_path / "repo" / p).read_bytes() == b
    parent = [e for e in rec.events if e.payload["id"] == mf.id]
    assert parent[0].name == "download_started" and parent[-1].name == "download_complete"
    assert len(parent[-1].payload["parts"]) == 4
    assert parent[-1].payload["total_bytes"] == mf.total_bytes


def test_multifile_rejects_traversal(queue: DownloadQueueService, tmp_path: Path) -> None:
    for bad in ("../x.bin", "/etc/x.bin", "a/../../x.bin"):
        with pytest.raises(UnsafePathError):
            queue.multifile_download([RemoteFile("http://127.0.0.1:1/x", bad)], tmp_path)
    assert queue.list_jobs() == []


def test_job_bookkeeping(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("k.bin", b"k" * 100)
    job = queue.create_download_job(url, tmp_path / "k.bin", start=False)
    assert job.status == DownloadJobStatus.IDLE and queue.id_to_job(job.id) is job
    queue.submit_download_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete
    with pytest.raises(UnknownJobIDException):
        queue.id_to_job(99999)
    queue.prune_jobs()
    assert job not in queue.list_jobs()
    with pytest.raises(TypeError):
        queue.download(url, tmp_path, on_bogus=print)  # type: ignore[call-arg]
    user_job = DownloadJob(source=url, dest=tmp_path / "u.bin")
    queue.submit_download_job(user_job)
    queue.wait_for_job(user_job, timeout=60)
    assert user_job.complete and user_job.id > 0


def test_wait_for_job_timeout(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("slow.bin", payload(1 * MiB))
    hub.faults("/slow.bin", speed_limit_bps=256 * 1024)
    job = queue.download(url, tmp_path)
    with pytest.raises(TimeoutError):
        queue.wait_for_job(job, timeout=0.2)
    queue.cancel_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.cancelled


def test_download_file_in_the_foreground(hub: FakeHub, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    url = hub.add_file("cli/m.bin", data, content_disposition="named.bin")
    from modeldepot.errors import BlockedAddressError, RemoteNotFoundError

    with pytest.raises(BlockedAddressError, match=r"refused: private address 127\.0\.0\.1"):
        download_file(url, tmp_path, None, limits=FAST_LIMITS)
    mirror = DepotConfig(home=tmp_path / "home", trusted_hosts=[f"127.0.0.1:{hub.port}"])
    seen: list[int] = []
    path = download_file(url, tmp_path, mirror, limits=FAST_LIMITS, on_progress=lambda job: seen.append(job.bytes))
    assert path == tmp_path / "named.bin" and path.read_bytes() == data
    assert seen and seen[-1] == len(data)
    with pytest.raises(RemoteNotFoundError):
        download_file(hub.url + "/cli/missing.bin", tmp_path, mirror, limits=FAST_LIMITS)


def test_the_download_package_does_not_import_rich() -> None:
    import subprocess
    import sys

    # Nor requests: a requests_session is used through its methods, never by importing requests.
    probe = "import sys, modeldepot.download; print('rich' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False False", out.stderr


def test_adaptive_connection_count(hub: FakeHub, tmp_path: Path) -> None:
    from dataclasses import replace

    data = payload(8 * MiB)
    fast = hub.add_file("fast.bin", data)
    capped = hub.add_file("capped.bin", data)
    hub.faults("/capped.bin", speed_limit_bps=4 * MiB)
    # Each doubling of capped connections doubles the rate: 1, 2, then 4 (the maximum).
    probe = replace(FAST_LIMITS, ramp_probe_seconds=0.2)
    # One stream already "fast enough": no extra connections.
    q = DownloadQueueService(1, limits=replace(probe, fast_stream_bps=1), policy=LOCAL)
    q.start()
    j1 = q.download(fast, tmp_path / "a.bin")
    q.wait_for_job(j1, timeout=60)
    q.stop()
    # A capped stream is slower than the threshold: connections are added.
    q = DownloadQueueService(1, limits=replace(probe, fast_stream_bps=400 * MiB), policy=LOCAL)
    q.start()
    j2 = q.download(capped, tmp_path / "b.bin")
    q.wait_for_job(j2, timeout=60)
    q.stop()
    assert j1.complete and j2.complete
    assert j1.connections == 1 and j2.connections == 4
    assert (tmp_path / "a.bin").read_bytes() == data == (tmp_path / "b.bin").read_bytes()


def test_ramp_doubles_while_it_pays_and_takes_back_a_doubling_that_did_not() -> None:
    from dataclasses import replace

    from modeldepot.download._ramp import ramp_step

    lim = replace(FAST_LIMITS, fast_stream_bps=400 * MiB, ramp_gain=1.3)
    assert ramp_step(1, 500 * MiB, 0, 8, lim) == (1, False)  # one stream is fast: the CPU is the limit
    assert ramp_step(1, 30 * MiB, 0, 8, lim) == (2, True)
    assert ramp_step(2, 60 * MiB, 30 * MiB, 8, lim) == (4, True)  # doubled the rate: go on
    assert ramp_step(4, 110 * MiB, 60 * MiB, 8, lim) == (8, True)
    assert ramp_step(8, 115 * MiB, 110 * MiB, 8, lim) == (4, False)  # the link is full: take back
    assert ramp_step(2, 31 * MiB, 30 * MiB, 8, lim) == (1, False)  # a CPU-bound loopback under load
    assert ramp_step(4, 200 * MiB, 60 * MiB, 4, lim) == (4, False)  # at the maximum
    assert ramp_step(1, 30 * MiB, 0, 1, lim) == (1, False)  # a file of one part


def test_a_retired_connection_finishes_its_part_and_the_file_is_whole(hub: FakeHub, tmp_path: Path) -> None:
    from dataclasses import replace

    # A gain no doubling can reach forces the take-back; the parts left must still all be fetched
    # by the one connection that stays.
    data = payload(8 * MiB)
    url = hub.add_file("slow.bin", data)
    hub.faults("/slow.bin", speed_limit_bps=8 * MiB)
    lim = replace(FAST_LIMITS, ramp_probe_seconds=0.15, fast_stream_bps=400 * MiB, ramp_gain=100.0)
    q = DownloadQueueService(1, limits=lim, policy=LOCAL)
    q.start()
    job = q.download(url, tmp_path / "s.bin")
    q.wait_for_job(job, timeout=60)
    q.stop()
    assert job.complete, job.error
    assert job.connections == 2  # opened one more, saw no 100x gain, retired it after its part
    assert (tmp_path / "s.bin").read_bytes() == data


def test_ramp_windows() -> None:
    from dataclasses import replace

    from modeldepot.download._ramp import Ramp

    lim = replace(FAST_LIMITS, fast_stream_bps=400 * MiB, ramp_probe_seconds=1.0, ramp_gain=1.3)
    ramp = Ramp(8, lim, now=0.0, fetched=0)
    assert ramp.at_once == 0 and ramp.probing
    assert ramp.tick(0.5, 10 * MiB) is None  # the window is not over
    assert ramp.tick(1.0, 30 * MiB) == 2  # 30 MiB/s alone: double
    ramp.opened(1, 1)
    assert ramp.tick(2.0, 90 * MiB) == 4  # 60 MiB/s with two: it paid, double again
    ramp.opened(2, 1)  # only one slot was free: the count stays at three
    assert ramp.conns == 3 and not ramp.probing and ramp.tick(3.0, 200 * MiB) is None
    forced = Ramp(4, replace(lim, fast_stream_bps=None), now=0.0, fetched=0)
    assert forced.at_once == 3 and not forced.probing  # no probing: all at once
    assert Ramp(1, lim, now=0.0, fetched=0).at_once == 0
