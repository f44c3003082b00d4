"""Seed 002 ("Get on line: The Download Queue"), its examples run as written against modeldepot.

Each test follows one passage of the document: the calls and names are the document's; only the
remote is a local fakehub (plus a trusting ``policy``, since fakehub listens on 127.0.0.1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.download import (
    ConnectPolicy,
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobRemoteSource,
    DownloadJobStatus,
    DownloadJobURL,
    DownloadQueueService,
)
from modeldepot.errors import UnknownJobIDException
from modeldepot.testing.fakehub import FakeHub

logger = logging.getLogger("compat.download")
LOCAL = ConnectPolicy(allow_private=True)
CONTENT = b"I am a safetensors file 12345" * 4000  # ~116 KB


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_file("models/12345", CONTENT, content_disposition="mock12345.safetensors")
        h.add_file("models/9999", CONTENT[::-1], content_disposition="mock9999.safetensors")
        h.add_file("models/slow", CONTENT * 20, content_disposition="slow.safetensors")
        h.faults("/models/slow", speed_limit_bps=512 * 1024)
        yield h


@pytest.fixture
def make_queue() -> Iterator[Callable[..., DownloadQueueService]]:
    """``DownloadQueueService(**kwargs)`` as the document builds it (never ``start()``ed here)."""
    made: list[DownloadQueueService] = []

    def make(**kwargs: Any) -> DownloadQueueService:
        q = DownloadQueueService(policy=LOCAL, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.stop()


def test_a_typical_initialization_sequence(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="compat.download")

    def log_download_event(job: DownloadJobBase) -> None:
        logger.info(f"job={job.id}: status={job.status}")

    queue = make_queue(event_handlers=[log_download_event])
    job = queue.create_download_job(source=f"{hub.url}/models/12345", destdir=tmp_path)
    queue.join()
    assert job.status == DownloadJobStatus.COMPLETED
    assert (tmp_path / "mock12345.safetensors").read_bytes() == CONTENT
    lines = [r.getMessage() for r in caplog.records if r.name == "compat.download"]
    assert lines[0] == f"job={job.id}: status=enqueued" and lines[-1] == f"job={job.id}: status=completed"


def test_submitting_a_job_built_by_hand(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    seen1: list[str] = []
    seen2: list[str] = []

    def my_handler1(job: DownloadJobBase) -> None:
        seen1.append(job.status.value)

    def my_handler2(job: DownloadJobBase) -> None:
        seen2.append(job.status.value)

    queue = make_queue()
    job = DownloadJobRemoteSource(
        source=f"{hub.url}/models/12345",
        destination=f"{tmp_path}/models/",
        event_handlers=[my_handler1, my_handler2],  # if desired
    )
    queue.submit_download_job(job, start=True)
    queue.wait_for_job(job)
    assert job.status == "completed" and seen1 == seen2
    assert (tmp_path / "models" / "mock12345.safetensors").read_bytes() == CONTENT


def test_having_the_queue_create_the_job(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    seen: list[DownloadJobStatus] = []
    queue = make_queue()
    job = queue.create_download_job(
        source=f"{hub.url}/models/12345",
        destdir=f"{tmp_path}/models/",
        filename="my_model.safetensors",
        event_handlers=[lambda j: seen.append(j.status)],  # if desired
        start=True,
    )
    assert isinstance(job, DownloadJobURL) and isinstance(job, DownloadJobBase)
    assert job.status == DownloadJobStatus.ENQUEUED  # "Enqueue the job immediately"
    queue.join()
    assert job.destination == tmp_path / "models" / "my_model.safetensors"
    assert job.destination.read_bytes() == CONTENT
    # "a single enqueued event, followed by one or more running events, and finally one completed"
    assert seen[0] == DownloadJobStatus.ENQUEUED and seen[-1] == DownloadJobStatus.COMPLETED
    assert seen.count(DownloadJobStatus.ENQUEUED) == 1 and seen.count(DownloadJobStatus.COMPLETED) == 1
    assert set(seen[1:-1]) == {DownloadJobStatus.RUNNING}


def test_start_false_then_start_job(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue()
    job = queue.create_download_job(source=f"{hub.url}/models/12345", destdir=tmp_path, start=False)
    assert isinstance(job.id, int) and job.status == "idle" and job.status == DownloadJobStatus.IDLE
    assert job in queue.list_jobs()  # "including ones that have not yet been enqueued"
    queue.start_job(job)
    queue.join()
    assert job.status == DownloadJobStatus.COMPLETED and (tmp_path / "mock12345.safetensors").exists()


def test_pause_then_start_job_picks_up(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    events: list[DownloadJobStatus] = []
    paused = threading.Event()
    queue = make_queue()

    def handler(job: DownloadJobBase) -> None:
        events.append(job.status)
        if job.status == DownloadJobStatus.RUNNING and job.bytes > 0 and not paused.is_set():
            paused.set()
            queue.pause_job(job)

    job = queue.create_download_job(source=f"{hub.url}/models/slow", destdir=tmp_path, event_handlers=[handler])
    queue.wait_for_job(job)
    assert job.status == DownloadJobStatus.PAUSED
    hub.clear_faults()
    queue.start_job(job)
    queue.wait_for_job(job)
    assert job.status == DownloadJobStatus.COMPLETED
    assert (tmp_path / "slow.safetensors").read_bytes() == CONTENT * 20
    collapsed = [s for i, s in enumerate(events) if i == 0 or events[i - 1] != s]
    assert collapsed == ["enqueued", "running", "paused", "running", "completed"]


def test_cancel_job_cleans_up(hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path) -> None:
    queue = make_queue()

    def cancel_when_running(job: DownloadJobBase) -> None:
        if job.status == DownloadJobStatus.RUNNING and job.bytes > 0:
            queue.cancel_job(job)

    job = queue.create_download_job(
        source=f"{hub.url}/models/slow", destdir=tmp_path, event_handlers=[cancel_when_running]
    )
    queue.wait_for_job(job)
    assert job.status == DownloadJobStatus.CANCELLED
    assert list(tmp_path.iterdir()) == []  # "clean up temporary files"


def test_wait_for_job_timeout_raises_timeout_error(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue()
    job = queue.create_download_job(source=f"{hub.url}/models/slow", destdir=tmp_path)
    with pytest.raises(TimeoutError):
        queue.wait_for_job(job, timeout=0.2)
    queue.cancel_job(job)
    queue.wait_for_job(job, 0)
    assert job.status == DownloadJobStatus.CANCELLED


def test_list_id_to_job_and_prune(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue()
    ok = queue.create_download_job(source=f"{hub.url}/models/12345", destdir=tmp_path)
    broken = queue.create_download_job(source=f"{hub.url}/models/broken", destdir=tmp_path)
    waiting = queue.create_download_job(source=f"{hub.url}/models/9999", destdir=tmp_path, start=False)
    queue.join()
    assert ok.status == "completed" and broken.status == "error" and waiting.status == "idle"
    assert isinstance(broken.error, str) and "404" in broken.error
    assert queue.id_to_job(ok.id) is ok and queue.id_to_job(broken.id) is broken
    assert len(queue.list_jobs()) == 3
    queue.prune_jobs()  # "Remove completed and errored jobs from the job list"
    assert queue.list_jobs() == [waiting]


def test_methods_taking_a_job_refuse_one_not_submitted(
    make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue()
    job = DownloadJobURL(source="http://www.civitai.com/models/13456", destination=tmp_path)
    for method in (queue.start_job, queue.pause_job, queue.cancel_job, queue.wait_for_job):
        with pytest.raises(UnknownJobIDException):
            method(job)


def test_all_jobs_start_pause_cancel(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue(max_parallel_dl=1)
    a = queue.create_download_job(source=f"{hub.url}/models/12345", destdir=tmp_path, start=False)
    b = queue.create_download_job(source=f"{hub.url}/models/9999", destdir=tmp_path, start=False, priority=5)
    queue.pause_all_jobs()
    assert a.status == b.status == DownloadJobStatus.PAUSED
    queue.start_all_jobs()
    queue.join()
    assert a.status == b.status == DownloadJobStatus.COMPLETED
    assert b.job_sequence is not None and a.job_sequence is not None
    assert b.job_sequence < a.job_sequence  # "Lower priorities run before higher priorities"
    slow1 = queue.create_download_job(source=f"{hub.url}/models/slow", destdir=tmp_path, filename="s1")
    slow2 = queue.create_download_job(source=f"{hub.url}/models/slow", destdir=tmp_path, filename="s2")
    queue.cancel_all_jobs()
    queue.join()
    assert slow1.status == slow2.status == DownloadJobStatus.CANCELLED
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_destination_file_or_existing_directory(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    queue = make_queue()
    into_dir = DownloadJobRemoteSource(source=f"{hub.url}/models/12345", destination=tmp_path)
    as_file = DownloadJobRemoteSource(source=f"{hub.url}/models/12345", destination=tmp_path / "new_name.bin")
    queue.submit_download_job(into_dir)
    queue.submit_download_job(as_file)
    queue.join()
    assert (tmp_path / "mock12345.safetensors").read_bytes() == CONTENT  # content-disposition name
    assert (tmp_path / "new_name.bin").read_bytes() == CONTENT


def test_preserve_partial_downloads_after_an_error(
    hub: FakeHub, make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    def fail_midway(job: DownloadJobBase) -> None:
        if job.status == DownloadJobStatus.RUNNING and job.bytes > 0:
            raise RuntimeError("handler refused the download")  # "erroring the job"

    queue = make_queue()
    kept = DownloadJobRemoteSource(source=f"{hub.url}/models/slow", destination=tmp_path / "kept.bin")
    kept.preserve_partial_downloads = True
    kept.add_event_handler(fail_midway)
    dropped = DownloadJobRemoteSource(
        source=f"{hub.url}/models/slow", destination=tmp_path / "dropped.bin", event_handlers=[fail_midway]
    )
    queue.submit_download_job(kept)
    queue.submit_download_job(dropped)
    queue.join()
    assert kept.status == dropped.status == DownloadJobStatus.ERROR
    assert "handler refused the download" in (kept.error or "")
    assert (tmp_path / "kept.bin.part").exists() and not (tmp_path / "kept.bin").exists()
    assert not (tmp_path / "dropped.bin.part").exists() and not (tmp_path / "dropped.bin").exists()


def test_download_job_path_moves_through_the_same_events(
    make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    src = tmp_path / "incoming" / "model.safetensors"
    src.parent.mkdir()
    src.write_bytes(CONTENT)
    dest = tmp_path / "models"
    dest.mkdir()
    seen: list[str] = []
    queue = make_queue()
    job = DownloadJobPath(source=src, destination=dest, event_handlers=[lambda j: seen.append(j.status.value)])
    queue.submit_download_job(job, start=True)
    queue.wait_for_job(job)
    assert job.status == "completed" and (dest / "model.safetensors").read_bytes() == CONTENT
    assert seen[0] == "enqueued" and seen[-1] == "completed" and "running" in seen
    by_create = queue.create_download_job(source=src, destdir=dest, filename="copy.safetensors")
    assert isinstance(by_create, DownloadJobPath)
    queue.join()
    assert (dest / "copy.safetensors").read_bytes() == CONTENT and src.exists()


def test_a_requests_session_to_simulate_a_remote_server(
    make_queue: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    requests = pytest.importorskip("requests")
    import io

    from requests.adapters import BaseAdapter
    from requests.structures import CaseInsensitiveDict

    class TestAdapter(BaseAdapter):
        def __init__(self, content: bytes, headers: dict[str, str]) -> None:
            super().__init__()
            self.content, self.headers = content, headers

        def send(self, request: Any, **kwargs: Any) -> Any:
            resp = requests.Response()
            resp.status_code, resp.headers = 200, CaseInsensitiveDict(self.headers)
            resp.raw, resp.url, resp.request = io.BytesIO(self.content), request.url, request
            return resp

        def close(self) -> None:
            pass

    session = requests.Session()
    for i in ["12345", "9999"]:
        content = (b"I am a safetensors file " + bytearray(i, "utf-8")) * 1000
        session.mount(
            f"http://www.civitai.com/models/{i}",
            TestAdapter(
                content,
                headers={"Content-Length": str(len(content)), "Content-Disposition": f'filename="mock{i}.safetensors"'},
            ),
        )
    events: list[DownloadJobStatus] = []
    queue = make_queue(requests_session=session, event_handlers=[lambda j: events.append(j.status)])
    job = queue.create_download_job(source="http://www.civitai.com/models/12345", destdir=tmp_path, start=False)
    assert job.status == DownloadJobStatus.IDLE
    queue.start_job(job)
    queue.join()
    assert events[0] == DownloadJobStatus.ENQUEUED and events[-1] == DownloadJobStatus.COMPLETED
    assert DownloadJobStatus.RUNNING in events
    assert Path(tmp_path, "mock12345.safetensors").exists()
