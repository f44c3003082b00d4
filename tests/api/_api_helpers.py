"""Helpers shared by the API tests (imported as a top-level module by pytest's rootdir-less layout)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modeldepot.api.serve import make_server

GATED_TOKEN = "hf_gatedSECRET_7f3a9c21d4"
#: Generous bounds for a loaded 2-core machine: waits end as soon as their condition holds.
STARTUP_TIMEOUT = 120.0
JOB_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sources:
    pipeline: str = "org/tiny-sd"
    lora: str = "org/tiny-lora::tiny-lora.safetensors"
    gated_vae: str = "org/gated-vae::vae.safetensors"


def wait_job(get: Callable[[str], Any], job_id: int, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    """Poll a job through the API until it ends (the API has no blocking wait, a client polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = get(f"/api/v2/models/install/{job_id}").json()
        if job["in_terminal_state"]:
            return job
        threading.Event().wait(0.05)
    raise AssertionError(f"install job {job_id} did not finish within {timeout} s: {job}")


def install(client: TestClient, source: str, **params: Any) -> dict[str, Any]:
    r = client.post("/api/v2/models/install", params={"source": source, **params})
    assert r.status_code == 201, r.text
    job = wait_job(client.get, r.json()["id"])
    assert job["status"] == "completed", job
    return job


class LiveServer:
    """A real uvicorn server on 127.0.0.1 in a thread (TestClient does not stream SSE)."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.server = make_server(app, "127.0.0.1", port, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, name="api-live-server", daemon=True)
        self.url = ""
        self.port = port

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"


class SSEReader:
    """Reads an SSE stream in a thread; ``wait_for(name)`` blocks until that event arrived."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.raw: list[str] = []
        self.events: list[tuple[str, str, float]] = []  # (name, data, arrival monotonic time)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._client = httpx.Client(timeout=httpx.Timeout(60, read=None))
        self.status = 0
        self._sock: socket.socket | None = None

    def start(self) -> SSEReader:
        self._thread.start()
        if not self._connected.wait(STARTUP_TIMEOUT):
            raise RuntimeError("SSE stream did not open")
        return self

    def _run(self) -> None:
        try:
            self._read()
        except (httpx.HTTPError, RuntimeError, OSError):
            if not self._stop.is_set():
                raise

    def _read(self) -> None:
        with self._client.stream("GET", self.url, headers=self.headers) as r:
            self.status = r.status_code
            self._sock = r.extensions["network_stream"].get_extra_info("socket")
            name, data = "message", []
            for line in r.iter_lines():
                self.raw.append(line)
                if line.startswith(": connected"):
                    self._connected.set()
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    with self._cond:
                        self.events.append((name, "\n".join(data), time.monotonic()))
                        self._cond.notify_all()
                    name, data = "message", []

    def wait_for(self, name: str, timeout: float = JOB_TIMEOUT) -> tuple[str, str, float]:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(e[0] == name for e in self.events), timeout)
            if not ok:
                raise AssertionError(f"no {name} event within {timeout} s; got {[e[0] for e in self.events]}")
            return next(e for e in self.events if e[0] == name)

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            # Unblocks the reader's recv() at once (closing the client from here would not).
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=60)
        self._client.close()
