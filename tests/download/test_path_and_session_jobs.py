"""``DownloadJobPath`` (local copies through the queue) and seed 002's ``requests_session``."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.download import (
    DownloadJobBase,
    DownloadJobPath,
    DownloadJobStatus,
    DownloadQueueService,
)
from modeldepot.errors import DownloadError, IntegrityError, RemoteNotFoundError
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, MiB, payload

S = DownloadJobStatus


def _statuses(seen: list[S]) -> list[S]:
    out: list[S] = []
    for s in seen:
        if not out or out[-1] != s:
            out.append(s)
    return out


# -- DownloadJobPath -----------------------------------------------------------------------------


def test_a_local_file_is_copied_into_a_folder(queue: DownloadQueueService, tmp_path: Path) -> None:
    src = tmp_path / "src" / "model.safetensors"
    src.parent.mkdir()
    data = payload(3 * MiB)
    src.write_bytes(data)
    dest = tmp_path / "models"
    dest.mkdir()
    seen: list[S] = []
    job = queue.create_download_job(src, dest, event_handlers=[lambda j: seen.append(j.status)])
    assert isinstance(job, DownloadJobPath) and job.source == src and not job.move
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (dest / "model.safetensors").read_bytes() == data
    assert src.read_bytes() == data  # copied, not moved
    assert job.download_path == dest / "model.safetensors"
    assert job.bytes == job.total_bytes == len(data)
    assert _statuses(seen) == [S.ENQUEUED, S.RUNNING, S.COMPLETED]
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors"]  # no temporary left


def test_a_path_string_to_a_file_name_and_a_folder_tree(queue: DownloadQueueService, tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / "unet").mkdir(parents=True)
    (tree / "model_index.json").write_text("{}")
    (tree / "unet" / "weights.bin").write_bytes(b"w" * 5000)
    (tree / "link.json").symlink_to("model_index.json")
    out = tmp_path / "out"
    out.mkdir()
    file_job = queue.create_download_job(str(tree / "model_index.json"), out, filename="renamed.json")
    tree_job = queue.create_download_job(tree, out)
    for j in (file_job, tree_job):
        queue.wait_for_job(j, timeout=60)
        assert j.complete, j.error
    assert (out / "renamed.json").read_text() == "{}"
    assert (out / "repo" / "unet" / "weights.bin").read_bytes() == b"w" * 5000
    assert (out / "repo" / "link.json").is_symlink()  # links are copied as links
    assert tree_job.total_bytes == 5002
    again = queue.create_download_job(tree, out)
    queue.wait_for_job(again, timeout=60)
    assert again.status == S.ERROR and "already exists" in (again.error or "")


def test_move_true_moves(queue: DownloadQueueService, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"a" * 100)
    job = DownloadJobPath(source=src, destination=tmp_path / "b.bin", move=True)
    queue.submit_download_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete and not src.exists() and (tmp_path / "b.bin").read_bytes() == b"a" * 100


def test_a_missing_local_source_is_an_error(queue: DownloadQueueService, tmp_path: Path) -> None:
    job = queue.create_download_job(tmp_path / "nothing.bin", tmp_path / "out.bin")
    queue.wait_for_job(job, timeout=60)
    assert job.status == S.ERROR and isinstance(job.exception, DownloadError)
    assert "nothing.bin" in (job.error or "") and not (tmp_path / "out.bin").exists()


def test_a_local_copy_pauses_and_cancels(queue: DownloadQueueService, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(payload(4 * MiB))
    out = tmp_path / "out"
    out.mkdir()

    def pause_at_start(job: DownloadJobBase) -> None:
        if job.status == S.RUNNING and job.bytes == 0:
            queue.pause_job(job)

    job = queue.create_download_job(src, out, event_handlers=[pause_at_start])
    queue.wait_for_job(job, timeout=60)
    assert job.status == S.PAUSED and list(out.iterdir()) == []  # no half copy anywhere
    job.clear_event_handlers()
    queue.start_job(job)
    queue.wait_for_job(job, timeout=60)
    assert job.complete and (out / "big.bin").read_bytes() == src.read_bytes()

    def cancel_at_start(job: DownloadJobBase) -> None:
        if job.status == S.RUNNING:
            queue.cancel_job(job)

    other = queue.create_download_job(src, tmp_path / "other.bin", event_handlers=[cancel_at_start])
    queue.wait_for_job(other, timeout=60)
    assert other.status == S.CANCELLED and not (tmp_path / "other.bin").exists()
    assert not (tmp_path / "other.bin.part").exists()


# -- requests_session ----------------------------------------------------------------------------


@pytest.fixture
def requests_mod() -> Any:
    return pytest.importorskip("requests")


@pytest.fixture
def session_queue(requests_mod: Any) -> Iterator[tuple[DownloadQueueService, Any]]:
    session = requests_mod.Session()
    q = DownloadQueueService(1, limits=FAST_LIMITS, requests_session=session)
    q.start()
    yield q, session
    q.stop()
    session.close()


def test_a_requests_session_carries_the_download(
    hub: FakeHub, session_queue: tuple[DownloadQueueService, Any], tmp_path: Path
) -> None:
    q, _session = session_queue
    data = payload(2 * MiB)
    url = hub.add_file("s/model.bin", data, content_disposition="from-session.bin")
    job = q.create_download_job(url, tmp_path, access_token="tok-123", expected_sha256=hashlib.sha256(data).hexdigest())
    q.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "from-session.bin").read_bytes() == data
    assert job.sha256 == hashlib.sha256(data).hexdigest()
    assert [r.range for r in hub.stats.requests_for("/s/model.bin")] == [None]  # one plain GET
    assert "/s/model.bin" in hub.stats.authorized_paths
    # The queue's own engine would refuse 127.0.0.1 without a policy: the session was used.
    plain = DownloadQueueService(1, limits=FAST_LIMITS)
    with plain:
        refused = plain.create_download_job(url, tmp_path, filename="refused.bin")
        plain.wait_for_job(refused, timeout=60)
    assert refused.status == S.ERROR


def test_a_session_download_pauses_and_resumes_with_range(
    hub: FakeHub, session_queue: tuple[DownloadQueueService, Any], tmp_path: Path
) -> None:
    q, _session = session_queue
    data = payload(4 * MiB)
    url = hub.add_file("s/resume.bin", data)
    hub.faults("/s/resume.bin", speed_limit_bps=2 * MiB)

    paused_once = threading.Event()

    def pause_midway(job: DownloadJobBase) -> None:
        if job.status == S.RUNNING and job.bytes >= 256 * 1024 and not paused_once.is_set():
            paused_once.set()
            q.pause_job(job)

    job = q.create_download_job(url, tmp_path / "r.bin", event_handlers=[pause_midway])
    q.wait_for_job(job, timeout=60)
    assert job.status == S.PAUSED
    kept = job.bytes
    assert kept > 0 and (tmp_path / "r.bin.part").stat().st_size == kept
    hub.clear_faults()
    q.start_job(job)
    q.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "r.bin").read_bytes() == data
    assert [r.range for r in hub.stats.requests_for("/s/resume.bin")] == [None, f"bytes={kept}-"]


def test_session_errors_become_download_errors(
    hub: FakeHub, session_queue: tuple[DownloadQueueService, Any], tmp_path: Path
) -> None:
    q, _session = session_queue
    missing = q.create_download_job(hub.url + "/s/missing.bin", tmp_path)
    url = hub.add_file("s/bad.bin", b"b" * 1000)
    corrupt = q.create_download_job(url, tmp_path, expected_sha256="0" * 64)
    for j in (missing, corrupt):
        q.wait_for_job(j, timeout=60)
    assert isinstance(missing.exception, RemoteNotFoundError)
    assert isinstance(corrupt.exception, IntegrityError)
    assert list(tmp_path.iterdir()) == []


def test_a_mounted_adapter_simulates_a_remote_server(requests_mod: Any, tmp_path: Path) -> None:
    """Seed 002's purpose for the argument: a test adapter answers instead of the network."""
    from requests.adapters import BaseAdapter
    from requests.structures import CaseInsensitiveDict

    content = b"I am a safetensors file 12345" * 1000

    class FakeServer(BaseAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            resp = requests_mod.Response()
            resp.status_code = 200
            resp.headers = CaseInsensitiveDict(
                {"Content-Length": str(len(content)), "Content-Disposition": 'filename="mock12345.safetensors"'}
            )
            resp.raw = io.BytesIO(content)
            resp.url = request.url
            resp.request = request
            return resp

        def close(self) -> None:
            pass

    session = requests_mod.Session()
    session.mount("http://www.civitai.com/models/", FakeServer())
    q = DownloadQueueService(requests_session=session)
    job = q.create_download_job(source="http://www.civitai.com/models/12345", destdir=tmp_path)
    q.join()
    q.stop()
    assert job.complete, job.error
    assert (tmp_path / "mock12345.safetensors").read_bytes() == content
