"""Pinning keeps HTTPS whole: the socket goes to the checked address, TLS still checks the name.

A certificate for ``pinned.test`` only (no IP in it) is served on 127.0.0.1; the name resolves
there through a patched resolver. The handshake verifies only if SNI and the hostname check use
the name, while the TCP connection uses the address the policy checked.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modeldepot.download import ConnectPolicy
from modeldepot.download._http import open_url
from modeldepot.errors import BlockedAddressError
from modeldepot.remote._http import RemoteHTTP

NAME = "pinned.test"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        _Handler.seen.append((self.path, self.headers.get("Host")))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={NAME}",
         "-addext", f"subjectAltName=DNS:{NAME}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate, for the name only
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    _Handler.seen = []
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_download_layer_https_is_pinned_and_verified(tls_server: int) -> None:
    url = f"https://{NAME}:{tls_server}/file"
    resp = open_url(url, policy=ConnectPolicy.of([NAME]))
    try:
        buf = memoryview(bytearray(64))
        assert bytes(buf[: resp.readinto(buf)]) == b'{"ok": true}'
    finally:
        resp.close()
    assert _Handler.seen == [("/file", f"{NAME}:{tls_server}")]
    with pytest.raises(BlockedAddressError, match=r"refused: private address 127\.0\.0\.1"):
        open_url(url, policy=ConnectPolicy())


def test_metadata_client_https_is_pinned_and_verified(tls_server: int) -> None:
    endpoint = f"https://{NAME}:{tls_server}"
    http = RemoteHTTP("test", endpoint, lambda url: None, policy=ConnectPolicy.of([NAME]))
    try:
        response, data = http.get_json(f"{endpoint}/api/x")
    finally:
        http.close()
    assert response.status_code == 200 and data == {"ok": True}
    assert _Handler.seen == [("/api/x", f"{NAME}:{tls_server}")]
    strict = RemoteHTTP("test", endpoint, lambda url: None, policy=ConnectPolicy(), retries=0)
    try:
        with pytest.raises(BlockedAddressError):
            strict.get_json(f"{endpoint}/api/x")
    finally:
        strict.close()
