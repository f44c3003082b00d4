"""``modeldepot serve`` / ``cache stats`` / ``demo`` as real processes, talked to over real HTTP."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

API_KEY = "k-7d2f91c0e4"
#: A loaded 2-core machine can take a minute to import and start a server: every wait below ends as
#: soon as its condition holds, so generous bounds cost nothing when things are quick.
STARTUP = 180.0
REQUEST = 60.0
# Each test starts several interpreters; under load that can pass the suite's 300 s default.
# Each test starts real server processes: slow on a loaded machine, so they run with `-m slow`.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modeldepot", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server:
    """A CLI process whose output goes to files (uvicorn's access log can never fill a pipe)."""

    def __init__(self, folder: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(_cli(*args), env=dict(os.environ), stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = STARTUP) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before {what}:\n{self.out}\n{self.err}")
            threading.Event().wait(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.out}\n{self.err}")

    def interrupt(self) -> int:
        """Ctrl-C; the process must end by itself (the bound only guards against a hang)."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=STARTUP)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STARTUP)


def _status(url: str, **kwargs: Any) -> int | None:
    try:
        return httpx.get(url, timeout=REQUEST, **kwargs).status_code
    except httpx.HTTPError:
        return None


def _assert_clean_stop(server: _Server, code: int) -> None:
    # uvicorn re-raises the captured SIGINT once shut down, so 130 (or 0) is a clean Ctrl-C.
    assert code in (0, 130), (code, server.err)
    assert "Application shutdown complete" in server.err, server.err
    assert "Traceback" not in server.err, server.err


def test_serve_then_cache_stats(home: Path, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _Server(tmp_path / "serve", "serve", "--port", str(port), "--home", str(home))
    try:
        server.wait_until(lambda: _status(f"{base}/api/v2/models/") == 200, "the API to answer")
        assert httpx.get(f"{base}/api/v2/models/").json()["models"] == []
        r = subprocess.run(
            _cli("cache", "stats", "--url", base), env=dict(os.environ), capture_output=True, text=True, timeout=STARTUP
        )
        assert r.returncode == 0, r.stderr
        stats = json.loads(r.stdout)
        assert stats["hits"] == 0 and stats["misses"] == 0
        assert {"evictions", "ram_bytes", "ram_budget"} <= set(stats)
        code = server.interrupt()
    finally:
        server.kill()
    _assert_clean_stop(server, code)
    assert (home / "databases" / "modeldepot.db").is_file()  # it served the home it was given
    assert _status(f"{base}/api/v2/models/") is None


def test_cache_stats_without_a_server_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    r = subprocess.run(_cli("cache", "stats", "--url", url), capture_output=True, text=True, timeout=STARTUP)
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot reach the server at " + url), r.stderr
    assert "Traceback" not in r.stderr


def test_serve_beyond_loopback_needs_an_api_key(home: Path, tmp_path: Path) -> None:
    port = _free_port()
    refused = subprocess.run(
        _cli("serve", "--host", "0.0.0.0", "--port", str(port), "--home", str(home)),
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
    assert "0.0.0.0" in lines[0] and "API key" in lines[0]
    assert _status(f"http://127.0.0.1:{port}/api/v2/models/") is None  # it never bound

    base = f"http://127.0.0.1:{port}"
    keyed = {"X-API-Key": API_KEY}
    server = _Server(
        tmp_path / "serve", "serve", "--host", "0.0.0.0", "--port", str(port), "--api-key", API_KEY, "--home", str(home)
    )
    try:
        server.wait_until(lambda: _status(f"{base}/api/v2/models/", headers=keyed) == 200, "the API to answer")
        assert _status(f"{base}/api/v2/models/") == 401
        assert _status(f"{base}/api/v2/models/", headers={"X-API-Key": "wrong"}) == 401
        assert _status(f"{base}/api/v2/models/", headers={"Authorization": f"Bearer {API_KEY}"}) == 200
        stats = subprocess.run(
            _cli("cache", "stats", "--url", base, "--api-key", API_KEY), capture_output=True, text=True, timeout=STARTUP
        )
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["hits"] == 0
        denied = subprocess.run(_cli("cache", "stats", "--url", base), capture_output=True, text=True, timeout=STARTUP)
        assert denied.returncode == 1 and "401" in denied.stderr, denied.stderr
        code = server.interrupt()
    finally:
        server.kill()
    _assert_clean_stop(server, code)
    assert API_KEY not in server.out + server.err  # the key never lands in the logs


def _printed_sources(out: str) -> list[str]:
    """The source strings the demo lists between its two header lines and the Ctrl-C line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "install one of these sources" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("Ctrl-C stops the demo"))
    return [line.split()[0] for line in lines[start + 1 : end]]


def _wait_job(base: str, job_id: int, timeout: float = STARTUP) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v2/models/install/{job_id}", timeout=REQUEST).json()
        if job["in_terminal_state"]:
            return job
        threading.Event().wait(0.05)
    raise AssertionError(f"install job {job_id} did not end within {timeout} s: {job}")


def test_demo_serves_the_page_and_installs_a_printed_source(home: Path, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    demo = _Server(tmp_path / "demo", "demo", "--port", str(port), "--home", str(home))
    try:
        demo.wait_until(lambda: _status(f"{base}/") == 200, "the page to answer")
        page = httpx.get(f"{base}/", timeout=REQUEST)
        assert page.headers["content-type"].startswith("text/html")
        jobs = httpx.get(f"{base}/api/v2/models/install", timeout=REQUEST)
        assert jobs.status_code == 200 and jobs.json() == []

        sources = _printed_sources(demo.out)
        assert "demo/tiny-sd15" in sources and "civitai:4101" in sources and len(sources) == 4
        [vae] = [s for s in sources if s.startswith("demo/tiny-sdxl-vae")]
        r = httpx.post(f"{base}/api/v2/models/install", params={"source": vae}, timeout=REQUEST)
        assert r.status_code == 201, r.text
        job = _wait_job(base, r.json()["id"])
        assert job["status"] == "completed", job
        assert (job["config_out"]["type"], job["config_out"]["base"]) == ("vae", "sdxl")
        listed = httpx.get(f"{base}/api/v2/models/", timeout=REQUEST).json()["models"]
        assert [m["key"] for m in listed] == [job["config_out"]["key"]]
        assert Path(listed[0]["path"]).is_relative_to(home)  # the depot is the --home given
        code = demo.interrupt()
    finally:
        demo.kill()
    _assert_clean_stop(demo, code)
    assert _status(f"{base}/") is None


def test_serve_refuses_a_port_in_use(home: Path) -> None:
    host = "127.0.0.1"
    with socket.socket() as busy:
        busy.bind((host, 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            _cli("serve", "--host", host, "--port", str(port), "--home", str(home)),
            capture_output=True,
            text=True,
            timeout=STARTUP,
        )
    assert r.returncode != 0  # uvicorn's startup failure (3), not a hang
    assert "address already in use" in r.stderr.lower(), r.stderr


def test_ctrl_c_with_an_open_event_stream_stops_quietly(home: Path, tmp_path: Path) -> None:
    """A page left open holds /api/v2/events; Ctrl-C must still end serve cleanly, no traceback."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _Server(tmp_path / "serve", "serve", "--port", str(port), "--home", str(home))
    ended: dict[str, str] = {}
    opened = threading.Event()

    def listen() -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(REQUEST, read=None)) as client,
                client.stream("GET", f"{base}/api/v2/events") as r,
            ):
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        opened.set()
            ended["how"] = "the server ended the stream"
        except httpx.HTTPError as exc:
            ended["how"] = repr(exc)
        finally:
            opened.set()

    listener = threading.Thread(target=listen, daemon=True)
    try:
        server.wait_until(lambda: _status(f"{base}/api/v2/models/") == 200, "the API to answer")
        listener.start()
        assert opened.wait(STARTUP) and not ended, ended
        code = server.interrupt()
    finally:
        server.kill()
    listener.join(STARTUP)
    _assert_clean_stop(server, code)
    assert "CancelledError" not in server.err and "ERROR" not in server.err, server.err
    assert ended == {"how": "the server ended the stream"}


def test_demo_ports_and_settings_for_the_cli(home: Path, tmp_path: Path) -> None:
    """`demo --port --hub-port` prints the settings to use its hub, and saves them in its home."""
    port, hub_port = _free_port(), _free_port()
    demo_home = tmp_path / "demo-home"
    base = f"http://127.0.0.1:{port}"
    demo = _Server(
        tmp_path / "demo", "demo", "--port", str(port), "--hub-port", str(hub_port), "--home", str(demo_home)
    )
    try:
        demo.wait_until(lambda: _status(f"{base}/") == 200, "the page to answer")
        hub = f"http://127.0.0.1:{hub_port}"
        assert _status(f"{hub}/api/models/demo/tiny-sd15") == 200
        [export] = [line.strip() for line in demo.out.splitlines() if line.strip().startswith("export ")]
        settings = dict(item.split("=", 1) for item in shlex.split(export)[1:])
        assert settings == {
            "MODELDEPOT_HOME": str(demo_home.resolve()),
            "MODELDEPOT_HF_ENDPOINT": hub,
            "MODELDEPOT_CIVITAI_ENDPOINT": hub,
            "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
        }
        saved = yaml.safe_load((demo_home / "modeldepot.yaml").read_text())
        assert saved == {"hf_endpoint": hub, "civitai_endpoint": hub, "allow_private_urls": True}
        assert len(_printed_sources(demo.out)) == 4

        # Another terminal with only MODELDEPOT_HOME set installs from the demo hub.
        env = {**os.environ, "MODELDEPOT_HOME": str(demo_home)}
        source = "demo/tiny-sdxl-lora::tiny-sdxl-lora.safetensors"
        r = subprocess.run(_cli("install", source), env=env, capture_output=True, text=True, timeout=STARTUP)
        assert r.returncode == 0, r.stdout + r.stderr
        listed = httpx.get(f"{base}/api/v2/models/", timeout=REQUEST).json()["models"]
        assert [(m["name"], m["type"]) for m in listed] == [("tiny-sdxl-lora", "lora")]
        code = demo.interrupt()
    finally:
        demo.kill()
    _assert_clean_stop(demo, code)
    assert not (demo_home / "modeldepot.yaml").exists()  # the hub is gone: so are its settings
    assert _status(f"http://127.0.0.1:{hub_port}/api/models/demo/tiny-sd15") is None


def test_demo_and_fakehub_on_a_busy_port_say_so(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (
            ("demo", "--port", str(_free_port()), "--hub-port", port, "--home", str(tmp_path / "d")),
            ("fakehub", "--root", str(tmp_path / "root"), "--port", port),
        ):
            r = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=STARTUP)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert r.stderr.startswith("error: ") and f"127.0.0.1:{port}" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
