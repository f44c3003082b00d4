"""Plain files: lengths, Range, If-Range, HEAD, Content-Disposition, keep-alive, concurrency, stats."""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import modeldepot.testing.fakehub as fakehub_pkg
from modeldepot.errors import ConfigurationError
from modeldepot.testing.fakehub import FakeHub

DATA = os.urandom(300_000)


# One keep-alive client for the module: a fresh httpx.get() per call costs an SSL context each time.
HTTP = httpx.Client(timeout=60)


def teardown_module() -> None:
    HTTP.close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


def _conn(hub: FakeHub) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)


def test_public_names() -> None:
    assert set(fakehub_pkg.__all__) == {"FakeHub", "Faults", "RequestRecord", "Stats", "serve"}
    for name in fakehub_pkg.__all__:
        assert hasattr(fakehub_pkg, name)


def test_get_head_and_headers(hub: FakeHub) -> None:
    url = hub.add_file("files/model.bin", DATA, content_disposition="model.bin")
    assert url == f"{hub.url}/files/model.bin"
    r = HTTP.get(url)
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="model.bin"'
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    h = HTTP.head(url)
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["content-length"] == str(len(DATA))
    assert h.headers["etag"] == etag


def test_verbatim_content_disposition_and_explicit_etag(hub: FakeHub) -> None:
    url = hub.add_file("x", b"abc", content_disposition='attachment; filename="../../evil.sh"', etag="v1")
    r = HTTP.get(url)
    assert r.headers["content-disposition"] == 'attachment; filename="../../evil.sh"'
    assert r.headers["etag"] == '"v1"'


