"""/api/v2/reference: list, one entry, and background downloads from fakehub with progress."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import JOB_TIMEOUT
from fastapi.testclient import TestClient

from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager
from modeldepot.testing.factories import write_esrgan
from modeldepot.testing.fakehub import FakeHub


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_esrgan(tmp_path_factory.mktemp("esrgan") / "up.pth", nf=8, gc=4, num_blocks=1).read_bytes()


@pytest.fixture
def reference(tmp_path: Path, hub: FakeHub, upscaler: bytes) -> Path:
    url = hub.add_file("plain/up.pth", upscaler)
    good = hashlib.sha256(upscaler).hexdigest()

    def entry(name: str, file: str, sha: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "realesrgan",
            "config": {
                "files": [{"path": file, "sha256sum": sha}],
                "download": [{"file_name": file, "file_path": "", "file_url": url}],
            },
            **extra,
        }

    data = {
        "tiny_up": entry("tiny_up", "tiny_up.pth", good, size_on_disk_bytes=len(upscaler), description="tiny"),
        "x4/slash": entry("x4/slash", "slash.pth", good),  # keys may hold "/" (ViT-L/14)
        "bad_sha": entry("bad_sha", "bad.pth", "f" * 64),
    }
    path = tmp_path / "esrgan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def nataili(tmp_path: Path) -> Path:
    return tmp_path / "nataili"


@pytest.fixture
def client(mm: ModelManager, reference: Path, nataili: Path) -> Iterator[TestClient]:
    app = create_app(mm, references={"esrgan": reference}, nataili_cache_home=nataili)
    with TestClient(app) as c:
        yield c


def _wait_download(client: TestClient, service: str, key: str) -> dict[str, Any]:
    """Poll the entry until its download ends, as the page does."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        item: dict[str, Any] = client.get(f"/api/v2/reference/{service}/{key}").json()
        if item["download"]["status"] in ("completed", "error"):
            return item
        threading.Event().wait(0.05)
    raise AssertionError(f"download of {service}/{key} did not end within {JOB_TIMEOUT} s: {item}")


def test_list_every_service_and_filter(client: TestClient) -> None:
    r = client.get("/api/v2/reference")
    assert r.status_code == 200
    items = r.json()
    services = {i["service"] for i in items}
    assert {"compvis", "diffusers", "clip", "esrgan", "controlnet"} <= services
    esrgan = {i["key"]: i for i in items if i["service"] == "esrgan"}
    assert set(esrgan) == {"tiny_up", "x4/slash", "bad_sha"}  # the test reference replaced the shipped one
    tiny = esrgan["tiny_up"]
    assert tiny["available"] is False and tiny["record_key"] is None and tiny["description"] == "tiny"
    assert tiny["download"] == {"status": "idle", "bytes": 0, "total_bytes": 0, "error": None}
    assert [i["key"] for i in client.get("/api/v2/reference", params={"service": "esrgan"}).json()] == [
        "tiny_up",
        "x4/slash",
        "bad_sha",
    ]
    assert client.get("/api/v2/reference", params={"service": "esrgan", "available": True}).json() == []
    # The shipped references answer too: a key two services know is listed under each.
    both = [i["service"] for i in items if i["key"] == "stable_diffusion_inpainting"]
    assert sorted(both) == ["compvis", "diffusers"]


def test_download_runs_in_background_and_makes_it_available(client: TestClient, nataili: Path, upscaler: bytes) -> None:
    r = client.post("/api/v2/reference/esrgan/tiny_up/download")
    assert r.status_code == 202
    assert r.json()["key"] == "tiny_up" and r.json()["download"]["status"] in ("running", "completed")
    item = _wait_download(client, "esrgan", "tiny_up")
    assert item["download"] == {
        "status": "completed",
        "bytes": len(upscaler),
        "total_bytes": len(upscaler),
        "error": None,
    }
    assert item["available"] is True and item["record_key"]
    assert (nataili / "esrgan" / "tiny_up.pth").read_bytes() == upscaler
    assert item["files"] == [
        {
            "path": "tiny_up.pth",
            "location": str(nataili / "esrgan" / "tiny_up.pth"),
            "present": True,
            "sha256sum": hashlib.sha256(upscaler).hexdigest(),
            "md5sum": None,
        }
    ]
    assert item["entry"]["config"]["files"][0]["path"] == "tiny_up.pth"
    record = client.get(f"/api/v2/models/i/{item['record_key']}").json()
    assert {"nataili", "service:esrgan", "reference:tiny_up"} <= set(record["tags"])
    listed = client.get("/api/v2/reference", params={"service": "esrgan", "available": True}).json()
    assert [i["key"] for i in listed] == ["tiny_up"]


def test_a_second_post_while_running_returns_the_same_download(client: TestClient, hub: FakeHub) -> None:
    hub.faults("/plain/*", speed_limit_bps=100_000)  # ~0.4 s: the second POST lands while it runs
    first = client.post("/api/v2/reference/esrgan/tiny_up/download").json()
    second = client.post("/api/v2/reference/esrgan/tiny_up/download").json()
    assert first["download"]["status"] == "running"
    assert second["download"]["status"] in ("running", "completed")
    _wait_download(client, "esrgan", "tiny_up")
    started = [j for j in client.app.state.manager.downloads.list_jobs() if j.source.endswith("/plain/up.pth")]
    assert len(started) == 1  # one download, not two


def test_key_with_a_slash(client: TestClient) -> None:
    assert client.get("/api/v2/reference/esrgan/x4/slash").json()["name"] == "x4/slash"
    assert client.post("/api/v2/reference/esrgan/x4/slash/download").status_code == 202
    assert _wait_download(client, "esrgan", "x4/slash")["available"] is True


def test_a_wrong_sha256_ends_in_error_and_stays_unavailable(client: TestClient) -> None:
    assert client.post("/api/v2/reference/esrgan/bad_sha/download").status_code == 202
    item = _wait_download(client, "esrgan", "bad_sha")
    assert item["download"]["status"] == "error" and item["available"] is False
    assert "bad_sha" in item["download"]["error"] and "f" * 64 in item["download"]["error"]


def test_unknown_service_or_key_is_404_json(client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/v2/reference/nope/tiny_up"),
        ("GET", "/api/v2/reference/esrgan/nope"),
        ("POST", "/api/v2/reference/esrgan/nope/download"),
        ("POST", "/api/v2/reference/nope/tiny_up/download"),
        ("POST", "/api/v2/reference/esrgan/tiny_up"),
    ):
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "UnknownModelException" and r.json()["detail"], r.json()
    r = client.get("/api/v2/reference", params={"service": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
