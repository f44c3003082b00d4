"""Run ``python -m modeldepot`` as separate processes, sharing one home, and poll what they did.

Output goes to files, never pipes, so a process that prints a lot can never block on a full pipe
while the test is busy elsewhere. Every wait has a deadline sized for a loaded 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

#: One CLI process, start to finish, on a loaded 2-core machine.
PROCESS_TIMEOUT = 180.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modeldepot", *args]


def cli_env(hub_url: str, **settings: str) -> dict[str, str]:
    """The environment of a user whose endpoints are the fakehub (os.environ is already clean).

    ``settings`` are extra ``MODELDEPOT_<FIELD>`` values, e.g. ``DB=postgresql://...``.
    """
    env = {
        **os.environ,
        "MODELDEPOT_HF_ENDPOINT": hub_url,
        "MODELDEPOT_CIVITAI_ENDPOINT": hub_url,
        "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
        "MODELDEPOT_LINK_MODES": "hardlink,copy",
    }
    env.update({f"MODELDEPOT_{k.upper()}": v for k, v in settings.items()})
    return env


def run(
    env: Mapping[str, str], home: Path, *args: str, timeout: float = PROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run one command to its end (``--home`` added)."""
    return subprocess.run(
        cli(*args, "--home", str(home)), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def run_json(env: Mapping[str, str], home: Path, *args: str) -> Any:
    """Run a ``--json`` command that must succeed; its parsed output."""
    r = run(env, home, *args, "--json")
    assert r.returncode == 0, f"`modeldepot {' '.join(args)} --json` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


class Spawned:
    """A CLI process started in the background; stdout/stderr go to files in ``folder``."""

    def __init__(self, env: Mapping[str, str], home: Path, folder: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(cli(*args, "--home", str(home)), env=dict(env), stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """The exit code; a process still running after ``timeout`` is killed and reported."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self} still running after {timeout} s; killed\n{self.describe()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)

    def describe(self) -> str:
        return f"{self}: exit {self.proc.returncode}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"

    def __str__(self) -> str:
        return f"pid {self.proc.pid} `modeldepot {' '.join(self.args)}`"


def kill_all(procs: Iterable[Spawned]) -> None:
    for p in procs:
        p.kill()


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, watch: Iterable[Spawned] = (), poll: float = 0.1
) -> Any:
    """Poll ``condition`` until it is truthy (returned); fail at the deadline or when a watched
    process ends first (it was meant to be still running)."""
    deadline = time.monotonic() + timeout
    watch = list(watch)
    while True:
        value = condition()
        if value:
            return value
        for p in watch:
            if not p.running():
                raise AssertionError(f"process ended before {what}:\n{p.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(poll)


class Looper:
    """Runs each command in ``commands`` in turn, again and again, until ``stop()``; keeps every
    result, so a test can assert that each run exited 0 (a reader beside the writers)."""

    def __init__(self, env: Mapping[str, str], home: Path, commands: list[tuple[str, ...]]) -> None:
        self.results: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(dict(env), home, commands), daemon=True)
        self._thread.start()

    def _loop(self, env: dict[str, str], home: Path, commands: list[tuple[str, ...]]) -> None:
        while not self._stop.is_set():
            for args in commands:
                try:
                    r = run(env, home, *args)
                except subprocess.TimeoutExpired as exc:
                    self.failures.append(f"`modeldepot {' '.join(args)}` timed out: {exc}")
                    continue
                self.results.append((args, r))
                if r.returncode != 0:
                    self.failures.append(
                        f"`modeldepot {' '.join(args)}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
                    )
                elif "--json" in args:
                    try:
                        json.loads(r.stdout)
                    except ValueError:
                        self.failures.append(f"`modeldepot {' '.join(args)}` printed no JSON:\n{r.stdout}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=PROCESS_TIMEOUT + 30)
        assert not self._thread.is_alive(), "the doctor/jobs loop did not stop"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def duplicate_blobs(home: Path) -> dict[str, list[str]]:
    """Files under ``home/blobs`` holding the same bytes as another one there (sha256 -> names)."""
    by_content: dict[str, list[str]] = {}
    blobs = home / "blobs"
    if blobs.is_dir():
        for p in sorted(blobs.rglob("*")):
            if p.is_file() and not p.is_symlink() and p.parent.name == p.name[:2]:  # blobs/ab/abcd...
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                by_content.setdefault(digest, []).append(p.relative_to(blobs).as_posix())
    return {d: names for d, names in by_content.items() if len(names) > 1}
