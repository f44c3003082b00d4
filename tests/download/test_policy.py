"""The connection policy: which addresses are refused, trust per host, pinning, token scoping."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.config import DepotConfig
from modeldepot.download import ConnectPolicy, DownloadQueueService, _policy
from modeldepot.download._http import open_url
from modeldepot.download._policy import is_public
from modeldepot.errors import BlockedAddressError, ConfigurationError, DownloadError
from modeldepot.remote import CivitaiClient, HuggingFaceClient
from modeldepot.testing.fakehub import FakeHub

from .conftest import FAST_LIMITS, LOCAL

REFUSED = [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "100.127.255.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "192.0.2.1", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::1",
    "2001:db8::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert not is_public(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    assert is_public(ipaddress.ip_address(addr))


def test_trust_is_per_host_and_port() -> None:
    p = ConnectPolicy.of(["mirror.lan", "127.0.0.1:8000", "http://models.corp:8080/", "https://hub.corp"])
    assert p.is_trusted("mirror.lan", 1) and p.is_trusted("MIRROR.LAN.", 443)
    assert p.is_trusted("127.0.0.1", 8000) and not p.is_trusted("127.0.0.1", 8001)
    assert p.is_trusted("models.corp", 8080) and not p.is_trusted("models.corp", 80)
    assert p.is_trusted("hub.corp", 443) and not p.is_trusted("hub.corp", 80)
    assert not p.is_trusted("evil.mirror.lan", 80)
    with pytest.raises(BlockedAddressError, match=r"refused: private address 127\.0\.0\.1 for host 127\.0\.0\.1"):
        p.resolve("127.0.0.1", 8001, "http://127.0.0.1:8001/x")
    assert p.resolve("127.0.0.1", 8000, "x")[0][1][:2] == ("127.0.0.1", 8000)
    assert ConnectPolicy(allow_private=True).resolve("127.0.0.1", 1, "x")


def test_config_trusts_its_endpoints_and_trusted_hosts(tmp_path: Path) -> None:
    cfg = DepotConfig(home=tmp_path, hf_endpoint="http://10.0.0.5:8080", trusted_hosts="mirror.lan, 10.0.0.9:81")
    p = ConnectPolicy.from_config(cfg)
    assert cfg.trusted_hosts == ["mirror.lan", "10.0.0.9:81"]
    assert p.is_trusted("10.0.0.5", 8080) and p.is_trusted("civitai.com", 443) and p.is_trusted("mirror.lan", 9)
    assert p.is_trusted("10.0.0.9", 81) and not p.is_trusted("10.0.0.9", 80) and not p.allow_private
    with pytest.raises(ConfigurationError, match="trusted_hosts"):
        DepotConfig(home=tmp_path, trusted_hosts=["mirror.lan/path"])


def test_a_failed_lookup_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"cannot resolve host no-such-host\.invalid"):
        ConnectPolicy().resolve("no-such-host.invalid", 80, "http://no-such-host.invalid/x")
    # Through the queue: one clear error at once, not a round of retries.
    q = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    try:
        job = q.wait_for_job(q.download("http://no-such-host.invalid/m.bin", tmp_path), timeout=60)
    finally:
        q.stop()
    assert job.errored and "cannot resolve host no-such-host.invalid" in (job.error or "")


def test_every_address_of_a_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name answering one public and one private address is refused (the connect could use either).
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]  # fmt: skip
    monkeypatch.setattr(_policy.socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.1"):
        ConnectPolicy().resolve("mixed.example", 80, "http://mixed.example/")


@pytest.fixture
def two_hubs() -> Iterator[tuple[FakeHub, FakeHub]]:
    with FakeHub() as a, FakeHub(host="127.0.0.2") as b:
        yield a, b


def test_the_connection_goes_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, two_hubs: tuple[FakeHub, FakeHub]
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 at the check, 127.0.0.2 afterwards."""
    first, second = two_hubs
    first.add_file("m.bin", b"checked")
    second.add_file("m.bin", b"rebound")
    real = socket.getaddrinfo
    calls: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(host))
        target = "127.0.0.1" if len(calls) == 1 else "127.0.0.2"
        return real(target if host == "rebind.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    resp = open_url(f"http://rebind.test:{first.port}/m.bin", policy=ConnectPolicy.of(["rebind.test"]))
    try:
        body = memoryview(bytearray(64))
        n = resp.readinto(body)
        assert bytes(body[:n]) == b"checked"
    finally:
        resp.close()
    assert calls == ["rebind.test"]  # resolved once, for the check, and that answer was used
    assert second.stats.max_concurrent_connections == 0
    assert first.stats.requests[0].path == "/m.bin"


def test_redirect_hops_are_checked_and_drop_authorization(two_hubs: tuple[FakeHub, FakeHub], tmp_path: Path) -> None:
    a, b = two_hubs
    b.add_file("m.bin", b"w" * 1000)
    hop = a.add_redirect("hop/m.bin", f"{b.url}/m.bin")
    with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.2"):
        open_url(hop, policy=ConnectPolicy.of([a.url]))
    assert b.stats.max_concurrent_connections == 0
    # Both trusted: followed, but the token stays with the host it was given for.
    q = DownloadQueueService(1, limits=FAST_LIMITS, policy=LOCAL)
    q.start()
    try:
        job = q.wait_for_job(q.download(hop, tmp_path, access_token="SECRET-for-a"), timeout=60)
    finally:
        q.stop()
    assert job.complete, job.error
    assert a.stats.authorized_paths == ["/hop/m.bin"] and b.stats.authorized_paths == []


@pytest.mark.parametrize(
    ("entry", "url", "sent"),
    [
        ({"url_regex": "civitai"}, "http://other-host/free-civitai-loras/x.safetensors", False),
        ({"url_regex": "civitai"}, "https://example.com/x?utm_source=civitai", False),
        ({"url_regex": "civitai"}, "https://civitai.com/api/download/models/1", False),  # whole host only
        ({"url_regex": r"civitai\.com"}, "https://civitai.com/api/download/models/1", True),
        ({"url_regex": r"civitai\.com"}, "https://civitai.com.evil.net/x", False),
        ({"host": "civitai.com"}, "https://CIVITAI.com/api/download/models/1", True),
        ({"host": "civitai.com"}, "https://evil.net/civitai.com/x", False),
        ({"host": "civitai.com"}, "https://api.civitai.com/x", False),
        ({"host": "*.civitai.com"}, "https://api.civitai.com/x", True),
        ({"host": "*.civitai.com"}, "https://civitai.com/x", True),
        ({"host": "*.civitai.com"}, "https://evilcivitai.com/x", False),
        ({"host": "127.0.0.1:8000"}, "http://127.0.0.1:8000/x", True),
        ({"host": "127.0.0.1:8000"}, "http://127.0.0.1:8001/x", False),
        ({"host": "huggingface.co"}, "https://user:pw@huggingface.co/x", True),
    ],
)
def test_tokens_go_to_their_host_only(tmp_path: Path, entry: dict[str, str], url: str, sent: bool) -> None:
    cfg = DepotConfig(home=tmp_path, remote_api_tokens=[{**entry, "token": "tok"}])
    assert (cfg.token_for(url) == "tok") is sent


def test_token_entry_needs_one_target(tmp_path: Path) -> None:
    for bad in ({"token": "t"}, {"host": "a", "url_regex": "a", "token": "t"}, {"host": "a/b", "token": "t"}):
        with pytest.raises(ConfigurationError, match="remote_api_tokens"):
            DepotConfig(home=tmp_path, remote_api_tokens=[bad])


def test_client_tokens_stay_with_their_endpoint(hub: FakeHub) -> None:
    with HuggingFaceClient(hub.url, token="hf_x", use_cached_login=False) as hf:
        assert hf.token_for(f"{hub.url}/acme/m/resolve/main/x") == "hf_x"
        assert hf.token_for("http://127.0.0.2:1/x") is None
    with CivitaiClient(hub.url, token="cv_x") as cv:
        assert cv.token_for(f"{hub.url}/api/download/models/1") == "cv_x"
        assert cv.token_for("https://elsewhere.example/api/download/models/1") is None
