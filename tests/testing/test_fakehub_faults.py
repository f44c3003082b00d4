"""Every fault is proven to happen, to stop after ``times``, and not to block ``stop()``."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from modeldepot.errors import ConfigurationError
from modeldepot.testing.fakehub import FakeHub, Faults

DATA = os.urandom(1_000_000)
PATH = "/files/f.bin"


# One keep-alive client for the module: a fresh httpx.get() per call costs an SSL context each time.
HTTP = httpx.Client(timeout=60)


def teardown_module() -> None:
    HTTP.close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_file(PATH, DATA)
        yield h


def _get(hub: FakeHub, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body bytes read, complete?) with http.client, which tolerates short reads."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
    conn.request("GET", PATH, headers=headers or {})
    resp = conn.getresponse()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    try:
        body = resp.read()
        complete = True
    except http.client.IncompleteRead as exc:
        body, complete = exc.partial, False
    conn.close()
    return resp.status, hdrs, body, complete


def test_drop_after_bytes_gives_a_short_read_then_heals(hub: FakeHub) -> None:
    hub.faults(PATH, drop_after_bytes=12345, times=1)
    status, headers, body, complete = _get(hub)
    assert status == 200 and headers["content-length"] == str(len(DATA))
    assert not complete
    assert body == DATA[:12345]
    assert HTTP.get(hub.url + PATH).content == DATA  # times=1 is used up


def test_drop_seen_by_httpx_as_protocol_error(hub: FakeHub) -> None:
    hub.faults(PATH, drop_after_bytes=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        HTTP.get(hub.url + PATH)


def test_drop_after_bytes_times(hub: FakeHub) -> None:
    hub.faults(PATH, drop_after_bytes=100, times=2)
    assert not _get(hub)[3]
    assert not _get(hub)[3]
    _status, _, body, complete = _get(hub)
    assert complete and body == DATA


def test_drop_applies_to_ranged_bodies(hub: FakeHub) -> None:
    hub.faults("*.bin", drop_after_bytes=10)
    status, _headers, body, complete = _get(hub, {"Range": "bytes=1000-1999"})
    assert status == 206 and not complete and body == DATA[1000:1010]


def test_status_with_retry_after_first_n_only(hub: FakeHub) -> None:
    hub.faults(PATH, status=429, retry_after=2)
    r = HTTP.get(hub.url + PATH)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert "error" in r.json()
    assert HTTP.get(hub.url + PATH).status_code == 200  # status_times defaults to 1


def test_status_times_and_forever(hub: FakeHub) -> None:
    hub.faults(PATH, status=503, status_times=2, retry_after=0.5)
    codes = [HTTP.get(hub.url + PATH).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert HTTP.head(hub.url + PATH).status_code == 200
    hub.clear_faults()
    hub.faults(PATH, status=500, status_times=0)
    assert [HTTP.get(hub.url + PATH).status_code for _ in range(4)] == [500] * 4
    hub.clear_faults()
    assert HTTP.get(hub.url + PATH).status_code == 200


def test_status_on_head_too(hub: FakeHub) -> None:
    hub.faults(PATH, status=503)
    assert HTTP.head(hub.url + PATH).status_code == 503


def test_ignore_range(hub: FakeHub) -> None:
    hub.faults(PATH, ignore_range=True)
    status, headers, body, complete = _get(hub, {"Range": "bytes=10-19"})
    assert status == 200 and body == DATA and complete
    assert "accept-ranges" not in headers and "content-range" not in headers
    assert "accept-ranges" not in {k.lower() for k in HTTP.head(hub.url + PATH).headers}


def test_wrong_content_length_larger_is_a_short_read(hub: FakeHub) -> None:
    hub.faults(PATH, wrong_content_length=len(DATA) + 500)
    _status, headers, body, complete = _get(hub)
    assert headers["content-length"] == str(len(DATA) + 500)
    assert body == DATA and not complete


def test_wrong_content_length_smaller_truncates(hub: FakeHub) -> None:
    hub.faults(PATH, wrong_content_length=1000)
    _status, headers, body, complete = _get(hub)
    assert headers["content-length"] == "1000"
    assert complete and body == DATA[:1000]


def test_corrupt_byte_at_absolute_offset(hub: FakeHub) -> None:
    hub.faults(PATH, corrupt_byte_at=500_000)
    _, _, body, _ = _get(hub)
    assert len(body) == len(DATA) and body != DATA
    assert [i for i in range(len(DATA)) if body[i] != DATA[i]] == [500_000]
    assert body[500_000] == DATA[500_000] ^ 0xFF
    _, _, part, _ = _get(hub, {"Range": "bytes=499990-500009"})
    assert part[10] == DATA[500_000] ^ 0xFF and part[:10] == DATA[499990:500000]
    _, _, other, _ = _get(hub, {"Range": "bytes=0-999"})
    assert other == DATA[:1000]  # a response not covering the offset is clean


def test_speed_limit_per_connection(hub: FakeHub) -> None:
    hub.faults(PATH, speed_limit_bps=2_000_000)
    t0 = time.monotonic()
    _, _, body, _ = _get(hub)
    elapsed = time.monotonic() - t0
    assert body == DATA
    assert elapsed >= 0.4


def test_speed_limit_is_per_connection_not_global(hub: FakeHub) -> None:
    hub.faults(PATH, speed_limit_bps=2_000_000)
    t0 = time.monotonic()
    threads = [threading.Thread(target=_get, args=(hub,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # three 1 MB transfers at 2 MB/s each run in parallel: ~0.5 s, not ~1.5 s
    assert time.monotonic() - t0 < 1.3
    assert hub.stats.bytes_sent_by_path[PATH] == 3 * len(DATA)


def test_stall_then_continue(hub: FakeHub) -> None:
    hub.faults(PATH, stall_seconds=0.5, stall_after_bytes=1000)
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
    conn.request("GET", PATH)
    resp = conn.getresponse()
    first = resp.read(1000)
    t0 = time.monotonic()
    rest = resp.read()
    assert time.monotonic() - t0 >= 0.4
    assert first + rest == DATA
    conn.close()


def test_stall_trips_a_client_read_timeout(hub: FakeHub) -> None:
    hub.faults(PATH, stall_seconds=5, stall_after_bytes=0, times=1)
    with pytest.raises(httpx.ReadTimeout):
        HTTP.get(hub.url + PATH, timeout=httpx.Timeout(5, read=0.3))


def test_stop_is_prompt_while_stalled_and_paced() -> None:
    hub = FakeHub().start()
    hub.add_file(PATH, DATA)
    hub.add_file("/slow", DATA)
    hub.faults(PATH, stall_seconds=60)
    hub.faults("/slow", speed_limit_bps=1000)
    started = threading.Event()

    def client(path: str) -> None:
        try:
            with httpx.stream("GET", hub.url + path, timeout=30) as r:
                started.set()
                for _ in r.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=client, args=(p,)) for p in (PATH, "/slow")]
    for t in threads:
        t.start()
    assert started.wait(5)
    deadline = time.monotonic() + 5
    while hub.stats.current_connections < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    hub.close()
    assert time.monotonic() - t0 < 2
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()


def test_max_connections_extra_get_503(hub: FakeHub) -> None:
    hub.faults(PATH, max_connections=2, speed_limit_bps=1_000_000, retry_after=3)
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(5)

    def fetch() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
        barrier.wait()
        conn.request("GET", PATH, headers={"Range": "bytes=0-299999"})  # 0.3 s at 1 MB/s
        resp = conn.getresponse()
        if resp.status == 503:
            assert resp.getheader("Retry-After") == "3"
        resp.read()
        with lock:
            statuses.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=fetch) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [206, 206, 503, 503, 503]
    # slots are released afterwards
    assert HTTP.get(hub.url + PATH, headers={"Range": "bytes=0-9"}).status_code == 206


def test_sequential_requests_under_max_connections_1(hub: FakeHub) -> None:
    hub.faults(PATH, max_connections=1)
    for _ in range(10):  # a new connection each time: the previous answer may still be closing
        assert _get(hub, {"Range": "bytes=0-9"})[0] == 206


def test_globs_newest_rule_wins_and_other_paths_are_clean(hub: FakeHub) -> None:
    hub.add_file("/other.txt", b"clean")
    hub.faults("*.bin", status=500, status_times=0)
    hub.faults("/files/*", status=418, status_times=0)
    assert HTTP.get(hub.url + PATH).status_code == 418
    assert HTTP.get(hub.url + "/other.txt").content == b"clean"
    hub.faults("files/f.bin", Faults(status=503, status_times=0))  # glob without the leading slash
    assert HTTP.get(hub.url + PATH).status_code == 503


def test_times_counts_only_requests_the_fault_touched(hub: FakeHub) -> None:
    hub.faults(PATH, corrupt_byte_at=0, times=1)
    assert HTTP.head(hub.url + PATH).status_code == 200  # a HEAD has no body to corrupt: not counted
    assert HTTP.get(hub.url + PATH).content[0] == DATA[0] ^ 0xFF
    assert HTTP.get(hub.url + PATH).content == DATA


def test_faults_on_chunked_and_json_bodies(hub: FakeHub) -> None:
    hub.add_file("/chunked", DATA, send_content_length=False, chunked=True)
    hub.faults("/chunked", drop_after_bytes=5000)
    with pytest.raises(httpx.RemoteProtocolError):
        HTTP.get(hub.url + "/chunked")
    hub.add_hf_repo("org/x", {"a.json": b"{}"})
    hub.faults("/api/models/*", status=429, retry_after=1)
    assert HTTP.get(hub.url + "/api/models/org/x").status_code == 429
    assert HTTP.get(hub.url + "/api/models/org/x").status_code == 200


def _read_whole(hub: FakeHub, path: str) -> bytes:
    """The body as ``http.client`` reads it, raising on whatever broke it."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_drop_with_reset_breaks_a_close_delimited_body(hub: FakeHub) -> None:
    hub.add_file("/nolen", DATA, send_content_length=False)
    hub.faults("/nolen", drop_after_bytes=5000, times=1)
    assert _read_whole(hub, "/nolen") == DATA[:5000]  # a plain drop reads like the end of the body
    hub.faults("/nolen", drop_after_bytes=5000, drop_with_reset=True, times=1)
    with pytest.raises(ConnectionResetError):
        _read_whole(hub, "/nolen")
    assert _read_whole(hub, "/nolen") == DATA  # both rules used up
    assert [r.status for r in hub.stats.requests_for("/nolen")] == [200, 200, 200]


def test_omit_last_chunk_sends_all_data_but_not_the_end(hub: FakeHub) -> None:
    hub.add_file("/chunked", DATA, send_content_length=False, chunked=True)
    hub.faults("/chunked", omit_last_chunk=True, times=1)
    with pytest.raises(http.client.IncompleteRead) as info:
        _read_whole(hub, "/chunked")
    assert info.value.partial == DATA  # every data byte came; only the zero-size last chunk is missing
    assert _read_whole(hub, "/chunked") == DATA


def test_invalid_faults() -> None:
    for bad in ({"drop_after_bytes": -1}, {"status": 1000}, {"speed_limit_bps": 0}, {"max_connections": 0}):
        with pytest.raises(ConfigurationError):
            Faults(**bad)  # type: ignore[arg-type]