def test_ranges(hub: FakeHub) -> None:
    url = hub.add_file("files/r.bin", DATA)
    r = HTTP.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == DATA[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert r.headers["content-length"] == "100"
    r = HTTP.get(url, headers={"Range": "bytes=299990-"})
    assert (r.status_code, r.content) == (206, DATA[299990:])
    r = HTTP.get(url, headers={"Range": "bytes=-5"})
    assert (r.status_code, r.content) == (206, DATA[-5:])
    r = HTTP.get(url, headers={"Range": "bytes=299990-999999999"})
    assert r.content == DATA[299990:]
    r = HTTP.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    r = HTTP.get(url, headers={"Range": "bytes=0-1,5-6"})  # multi-range: allowed to answer 200
    assert (r.status_code, r.content) == (200, DATA)
    r = HTTP.get(url, headers={"Range": "lines=1-2"})
    assert r.status_code == 200


def test_if_range_and_replaced_file_changes_etag(hub: FakeHub) -> None:
    url = hub.add_file("files/v.bin", DATA)
    etag = HTTP.head(url).headers["etag"]
    r = HTTP.get(url, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert (r.status_code, r.content) == (206, DATA[10:20])
    new = os.urandom(1000)
    hub.replace_file("files/v.bin", new)
    assert HTTP.head(url).headers["etag"] != etag
    r = HTTP.get(url, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert (r.status_code, r.content) == (200, new)


def test_path_backed_file_edited_on_disk_changes_etag(hub: FakeHub, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"one")
    url = hub.add_file("p", p)
    e1 = HTTP.head(url).headers["etag"]
    p.write_bytes(b"second version")
    os.utime(p, ns=(1, 10**18))
    r = HTTP.get(url)
    assert r.content == b"second version"
    assert r.headers["etag"] != e1


def _raw_get(hub: FakeHub, path: str) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", hub.port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def test_without_content_length_close_delimited(hub: FakeHub) -> None:
    hub.add_file("files/nolen.bin", DATA, send_content_length=False)
    head, body = _raw_get(hub, "/files/nolen.bin")
    assert b"content-length" not in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == DATA  # the server closed the connection to end the body
    r = HTTP.get(f"{hub.url}/files/nolen.bin", headers={"Range": "bytes=0-9"})
    assert (r.status_code, r.content) == (200, DATA)  # no length, no ranges


def test_without_content_length_chunked(hub: FakeHub) -> None:
    hub.add_file("files/chunked.bin", DATA, send_content_length=False, chunked=True)
    head, _ = _raw_get(hub, "/files/chunked.bin")
    assert b"transfer-encoding: chunked" in head.lower()
    r = HTTP.get(f"{hub.url}/files/chunked.bin")
    assert r.content == DATA
    assert "content-length" not in r.headers


def test_keep_alive_reuses_one_connection(hub: FakeHub) -> None:
    hub.add_file("a", b"A" * 10)
    conn = _conn(hub)
    for _ in range(5):
        conn.request("GET", "/a")
        resp = conn.getresponse()
        assert resp.read() == b"A" * 10
    conn.close()
    assert hub.stats.max_concurrent_connections == 1
    assert len(hub.stats.requests) == 5


def test_unknown_path_is_404(hub: FakeHub) -> None:
    r = HTTP.get(f"{hub.url}/nope")
    assert r.status_code == 404
    assert "error" in r.json()


def test_many_concurrent_connections(hub: FakeHub) -> None:
    hub.add_file("files/c.bin", DATA)
    results: list[bytes] = []
    barrier = threading.Barrier(32)

    def fetch(i: int) -> None:
        conn = _conn(hub)
        barrier.wait()
        conn.request("GET", "/files/c.bin", headers={"Range": f"bytes={i * 1000}-{i * 1000 + 999}"})
        results.append(conn.getresponse().read())
        conn.close()

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(DATA[i * 1000 : i * 1000 + 1000] for i in range(32))
    assert hub.stats.max_concurrent_connections >= 2


def test_stats_count_bytes_and_requests_and_reset(hub: FakeHub) -> None:
    url = hub.add_file("files/s.bin", DATA)
    HTTP.get(url)
    HTTP.get(url, headers={"Range": "bytes=0-99"})
    HTTP.head(url)
    s = hub.stats
    assert s.bytes_sent_by_path["/files/s.bin"] == len(DATA) + 100
    assert s.bytes_sent_total == len(DATA) + 100
    assert [(r.method, r.path, r.range, r.status) for r in s.requests] == [
        ("GET", "/files/s.bin", None, 200),
        ("GET", "/files/s.bin", "bytes=0-99", 206),
        ("HEAD", "/files/s.bin", None, 200),
    ]
    method, _path, _rng, status = s.requests[0]  # plain tuples too
    assert (method, status) == ("GET", 200)
    s.reset()
    assert s.requests == [] and s.bytes_sent_total == 0 and s.bytes_sent_by_path == {}


def test_query_string_never_recorded(hub: FakeHub) -> None:
    url = hub.add_file("q", b"x")
    HTTP.get(url + "?token=secret-value")
    assert all("secret" not in r.path for r in hub.stats.requests)


def test_bad_arguments(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        hub.add_file("/", b"x")
    with pytest.raises(FileNotFoundError):
        hub.add_file("x", tmp_path / "missing")
    with pytest.raises(ConfigurationError):
        hub.faults("*", no_such_fault=1)


def test_url_before_start_and_restart() -> None:
    hub = FakeHub()
    with pytest.raises(RuntimeError):
        _ = hub.url
    hub.add_file("early", b"data")
    hub.start()
    try:
        assert HTTP.get(f"{hub.url}/early").content == b"data"
        assert urlsplit(hub.url).hostname == "127.0.0.1"
    finally:
        hub.close()


def test_logs_never_show_query_tokens(hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    url = hub.add_file("q", b"x")
    with caplog.at_level("DEBUG", logger="modeldepot.testing.fakehub"):
        HTTP.get(url + "?token=secret-value", headers={"Authorization": "Bearer other-secret"})
    assert "/q" in caplog.text
    assert "secret" not in caplog.text
    assert hub.stats.authorized_paths == ["/q"]
