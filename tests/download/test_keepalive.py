"""Parts of one file reuse their connection and skip the redirect hop after the first answer."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from modeldepot.download import DownloadQueueService, _http
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, LOCAL, MiB, payload

#: 8 parts of 512 KiB over 2 connections.
TWO = replace(FAST_LIMITS, max_connections=2)


def _download(hub: FakeHub, url: str, dest: Path, **handlers: object) -> None:
    q = DownloadQueueService(1, limits=TWO, policy=LOCAL)
    q.start()
    try:
        job = q.download(url, dest, **handlers)  # type: ignore[arg-type]
        q.wait_for_job(job, timeout=60)
        assert job.complete, job.error
    finally:
        q.stop()


def test_parts_reuse_their_connection_and_go_straight_to_the_redirect_target(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(4 * MiB)
    target = hub.add_file("files/model.bin", data)
    url = hub.add_redirect("old/model.bin", target)
    connects: list[object] = []
    real = _http.connect_pinned

    def counting(*args: object) -> object:
        connects.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_http, "connect_pinned", counting)
    _download(hub, url, tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == data
    assert len(hub.stats.requests_for("/old/model.bin")) == 1  # only the first request was redirected
    assert len(hub.stats.requests_for("/files/model.bin")) == 8  # one per part
    # The first answer's redirect (2) + at most one kept-alive connection per worker (2), not one per part.
    assert len(connects) <= 4, len(connects)


def test_an_expired_redirect_target_sends_the_rest_through_the_original_url(hub: FakeHub, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    target = hub.add_file("files/model.bin", data)
    url = hub.add_redirect("old/model.bin", target)

    def expire(_job: object) -> None:
        # After the first answer, the target refuses the next request once (a signature that expired).
        hub.faults("/files/model.bin", status=403, status_times=1)

    _download(hub, url, tmp_path / "m.bin", on_start=expire)
    assert (tmp_path / "m.bin").read_bytes() == data
    statuses = [r.status for r in hub.stats.requests_for("/files/model.bin")]
    assert statuses.count(403) == 1
    assert len(hub.stats.requests_for("/old/model.bin")) >= 2  # asked again after the 403


def test_a_kept_alive_connection_the_server_closed_is_replaced(hub: FakeHub, tmp_path: Path) -> None:
    data = payload(4 * MiB)
    url = hub.add_file("ka/model.bin", data)
    cache = _http.ConnectionCache()
    first = _http.open_url(url, headers={"Range": "bytes=0-9"}, policy=LOCAL, cache=cache)
    buf = memoryview(bytearray(16))
    assert first.readinto(buf) == 10
    first.close()  # read to its end: kept
    (idle,) = cache._idle.values()
    assert idle.sock is not None
    idle.sock.shutdown(socket.SHUT_RDWR)  # dead, as if the server had dropped it meanwhile
    second = _http.open_url(url, headers={"Range": "bytes=10-19"}, policy=LOCAL, cache=cache)
    n = second.readinto(buf)
    assert bytes(buf[:n]) == data[10:20]
    second.close()
    cache.close()
