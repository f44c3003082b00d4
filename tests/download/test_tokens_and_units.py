"""Tokens across redirects, and the small pure helpers (redaction, naming, range bookkeeping)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.download import DownloadQueueService
from modeldepot.download._http import filename_from_content_disposition, parse_retry_after
from modeldepot.download._parts import PartState, sanitize_filename
from modeldepot.download._redact import redact_url

from .conftest import FAST_LIMITS


class _Host:
    """A tiny HTTP server that records each request's Authorization header and redirects or serves."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.routes: dict[str, tuple[int, str | bytes]] = {}
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.seen.append((self.path, self.headers.get("Authorization")))
                status, body = host.routes.get(self.path, (404, b"missing"))
                if status in (301, 302, 307, 308):
                    self.send_response(status)
                    self.send_header("Location", str(body))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hosts() -> Iterator[tuple[_Host, _Host]]:
    a, b = _Host(), _Host()
    yield a, b
    a.close()
    b.close()


def test_token_dropped_on_cross_host_redirect(
    hosts: tuple[_Host, _Host], queue: DownloadQueueService, tmp_path: Path
) -> None:
    a, b = hosts
    a.routes["/start"] = (302, "/same-host")
    a.routes["/same-host"] = (307, b.url + "/cdn/file.bin?X-Amz-Signature=abc")
    b.routes["/cdn/file.bin?X-Amz-Signature=abc"] = (200, b"payload-bytes")
    job = queue.download(a.url + "/start", tmp_path / "f.bin", access_token="SECRET-TOKEN")
    queue.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert (tmp_path / "f.bin").read_bytes() == b"payload-bytes"
    assert a.seen == [("/start", "Bearer SECRET-TOKEN"), ("/same-host", "Bearer SECRET-TOKEN")]
    assert b.seen == [("/cdn/file.bin?X-Amz-Signature=abc", None)]


def test_redirect_loop_is_an_error(hosts: tuple[_Host, _Host], queue: DownloadQueueService, tmp_path: Path) -> None:
    a, _ = hosts
    a.routes["/loop"] = (302, "/loop")
    job = queue.download(a.url + "/loop", tmp_path)
    queue.wait_for_job(job, timeout=60)
    assert job.errored and "redirects" in (job.error or "")
    assert len(a.seen) == 11


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://civitai.com/api/download/models/1?token=abc&type=Model",
            "https://civitai.com/api/download/models/1?token=***&type=Model",
        ),
        ("https://user:pw@host/x", "https://user:***@host/x"),
        (
            "https://s3/x?X-Amz-Credential=a&X-Amz-Signature=b&v=1",
            "https://s3/x?X-Amz-Credential=***&X-Amz-Signature=***&v=1",
        ),
        ("http://h/plain?rev=main", "http://h/plain?rev=main"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("model.safetensors", "model.safetensors"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\x.bin", "x.bin"),
        ("/abs/y.bin", "y.bin"),
        ("..", None),
        (".", None),
        ("", None),
        ("a\x00b", None),
        ("C:evil", None),
        ("x.part.json", None),
    ],
)
def test_sanitize_filename(name: str, safe: str | None) -> None:
    assert sanitize_filename(name) == safe


def test_content_disposition_parsing() -> None:
    assert filename_from_content_disposition('attachment; filename="a b.bin"') == "a b.bin"
    assert filename_from_content_disposition("attachment; filename=plain.bin") == "plain.bin"
    assert filename_from_content_disposition("attachment; filename*=UTF-8''%E2%82%AC.bin; filename=x") == "€.bin"
    assert filename_from_content_disposition("inline") is None
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after("soon") is None


def test_part_state_ranges(tmp_path: Path) -> None:
    st = PartState(url="u", size=100)
    for a, b in [(10, 20), (30, 40), (20, 30), (0, 5), (90, 100), (35, 50)]:
        st.add(a, b)
    assert st.done == [[0, 5], [10, 50], [90, 100]]
    assert st.holes() == [(5, 10), (50, 90)] and st.done_bytes == 55 and not st.complete
    final = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"\0" * 100)
    st.etag = '"e1"'
    st.save(final)
    back = PartState.load(final, "u")
    assert back is not None and back.done == st.done and back.if_range() == '"e1"'
    assert PartState.load(final, "other-url") is None
    assert back.matches('"e1"', 100) and not back.matches('"e2"', 100) and not back.matches('"e1"', 99)
    (tmp_path / "f.bin.part").write_bytes(b"\0" * 10)  # truncated data file: state is not trusted
    assert PartState.load(final, "u") is None


def test_queue_level_handlers_and_unknown_kwargs() -> None:
    with pytest.raises(TypeError):
        DownloadQueueService(1, limits=FAST_LIMITS, on_nothing=print)
