"""The demo (fakehub + tiny models + settings), serve's building blocks, and the package's exports."""

from __future__ import annotations

import logging
import shlex
import socket
from pathlib import Path

import httpx
import pytest
from _api_helpers import install
from fastapi.testclient import TestClient

import modeldepot.api as api
from modeldepot.api._security import RedactSecretsFilter
from modeldepot.api.demo import start_demo
from modeldepot.api.serve import build_app
from modeldepot.config import DepotConfig
from modeldepot.errors import ConfigurationError, NotAllowedError
from modeldepot.manager import ModelManager


def test_demo_sources_install_end_to_end(tmp_path: Path) -> None:
    demo = start_demo(tmp_path / "home", speed_limit_bps=50_000_000)
    try:
        assert demo.config.allow_private_urls and demo.config.hf_endpoint == demo.hub.url
        assert [s.source.split(":")[0].split("/")[0] for s in demo.sources] == ["demo", "demo", "demo", "civitai"]
        with ModelManager(demo.config) as mm, TestClient(build_app(demo.config, "127.0.0.1", manager=mm)) as c:
            c.headers["Host"] = "127.0.0.1"
            got = {}
            for s in demo.sources:
                cfg = install(c, s.source)["config_out"]
                got[s.source] = (cfg["type"], cfg["base"])
            thumb = cfg["thumbnail_url"]  # the Civitai model, installed last, has an image
            assert thumb and thumb.startswith(demo.hub.url)
            assert httpx.get(thumb).content.startswith(b"\x89PNG")
    finally:
        demo.close()
    assert list(got.values()) == [
        ("main", "sd-1"),
        ("lora", "sdxl"),
        ("vae", "sdxl"),
        ("spandrel_image_to_image", "any"),
    ]


def test_build_app_applies_the_bind_rule(tmp_path: Path) -> None:
    config = DepotConfig.load(home=tmp_path / "d")
    with pytest.raises(NotAllowedError):
        build_app(config, "0.0.0.0")
    keyed = DepotConfig.load(home=tmp_path / "d", api_key="k")
    app = build_app(keyed, "0.0.0.0")
    with TestClient(app) as c:
        assert c.get("/api/v2/models/").status_code == 401
        assert c.get("/api/v2/models/", headers={"X-API-Key": "k"}).status_code == 200
    local = build_app(config, "127.0.0.1")
    with TestClient(local, base_url="http://localhost:9090") as c:
        assert c.get("/api/v2/models/").status_code == 200
        assert c.get("/api/v2/models/", headers={"Host": "attacker.example"}).status_code == 403


def test_access_log_redacts_tokens_and_keys() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/api/v2/models/install?source=a/b&access_token=hf_xyz&api_key=k1", "1.1", 201),
        None,
    )  # fmt: skip
    assert RedactSecretsFilter().filter(record)
    line = record.getMessage()
    assert "hf_xyz" not in line and "k1" not in line and "source=a/b" in line and "access_token=***" in line


def test_public_names() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None
    assert {"create_app", "serve", "run_demo", "check_bind"} <= set(api.__all__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_demo_settings_point_a_plain_config_at_the_hub(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "modeldepot.yaml").write_text("max_parallel_downloads: 3\n")
    port = _free_port()
    demo = start_demo(home, hub_port=port, speed_limit_bps=50_000_000)
    try:
        assert demo.hub.url == f"http://127.0.0.1:{port}"
        assert demo.settings == {
            "MODELDEPOT_HOME": str(home.resolve()),
            "MODELDEPOT_HF_ENDPOINT": demo.hub.url,
            "MODELDEPOT_CIVITAI_ENDPOINT": demo.hub.url,
            "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
        }
        line = demo.export_line()
        assert line.startswith("export ") and shlex.split(line)[1:] == [f"{k}={v}" for k, v in demo.settings.items()]
        demo.save_settings()
        # What another terminal gets with only MODELDEPOT_HOME set: the hub, and the user's own settings.
        plain = DepotConfig.load(home=home)
        assert (plain.hf_endpoint, plain.civitai_endpoint, plain.allow_private_urls) == (demo.hub.url,) * 2 + (True,)
        assert plain.max_parallel_downloads == 3
        with ModelManager(plain) as mm:
            job = mm.install.heuristic_import(demo.sources[1].source)
            mm.install.wait_for_job(job, timeout=120)
            assert job.status == "completed", job.error
        demo.restore_settings()
        assert (home / "modeldepot.yaml").read_text() == "max_parallel_downloads: 3\n"
    finally:
        demo.close()


def test_demo_hub_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigurationError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            start_demo(tmp_path / "home", hub_port=busy.getsockname()[1])
