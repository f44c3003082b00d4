"""Seed 002's download queue surface: creating and submitting jobs, statuses, handlers, control."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from modeldepot.download import (
    DownloadJob,
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobRemoteSource,
    DownloadJobStatus,
    DownloadJobURL,
    DownloadQueueService,
)
from modeldepot.errors import (
    DownloadError,
    InvalidSourceError,
    ModelDepotError,
    UnknownJobIDException,
    UnsafePathError,
)
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, LOCAL, MiB, payload

S = DownloadJobStatus


@pytest.fixture
def idle_queue() -> Iterator[DownloadQueueService]:
    """A queue whose workers are not started yet (``join``/``wait_for_job`` start them)."""
    q = DownloadQueueService(max_parallel_dl=1, limits=FAST_LIMITS, policy=LOCAL)
    yield q
    q.stop()


class Recorder:
    """A seed-002 handler: it looks at ``job.status`` and keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[S] = []

    def __call__(self, job: DownloadJobBase) -> None:
        self.seen.append(job.status)

    def collapsed(self) -> list[S]:
        """Consecutive "running" events folded into one."""
        out: list[S] = []
        for s in self.seen:
            if not out or out[-1] != s or s != S.RUNNING:
                out.append(s)
        return out


def test_created_job_is_enqueued_at_once_and_runs(
    hub: FakeHub, idle_queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(300_000)
    url = hub.add_file("c/one.bin", data)
    rec = Recorder()
    job = idle_queue.create_download_job(url, tmp_path, event_handlers=[rec])
    assert isinstance(job, DownloadJobURL) and isinstance(job, DownloadJob)
    assert job.status == S.ENQUEUED and rec.seen == [S.ENQUEUED]  # before any worker runs
    assert isinstance(job.id, int) and idle_queue.id_to_job(job.id) is job
    idle_queue.join()  # a never-started queue is started by waiting on it
    assert job.status == S.COMPLETED
    assert rec.collapsed() == [S.ENQUEUED, S.RUNNING, S.COMPLETED]
    assert (tmp_path / "one.bin").read_bytes() == data
    assert job.destination == tmp_path and job.download_path == tmp_path / "one.bin"
    assert isinstance(job.job_started, datetime) and isinstance(job.job_ended, datetime)
    assert job.job_ended >= job.job_started and job.job_sequence == 1
    assert job.bytes == job.total_bytes == len(data)


def test_start_false_stays_idle_until_started(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/idle.bin", b"i" * 1000)
    rec = Recorder()
    job = queue.create_download_job(url, tmp_path, filename="x.bin", start=False, event_handlers=[rec])
    assert job.status == S.IDLE and rec.seen == [] and job in queue.list_jobs()
    queue.wait_for_job(job, timeout=60)  # idle: nothing to wait for
    assert job.status == S.IDLE and not (tmp_path / "x.bin").exists()
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete and (tmp_path / "x.bin").read_bytes() == b"i" * 1000


def test_running_events_come_about_every_percent(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/pct.bin", payload(2 * MiB))
    hub.faults("/c/pct.bin", speed_limit_bps=8 * MiB)
    rec = Recorder()
    job = queue.create_download_job(url, tmp_path, event_handlers=[rec])
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    running = rec.seen.count(S.RUNNING)
    assert rec.seen[0] == S.ENQUEUED and rec.seen[-1] == S.COMPLETED
    assert set(rec.seen[1:-1]) == {S.RUNNING} and 2 <= running <= 102


def test_pause_and_restart_show_the_documented_sequence(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path
) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("c/pause.bin", data)
    hub.faults("/c/pause.bin", speed_limit_bps=2 * MiB)
    rec = Recorder()
    paused_once = threading.Event()

    def pause_midway(job: DownloadJobBase) -> None:
        if job.status == S.RUNNING and job.bytes >= 256 * 1024 and not paused_once.is_set():
            paused_once.set()
            queue.pause_job(job)

    job = queue.create_download_job(url, tmp_path, event_handlers=[rec, pause_midway])
    queue.wait_for_job(job, timeout=60)
    assert job.status == S.PAUSED and (tmp_path / "pause.bin.part").exists()
    hub.clear_faults()
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "pause.bin").read_bytes() == data
    # enqueued, running..., paused, running..., completed: a single enqueued event.
    assert rec.collapsed() == [S.ENQUEUED, S.RUNNING, S.PAUSED, S.RUNNING, S.COMPLETED]


def test_queue_default_handlers_run_after_the_jobs_own(hub: FakeHub, tmp_path: Path) -> None:
    url = hub.add_file("c/order.bin", b"o" * 5000)
    calls: list[tuple[str, S]] = []
    q = DownloadQueueService(
        1, limits=FAST_LIMITS, policy=LOCAL, event_handlers=[lambda j: calls.append(("queue", j.status))]
    )
    try:
        job = q.create_download_job(url, tmp_path, event_handlers=[lambda j: calls.append(("job", j.status))])
        q.wait_for_job(job, timeout=60)
    finally:
        q.stop()
    assert job.complete
    assert [who for who, _ in calls] == ["job", "queue"] * (len(calls) // 2)
    assert [s for _, s in calls[0::2]] == [s for _, s in calls[1::2]]
    assert calls[0][1] == S.ENQUEUED and calls[-1][1] == S.COMPLETED


def test_add_and_clear_event_handlers(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/h.bin", b"h" * 100)
    first, second, third = Recorder(), Recorder(), Recorder()
    job = queue.create_download_job(url, tmp_path, start=False, event_handlers=[first])
    job.add_event_handler(second)
    assert job.event_handlers == [first, second]
    job.clear_event_handlers()
    job.add_event_handler(third)
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert first.seen == second.seen == []
    assert third.seen[0] == S.ENQUEUED and third.seen[-1] == S.COMPLETED
    with pytest.raises(TypeError):
        job.add_event_handler("not callable")  # type: ignore[arg-type]


def test_a_raising_handler_errors_the_job(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/raise.bin", payload(2 * MiB))
    hub.faults("/c/raise.bin", speed_limit_bps=4 * MiB)
    rec = Recorder()

    def refuse(job: DownloadJobBase) -> None:
        if job.status == S.RUNNING:
            raise RuntimeError("disk quota policy says no")

    job = queue.create_download_job(url, tmp_path, event_handlers=[refuse, rec])
    queue.wait_for_job(job, timeout=60)
    assert job.status == S.ERROR and "disk quota policy says no" in (job.error or "")
    assert isinstance(job.exception, RuntimeError)
    assert rec.seen[-1] == S.ERROR
    assert list(tmp_path.iterdir()) == []  # the partial is removed like after any error


def test_job_sequence_follows_priority(hub: FakeHub, idle_queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/p.bin", b"p" * 1000)
    a = idle_queue.create_download_job(url, tmp_path, filename="a.bin", start=False, priority=10)
    b = idle_queue.create_download_job(url, tmp_path, filename="b.bin", start=False, priority=20)
    c = idle_queue.create_download_job(url, tmp_path, filename="c.bin", start=False, priority=30)
    idle_queue.change_priority(c, -25)  # 5: now first
    idle_queue.start()
    idle_queue.start_all_jobs()  # enqueued together: taken strictly by priority
    idle_queue.join()
    assert all(j.complete for j in (a, b, c))
    assert c.job_sequence is not None and a.job_sequence is not None and b.job_sequence is not None
    assert c.job_sequence < a.job_sequence < b.job_sequence


def test_change_priority_of_a_waiting_job(hub: FakeHub, idle_queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/w.bin", b"w" * 1000)
    first = idle_queue.create_download_job(url, tmp_path, filename="1.bin")
    second = idle_queue.create_download_job(url, tmp_path, filename="2.bin")
    idle_queue.change_priority(second, -5)
    idle_queue.join()
    assert second.job_sequence is not None and first.job_sequence is not None
    assert second.job_sequence < first.job_sequence and second.priority == 5


def test_wait_for_job_timeout(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/slow.bin", payload(MiB))
    hub.faults("/c/slow.bin", speed_limit_bps=256 * 1024)
    job = queue.create_download_job(url, tmp_path)
    with pytest.raises(TimeoutError):
        queue.wait_for_job(job, timeout=0.1)
    queue.cancel_job(job)
    assert queue.wait_for_job(job, timeout=0) is job  # 0: no time limit
    assert job.status == S.CANCELLED and list(tmp_path.iterdir()) == []


def test_unknown_jobs_are_refused(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    stranger = DownloadJobURL(source=hub.url + "/x.bin", destination=tmp_path / "x.bin")
    for call in (queue.start_job, queue.pause_job, queue.cancel_job, queue.wait_for_job):
        with pytest.raises(UnknownJobIDException):
            call(stranger)
    with pytest.raises(UnknownJobIDException):
        queue.change_priority(stranger, 1)
    with pytest.raises(UnknownJobIDException) as err:
        queue.id_to_job(12345)
    assert isinstance(err.value, ModelDepotError) and isinstance(err.value, KeyError)
    other = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    theirs = other.create_download_job(hub.url + "/x.bin", tmp_path, start=False)
    with pytest.raises(UnknownJobIDException):
        queue.cancel_job(theirs)


def test_a_job_from_another_queue_gets_a_fresh_id(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/id.bin", b"d" * 100)
    mine = queue.create_download_job(url, tmp_path, filename="m.bin", start=False)
    other = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    theirs = other.create_download_job(url, tmp_path, filename="t.bin", start=False)
    assert theirs.id == mine.id  # both queues count from 1
    queue.submit_download_job(theirs)
    assert theirs.id != mine.id and queue.id_to_job(mine.id) is mine and queue.id_to_job(theirs.id) is theirs
    queue.wait_for_job(theirs, timeout=60)
    assert theirs.complete


def test_list_id_to_job_and_prune(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    good = hub.add_file("c/good.bin", b"g" * 100)
    done = queue.create_download_job(good, tmp_path, filename="done.bin")
    failed = queue.create_download_job(hub.url + "/c/missing.bin", tmp_path, filename="missing.bin")
    idle = queue.create_download_job(good, tmp_path, filename="idle.bin", start=False)
    for j in (done, failed):
        queue.wait_for_job(j, timeout=60)
    assert done.complete and failed.status == S.ERROR and "404" in (failed.error or "")
    assert set(map(id, queue.list_jobs())) == {id(done), id(failed), id(idle)}
    queue.prune_jobs()
    assert queue.list_jobs() == [idle] and queue.id_to_job(idle.id) is idle
    with pytest.raises(UnknownJobIDException):
        queue.id_to_job(done.id)


def test_destination_folder_file_and_filename(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("models/13456", b"m" * 100, content_disposition="mock13456.safetensors")
    in_dir = queue.create_download_job(url, tmp_path)
    named = queue.create_download_job(url, tmp_path, filename="my_model.safetensors")
    as_file = queue.create_download_job(url, tmp_path / "sub" / "file.bin")
    new_dir = queue.create_download_job(url, f"{tmp_path}/fresh/")  # a trailing slash names a folder
    for j in (in_dir, named, as_file, new_dir):
        queue.wait_for_job(j, timeout=60)
        assert j.complete, j.error
    assert (tmp_path / "mock13456.safetensors").is_file()
    assert (tmp_path / "my_model.safetensors").is_file()
    assert (tmp_path / "sub" / "file.bin").is_file()
    assert (tmp_path / "fresh" / "mock13456.safetensors").is_file()
    with pytest.raises(UnsafePathError):
        queue.create_download_job(url, tmp_path, filename="../escape.bin")
    with pytest.raises(TypeError, match="priority="):
        queue.create_download_job(url, tmp_path, 5)  # type: ignore[arg-type]  # the pre-seed positional order
    assert len(queue.list_jobs()) == 4


def test_doc_style_remote_source_job(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("models/777", b"r" * 2048, content_disposition="remote.safetensors")
    rec = Recorder()
    job = DownloadJobRemoteSource(source=url, destination=f"{tmp_path}/models/", event_handlers=[rec])
    assert job.status == S.IDLE and job.bytes == job.total_bytes == 0 and job.access_token is None
    queue.submit_download_job(job, start=True)
    queue.wait_for_job(job, timeout=60)
    assert job.complete and (tmp_path / "models" / "remote.safetensors").stat().st_size == 2048
    assert rec.seen[0] == S.ENQUEUED and rec.seen[-1] == S.COMPLETED


def test_sources_that_are_not_urls_or_paths(queue: DownloadQueueService, tmp_path: Path) -> None:
    assert DownloadJob is DownloadJobURL
    for bad in ("ftp://example.com/a.bin", "http://", "not a url"):
        with pytest.raises(InvalidSourceError):
            DownloadJobURL(source=bad, destination=tmp_path)
    for bad in ("org/some-repo", "civitai:1234", "s3://bucket/key"):
        with pytest.raises(InvalidSourceError):
            queue.create_download_job(bad, tmp_path)
    with pytest.raises(InvalidSourceError):
        queue.submit_download_job(DownloadJobBase(source="x", destination=tmp_path))
    assert queue.list_jobs() == []


def test_access_token_is_secret(
    hub: FakeHub, queue: DownloadQueueService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modeldepot")
    url = hub.add_file("c/tok.bin", b"t" * 100)
    job = queue.create_download_job(url, tmp_path, access_token="SECRET-TOKEN-42")
    queue.wait_for_job(job, timeout=60)
    assert job.complete
    assert job.access_token is not None and job.access_token.get_secret_value() == "SECRET-TOKEN-42"
    assert "/c/tok.bin" in hub.stats.authorized_paths
    for text in (repr(job), str(job), job.model_dump_json(), str(job.model_dump()), caplog.text):
        assert "SECRET-TOKEN-42" not in text


def test_start_and_end_are_logged_unless_quiet(hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = hub.add_file("c/log.bin", b"l" * 100)
    caplog.set_level(logging.INFO, logger="modeldepot")
    for quiet in (False, True):
        caplog.clear()
        q = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL, quiet=quiet)
        try:
            job = q.create_download_job(url, tmp_path, filename=f"{quiet}.bin")
            q.wait_for_job(job, timeout=60)
        finally:
            q.stop()
        assert job.complete
        infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        if quiet:
            assert infos == []
        else:
            assert any("started" in m for m in infos) and any("completed" in m for m in infos)


def test_autostart_and_a_stopped_queue(hub: FakeHub, tmp_path: Path) -> None:
    url = hub.add_file("c/auto.bin", b"a" * 100)
    done = threading.Event()
    q = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL, autostart=True)
    job = q.create_download_job(url, tmp_path, event_handlers=[lambda j: j.in_terminal_state and done.set()])
    assert done.wait(60)  # ran without start(), join() or wait_for_job()
    assert job.complete
    q.stop()
    late = q.create_download_job(url, tmp_path, filename="late.bin")
    assert late.status == S.ENQUEUED
    with pytest.raises(DownloadError, match="stopped"):
        q.wait_for_job(late, timeout=5)
    q.start()
    q.wait_for_job(late, timeout=60)
    q.stop()
    assert late.complete


def test_requests_session_must_look_like_one() -> None:
    with pytest.raises(ModelDepotError, match="requests_session"):
        DownloadQueueService(1, requests_session=object())


def test_job_fields_as_documented(tmp_path: Path) -> None:
    job = DownloadJobPath(source=tmp_path / "a.bin", destination=tmp_path / "b.bin", priority=3)
    fields = (
        "id", "priority", "source", "destination", "status", "event_handlers", "job_started", "job_ended",
        "job_sequence", "error", "bytes", "total_bytes", "preserve_partial_downloads",
    )  # fmt: skip
    for name in fields:
        assert hasattr(job, name), name
    assert job.status == S.IDLE and job.priority == 3 and job.source == tmp_path / "a.bin"
    assert job.preserve_partial_downloads is False and job.job_sequence is None and job.event_handlers == []
    assert "event_handlers" not in job.model_dump()
    job.destination = tmp_path / "c.bin"
    assert job.dest == tmp_path / "c.bin"


def test_waiters_return_after_the_final_handlers_ran(hub: FakeHub, queue: DownloadQueueService, tmp_path: Path) -> None:
    url = hub.add_file("c/final.bin", b"f" * 1000)
    told: list[str] = []
    waited: list[DownloadJobBase] = []

    def on_end(job: DownloadJobBase) -> None:
        if job.in_terminal_state:
            waited.append(queue.wait_for_job(job, timeout=5))  # its own job: no deadlock
            told.append(job.status.value)

    job = queue.create_download_job(url, tmp_path, event_handlers=[on_end])
    queue.wait_for_job(job, timeout=60)
    assert told == ["completed"] and waited == [job]
    again = queue.create_download_job(url, tmp_path, filename="again.bin", event_handlers=[on_end])
    queue.join()
    assert again.complete and told == ["completed", "completed"]
