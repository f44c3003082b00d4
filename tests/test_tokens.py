"""modeldepot._tokens.resolve_token: explicit > remote_api_tokens (by host) > the HF cached login
(Hugging Face endpoint's host only), and every call site asks it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot._tokens import resolve_token
from modeldepot.config import DepotConfig
from modeldepot.download import DownloadQueueService
from modeldepot.remote import CivitaiClient, HuggingFaceClient, resolve_hf_token
from modeldepot.testing.fakehub import FakeHub

LOGIN = "hf_cached_LOGIN_42"
HF = "https://huggingface.co/org/m/resolve/main/w.safetensors"
CIVITAI = "https://civitai.com/api/download/models/1"


@pytest.fixture
def logged_in(monkeypatch: pytest.MonkeyPatch) -> str:
    """huggingface_hub's cached login (HF_TOKEN is one of the places ``get_token`` reads)."""
    monkeypatch.setenv("HF_TOKEN", LOGIN)
    return LOGIN


def _config(tmp_path: Path, **kw: object) -> DepotConfig:
    tokens = [{"host": "civitai.com", "token": "cv_cfg"}, {"host": "mirror.example", "token": "mirror_cfg"}]
    return DepotConfig(home=tmp_path, remote_api_tokens=tokens, **kw)


def test_explicit_beats_config_beats_login(tmp_path: Path, logged_in: str) -> None:
    cfg = _config(tmp_path)
    assert resolve_token(CIVITAI, explicit="mine", config=cfg) == "mine"
    assert resolve_token(CIVITAI, config=cfg) == "cv_cfg"
    assert resolve_token(HF, config=cfg) == logged_in
    cfg_hf = DepotConfig(home=tmp_path, remote_api_tokens=[{"host": "huggingface.co", "token": "hf_cfg"}])
    assert resolve_token(HF, config=cfg_hf) == "hf_cfg"
    assert resolve_token(HF, explicit="mine", config=cfg_hf) == "mine"


def test_config_tokens_stay_with_their_host(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert resolve_token("https://mirror.example/x.bin", config=cfg) == "mirror_cfg"
    assert resolve_token("https://elsewhere.example/x.bin", config=cfg) is None
    assert resolve_token("https://civitai.com.evil.example/x", config=cfg) is None


def test_the_cached_login_goes_to_the_hub_host_only(tmp_path: Path, logged_in: str) -> None:
    assert resolve_token(HF) == logged_in
    assert resolve_token("http://huggingface.co/x") is None  # another scheme is another server
    assert resolve_token("https://huggingface.co:8443/x") is None
    assert resolve_token(CIVITAI) is None
    assert resolve_token("https://evil.example/huggingface.co/x") is None
    mirror = DepotConfig(home=tmp_path, hf_endpoint="https://hf-mirror.example")
    assert resolve_token("https://hf-mirror.example/org/m/resolve/main/w", config=mirror) == logged_in
    assert resolve_token(HF, config=mirror) is None  # the login follows the configured endpoint
    assert resolve_token(HF, hf_endpoint="https://hf-mirror.example") is None
    assert resolve_token(HF, cached_login=False) is None


def test_no_login_no_token() -> None:
    assert resolve_token(HF) is None


def test_explicit_for_scopes_a_client_token(tmp_path: Path) -> None:
    assert resolve_token(HF, explicit="t", explicit_for="https://huggingface.co") == "t"
    assert resolve_token("https://cdn.example/x", explicit="t", explicit_for="https://huggingface.co") is None
    assert resolve_token("https://cdn.example/x", explicit="t") == "t"  # a job's own token goes to its URL
    assert resolve_token("https://bad:port/x", explicit="t", explicit_for="https://huggingface.co") is None


def test_call_sites_agree(tmp_path: Path, logged_in: str) -> None:
    cfg = _config(tmp_path)
    assert resolve_hf_token(HF, None, cfg) == resolve_token(HF, config=cfg) == logged_in
    assert resolve_hf_token(CIVITAI, "explicit", cfg) == "explicit"
    with HuggingFaceClient.from_config(cfg) as hf:
        assert hf.token_for(HF) == logged_in
        assert hf.token_for(CIVITAI) == "cv_cfg"
    with HuggingFaceClient.from_config(cfg, use_cached_login=False) as hf:
        assert hf.token_for(HF) is None
    with CivitaiClient.from_config(cfg, token="cv_explicit") as cv:
        assert cv.token_for(CIVITAI) == "cv_explicit"
        assert cv.token_for(HF) is None  # never the HF login, never its own token off-host
    with CivitaiClient("https://huggingface.co") as same_host:  # a Civitai client never asks huggingface_hub
        assert same_host.token_for(HF) is None


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


def _downloaded_with_auth(hub: FakeHub, cfg: DepotConfig, name: str, tmp_path: Path) -> bool:
    url = hub.add_file(f"files/{name}", b"x" * 100)
    queue = DownloadQueueService(1, config=cfg)
    queue.start()
    try:
        job = queue.download(url, tmp_path / name)
        queue.wait_for_job(job, timeout=60)
        assert job.complete, job.error
    finally:
        queue.stop()
    return f"/files/{name}" in hub.stats.authorized_paths


def test_the_download_queue_uses_the_same_rule(hub: FakeHub, tmp_path: Path, logged_in: str) -> None:
    trusted = [f"127.0.0.1:{hub.port}"]
    as_hub = DepotConfig(home=tmp_path / "a", trusted_hosts=trusted, hf_endpoint=hub.url)
    assert _downloaded_with_auth(hub, as_hub, "hub.bin", tmp_path)  # the hub's host: the login goes
    elsewhere = DepotConfig(home=tmp_path / "b", trusted_hosts=trusted)
    assert not _downloaded_with_auth(hub, elsewhere, "plain.bin", tmp_path)  # any other host: it does not
    scoped = DepotConfig(
        home=tmp_path / "c", trusted_hosts=trusted, remote_api_tokens=[{"host": f"127.0.0.1:{hub.port}", "token": "t"}]
    )
    assert _downloaded_with_auth(hub, scoped, "scoped.bin", tmp_path)
