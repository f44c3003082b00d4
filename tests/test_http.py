"""modeldepot._http: one User-Agent, one retry policy, one redaction, one status -> error table.

The metadata clients (``remote/``, httpx) and the download engine (``download/``, http.client) must
agree on all of it; these tests send both at the same fakehub and compare.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import modeldepot
from modeldepot import _http
from modeldepot._http import (
    MAX_RETRY_AFTER,
    RETRY_STATUSES,
    USER_AGENT,
    RetryableHTTPError,
    backoff_seconds,
    parse_retry_after,
    redact_url,
    retry_after_seconds,
    status_error,
)
from modeldepot.config import DepotConfig
from modeldepot.download import ConnectPolicy, download_file
from modeldepot.download._http import check_status, open_url
from modeldepot.errors import DownloadError, RemoteAccessError, RemoteNotFoundError
from modeldepot.remote import CivitaiClient, HuggingFaceClient
from modeldepot.testing.fakehub import FakeHub

LOCAL = ConnectPolicy(allow_private=True)


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo("org/ua", {"config.json": b"{}"})
        h.add_civitai_model(
            {
                "id": 5,
                "name": "m",
                "type": "LORA",
                "modelVersions": [
                    {"id": 55, "name": "v", "baseModel": "SD 1.5", "files": [{"name": "m.safetensors", "data": b"w"}]}
                ],
            }
        )
        yield h


@pytest.fixture
def user_agents(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Path -> the User-Agent its last request carried (a spy on the hub's request handler)."""
    seen: dict[str, str | None] = {}
    serve: Callable[[Any], None] = hub._serve

    def spy(handler: Any) -> None:
        seen[urlsplit(handler.path).path] = handler.headers.get("User-Agent")
        serve(handler)

    monkeypatch.setattr(hub, "_serve", spy)
    return seen


def test_user_agent_carries_the_version() -> None:
    assert f"modeldepot/{modeldepot.__version__}" == USER_AGENT


def test_every_client_sends_the_same_user_agent(
    hub: FakeHub, user_agents: dict[str, str | None], tmp_path: Path
) -> None:
    url = hub.add_file("files/ua.bin", b"x" * 1000)
    config = DepotConfig(home=tmp_path / "home", trusted_hosts=[f"127.0.0.1:{hub.port}"])
    download_file(url, tmp_path / "ua.bin", config)
    with HuggingFaceClient(hub.url, use_cached_login=False) as hf:
        hf.model_info("org/ua")
    with CivitaiClient(hub.url) as cv:
        cv.get_version(55, with_model=False)
    assert user_agents["/files/ua.bin"] == USER_AGENT
    assert user_agents["/api/models/org/ua"] == USER_AGENT
    assert user_agents["/api/v1/model-versions/55"] == USER_AGENT


# -- one status table ------------------------------------------------------------------------------

EXPECTED: dict[int, type[DownloadError]] = {
    401: RemoteAccessError,
    403: RemoteAccessError,
    404: RemoteNotFoundError,
    410: RemoteNotFoundError,
    408: RetryableHTTPError,
    429: RetryableHTTPError,
    500: RetryableHTTPError,
    503: RetryableHTTPError,
    418: DownloadError,
    501: DownloadError,
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_status_error_classes(status: int) -> None:
    err = status_error(status, "https://h.example/f", reason="Why", detail="server says no", retry_after="3")
    assert type(err) is EXPECTED[status]
    assert err.url == "https://h.example/f" and "https://h.example/f: HTTP" in str(err) and "server says no" in str(err)
    if isinstance(err, RetryableHTTPError):
        assert err.status == status and err.retry_after == 3.0


def test_status_error_keeps_a_service_wording() -> None:
    err = status_error(403, "u", access="Civitai model 1 is in early access", not_found="nf", other="o")
    assert isinstance(err, RemoteAccessError) and str(err) == "Civitai model 1 is in early access"
    assert str(status_error(404, "u", access="a", not_found="nf")) == "nf"
    retry = status_error(503, "u", other="Hugging Face answered 503")
    assert isinstance(retry, RetryableHTTPError) and str(retry) == "Hugging Face answered 503"


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_hf_civitai_and_the_download_engine_map_a_status_alike(hub: FakeHub, status: int) -> None:
    """The same answer from the same server is the same error class whichever client met it."""
    url = hub.add_file(f"files/s{status}.bin", b"data")
    for path in (f"/files/s{status}.bin", "/api/models/org/ua", "/api/v1/model-versions/55"):
        hub.faults(path, status=status, status_times=0)
    try:
        resp = open_url(url, policy=LOCAL)
        try:
            with pytest.raises(DownloadError) as engine:
                check_status(resp, redact_url(url))
        finally:
            resp.close()
        with HuggingFaceClient(hub.url, use_cached_login=False, retries=0) as hf, pytest.raises(DownloadError) as h:
            hf.model_info("org/ua")
        with CivitaiClient(hub.url, retries=0) as cv, pytest.raises(DownloadError) as c:
            cv.get_version(55, with_model=False)
    finally:
        hub.clear_faults()
    assert type(engine.value) is type(h.value) is type(c.value) is EXPECTED[status]
    assert "Hugging Face" in str(h.value) and "Civitai" in str(c.value)


# -- waiting ---------------------------------------------------------------------------------------


def test_retry_statuses_are_one_set() -> None:
    from modeldepot.download import _http as engine

    assert {408, 429, 500, 502, 503, 504} == RETRY_STATUSES
    assert not hasattr(engine, "RETRYABLE_STATUSES")
    assert engine.RetryableHTTPError is RetryableHTTPError


def test_retry_after_parsing_and_cap() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after("-1") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(later) or 0) <= 30
    assert retry_after_seconds("2", attempt=5) == 2.0
    assert retry_after_seconds("3600", attempt=0) == MAX_RETRY_AFTER
    assert retry_after_seconds(None, attempt=0) == 0.25 and retry_after_seconds("junk", attempt=2) == 1.0
    assert retry_after_seconds(None, attempt=30) == MAX_RETRY_AFTER
    assert backoff_seconds(3, None, base=0.02, cap=0.5) == pytest.approx(0.16)
    assert backoff_seconds(0, 7.0, cap=0.5) == 0.5


# -- one redaction ---------------------------------------------------------------------------------


def test_one_redact_url_everywhere() -> None:
    from modeldepot.download import _redact
    from modeldepot.remote import _http as remote_http

    assert _redact.redact_url is redact_url and remote_http.redact_url is redact_url
    shown = redact_url("https://user:pw@h.example/a/b?token=SECRET&v=1&X-Amz-Signature=SIG#frag")
    assert shown == "https://user:***@h.example/a/b?token=***&v=1&X-Amz-Signature=***"


def test_redact_url_accepts_an_httpx_url() -> None:
    import httpx

    assert redact_url(httpx.URL("https://h.example/x?api_key=k&page=2")) == "https://h.example/x?api_key=***&page=2"


def test_the_module_is_stdlib_only() -> None:
    probe = "import sys, modeldepot._http, modeldepot._tokens; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_exports() -> None:
    for name in _http.__all__:
        assert hasattr(_http, name), name
