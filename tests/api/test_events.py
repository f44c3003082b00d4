"""/api/v2/events over a real server: live install progress, filters, and no token anywhere."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
from _api_helpers import GATED_TOKEN, STARTUP_TIMEOUT, LiveServer, Sources, SSEReader, wait_job
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub


def test_sse_delivers_install_progress_live(live: LiveServer, hub: FakeHub, sources: Sources) -> None:
    hub.faults("/cdn/*", speed_limit_bps=4_000_000)  # about a second: several progress events
    reader = SSEReader(f"{live.url}/api/v2/events").start()
    try:
        with httpx.Client(base_url=live.url) as c:
            job = c.post("/api/v2/models/install", params={"source": sources.pipeline}).json()
            _, data, arrived = reader.wait_for("model_install_downloading")
            progress = json.loads(data)
            assert progress["id"] == job["id"] and progress["event"] == "model_install_downloading"
            assert 0 <= progress["bytes"] <= progress["total_bytes"] and "parts" in progress and "speed" in progress
            # Live: a progress event arrived while the job was still downloading.
            assert not c.get(f"/api/v2/models/install/{job['id']}").json()["in_terminal_state"]
            _, done, done_at = reader.wait_for("model_install_completed")
            assert done_at >= arrived
            payload = json.loads(done)
            assert payload["key"] and payload["bytes"] == payload["total_bytes"]
        names = [e[0] for e in reader.events]
        assert names.index("model_install_waiting") < names.index("model_install_downloading")
        assert names.index("model_install_downloading") < names.index("model_install_completed")
        assert sum(n == "model_install_downloading" for n in names) >= 2
        assert any(n.startswith("download_") for n in names)
    finally:
        reader.close()


def test_sse_names_filter(live: LiveServer, mm: ModelManager) -> None:
    reader = SSEReader(f"{live.url}/api/v2/events?names=model_load_,custom_b").start()
    try:
        mm.events.emit("custom_a", n=1)
        mm.events.emit("custom_b", n=2)
        mm.events.emit("model_load_started", key="k")
        reader.wait_for("model_load_started")
        assert [e[0] for e in reader.events] == ["custom_b", "model_load_started"]
        assert json.loads(reader.events[0][1]) == {
            "event": "custom_b",
            "timestamp": json.loads(reader.events[0][1])["timestamp"],
            "n": 2,
        }
    finally:
        reader.close()


def test_access_token_never_appears_in_responses_events_or_files(
    live: LiveServer, mm: ModelManager, hub: FakeHub, sources: Sources, tmp_path: Path
) -> None:
    reader = SSEReader(f"{live.url}/api/v2/events").start()
    bodies: list[str] = []
    try:
        with httpx.Client(base_url=live.url) as c:
            # Without the token the gated repo refuses.
            r = c.post("/api/v2/models/install", params={"source": sources.gated_vae})
            bodies.append(r.text)
            failed = wait_job(c.get, r.json()["id"])
            assert failed["status"] == "error", failed
            c.delete("/api/v2/models/install")

            r = c.post("/api/v2/models/install", params={"source": sources.gated_vae, "access_token": GATED_TOKEN})
            bodies.append(r.text)
            assert r.status_code == 201
            job = wait_job(c.get, r.json()["id"])
            assert job["status"] == "completed", job
            key = job["config_out"]["key"]
            reader.wait_for("model_install_completed")
            for path in (
                f"/api/v2/models/install/{job['id']}",
                "/api/v2/models/install",
                "/api/v2/models/",
                f"/api/v2/models/i/{key}",
                f"/api/v2/models/i/{key}/files",
                "/api/v2/storage/du",
                "/openapi.json",
            ):
                r = c.get(path)
                assert r.status_code == 200, path
                bodies.append(r.text)
            bodies.append(c.delete(f"/api/v2/models/install/{job['id']}").text)
    finally:
        reader.close()
    stream = "\n".join(reader.raw)
    assert "model_install_completed" in stream and "download_" in stream
    for text in [*bodies, stream]:
        assert GATED_TOKEN not in text
    # Nor on disk: database, job records, staging, settings.
    for f in mm.config.home.rglob("*"):
        if f.is_file():
            assert GATED_TOKEN.encode() not in f.read_bytes(), f


def test_stopping_the_server_ends_open_streams_cleanly(app: FastAPI) -> None:
    """Shutdown ends each stream with a complete response; before, uvicorn cut it mid-body."""
    server = LiveServer(app).start()
    outcome: dict[str, object] = {}
    opened = threading.Event()

    def read() -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(60, read=None)) as client,
                client.stream("GET", f"{server.url}/api/v2/events") as r,
            ):
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        opened.set()
            outcome["ended"] = "cleanly"
        except httpx.HTTPError as exc:  # e.g. RemoteProtocolError: the body was cut off
            outcome["ended"] = repr(exc)
        finally:
            opened.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert opened.wait(STARTUP_TIMEOUT), "the stream did not open"
        assert "ended" not in outcome, outcome
    finally:
        server.stop()  # asserts the server thread ended
    reader.join(STARTUP_TIMEOUT)
    assert outcome.get("ended") == "cleanly", outcome
    assert app.state.event_streams.closed


def test_a_stream_opened_after_shutdown_ends_at_once(client: TestClient, app: FastAPI) -> None:
    app.state.event_streams.close()
    with client.stream("GET", "/api/v2/events") as r:
        assert r.status_code == 200
        body = b"".join(r.iter_bytes())  # returns: the stream ended by itself
    assert body.startswith(b"retry:") and b": connected" in body
