"""/api/v2/models/install: jobs from start to end, control (cancel, pause, resume), prune, overrides."""

from __future__ import annotations

import threading
import time

from _api_helpers import Sources, install, wait_job
from fastapi.testclient import TestClient

from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub


def test_install_returns_201_with_job_and_completes(client: TestClient, mm: ModelManager, sources: Sources) -> None:
    r = client.post("/api/v2/models/install", params={"source": sources.pipeline})
    assert r.status_code == 201
    job = r.json()
    assert job["source"] == sources.pipeline and job["status"] in ("waiting", "downloading")
    done = wait_job(client.get, job["id"])
    assert done["status"] == "completed" and done["bytes"] == done["total_bytes"] > 0
    cfg = done["config_out"]
    assert cfg["type"] == "main" and cfg["format"] == "diffusers" and cfg["source"] == sources.pipeline
    assert [j["id"] for j in client.get("/api/v2/models/install").json()] == [job["id"]]
    assert client.get("/api/v2/models/", params={"name": "tiny-sd"}).json()["total"] == 1


def test_install_with_overrides_body(client: TestClient, sources: Sources) -> None:
    r = client.post(
        "/api/v2/models/install",
        params={"source": sources.lora},
        json={"name": "My LoRA", "tags": ["mine"], "description": "hello"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["config_in"] == {"name": "My LoRA", "tags": ["mine"], "description": "hello"}
    cfg = wait_job(client.get, r.json()["id"])["config_out"]
    assert cfg["name"] == "My LoRA" and cfg["tags"] == ["mine"] and cfg["description"] == "hello"


def test_install_rejects_bad_sources(client: TestClient) -> None:
    r = client.post("/api/v2/models/install", params={"source": "not a source !!"})
    assert r.status_code == 400 and r.json()["error"] == "InvalidSourceError"
    assert client.post("/api/v2/models/install").status_code == 422
    r = client.post("/api/v2/models/install", params={"source": "org/x"}, json={"bogus": 1})
    assert r.status_code == 422


def test_install_of_missing_repo_ends_in_error(client: TestClient) -> None:
    r = client.post("/api/v2/models/install", params={"source": "org/not-there"})
    assert r.status_code == 201
    job = wait_job(client.get, r.json()["id"])
    assert job["status"] == "error" and job["error_type"] and job["error"]


def test_unknown_job_is_404(client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/v2/models/install/999"),
        ("DELETE", "/api/v2/models/install/999"),
        ("POST", "/api/v2/models/install/999/pause"),
        ("POST", "/api/v2/models/install/999/resume"),
    ):
        r = client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"] == "UnknownJobIDException"
    assert client.get("/api/v2/models/install/abc").status_code == 422


def test_pause_resume_cancel_and_prune(client: TestClient, mm: ModelManager, hub: FakeHub, sources: Sources) -> None:
    hub.faults("/cdn/*", speed_limit_bps=400_000)  # ~10 s for the pipeline: time to act on it
    downloading = threading.Event()
    job = client.post("/api/v2/models/install", params={"source": sources.pipeline}).json()

    def poll() -> None:
        while not downloading.is_set():
            j = client.get(f"/api/v2/models/install/{job['id']}").json()
            if j["status"] == "downloading" and j["bytes"] > 0:
                downloading.set()
                return
            threading.Event().wait(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    assert downloading.wait(20), "the download never started"
    poller.join()
    r = client.post(f"/api/v2/models/install/{job['id']}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    # Pausing is asynchronous: wait until no file is still transferring before resuming.
    settle = time.monotonic() + 20
    while any(d.status.value == "running" for d in mm.downloads.list_jobs()):
        assert time.monotonic() < settle, "the downloads never paused"
        threading.Event().wait(0.05)
    hub.clear_faults()
    r = client.post(f"/api/v2/models/install/{job['id']}/resume")
    assert r.status_code == 200 and r.json()["status"] in ("downloading", "downloads_done", "running", "completed")
    assert wait_job(client.get, job["id"])["status"] == "completed"

    hub.faults("/cdn/*", speed_limit_bps=100_000)
    slow = client.post("/api/v2/models/install", params={"source": sources.lora}).json()
    r = client.delete(f"/api/v2/models/install/{slow['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.get(f"/api/v2/models/install/{slow['id']}").json()["status"] == "cancelled"
    assert client.get("/api/v2/models/", params={"name": "tiny-lora"}).json()["total"] == 0

    r = client.delete("/api/v2/models/install")
    assert r.status_code == 200 and sorted(r.json()["pruned"]) == sorted([job["id"], slow["id"]])
    assert client.get("/api/v2/models/install").json() == []


def test_installing_twice_returns_the_existing_model(client: TestClient, sources: Sources) -> None:
    first = install(client, sources.lora)["config_out"]["key"]
    again = install(client, sources.lora)
    assert again["config_out"]["key"] == first
    assert client.get("/api/v2/models/").json()["total"] == 1
