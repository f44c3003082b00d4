"""``modeldepot install`` as a user runs it: a real process, real HTTP to a FakeHub, Ctrl-C, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.testing.factories import write_diffusers_pipeline
from modeldepot.testing.fakehub import FakeHub

REPO = "org/tiny-sd"
SLOW_BPS = 100_000  # the 2 MB UNet alone takes ~20 s at this rate


@pytest.fixture(scope="module")
def pipeline_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = write_diffusers_pipeline(tmp_path_factory.mktemp("src") / "tiny-sd", base="sd-1")
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(pipeline_files: dict[str, Path]) -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo(REPO, pipeline_files)
        yield h


@pytest.fixture
def env(hub: FakeHub, home: Path) -> dict[str, str]:
    """The environment of a user whose settings point at the hub (os.environ is already clean)."""
    return {
        **os.environ,
        "MODELDEPOT_HF_ENDPOINT": hub.url,
        "MODELDEPOT_CIVITAI_ENDPOINT": hub.url,
        "MODELDEPOT_ALLOW_PRIVATE_URLS": "true",
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modeldepot", *args]


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=timeout)


class _Spawned:
    """A CLI process whose output goes to files (a full pipe can never block it)."""

    def __init__(self, env: dict[str, str], folder: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(_cli(*args), env=env, stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _wait_until(condition: Callable[[], Any], timeout: float, what: str, proc: _Spawned | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.proc.returncode}) before {what}:\n{proc.out}\n{proc.err}")
        threading.Event().wait(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _started_parts(home: Path) -> list[Path]:
    """``.part`` files under ``tmp/install/<id>/`` that already hold downloaded bytes.

    The part file is preallocated (zero-filled) at full size; a safetensors file starts with its
    8-byte header length, so non-zero leading bytes mean data has really been written.
    """
    staging = home / "tmp" / "install"
    found = []
    for part in staging.glob("*/**/*.part"):
        try:
            with open(part, "rb") as f:
                if f.read(8).strip(b"\0"):
                    found.append(part)
        except FileNotFoundError:
            pass
    return found


def _done_bytes(staging: Path) -> int:
    total = 0
    for state in staging.rglob("*.part.json"):
        total += sum(b - a for a, b in json.loads(state.read_text())["done"])
    return total


def _file_bytes(hub: FakeHub) -> int:
    """Bytes of file bodies the hub sent (API JSON excluded)."""
    return sum(n for path, n in hub.stats.bytes_sent_by_path.items() if not path.startswith("/api/"))


def _listed(env: dict[str, str], home: Path) -> list[dict[str, Any]]:
    r = _run(env, "list", "--json", "--home", str(home))
    assert r.returncode == 0, r.stderr
    records: list[dict[str, Any]] = json.loads(r.stdout)
    return records


@pytest.mark.slow
def test_install_hf_repo_in_a_subprocess(env: dict[str, str], home: Path) -> None:
    r = _run(env, "install", REPO, "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^installed tiny-sd \(sd-1/main/diffusers\) key [0-9a-f]{32}$", r.stdout, re.M), r.stdout
    [record] = _listed(env, home)
    want = {"name": "tiny-sd", "base": "sd-1", "type": "main", "format": "diffusers", "source": REPO}
    assert {k: record[k] for k in want} == want
    assert record["source_type"] == "hf_repo_id"
    assert (Path(record["path"]) / "model_index.json").is_file()
    assert record["key"] in r.stdout
    assert not any((home / "tmp" / "install").iterdir())  # the staging folder went with the install


@pytest.mark.slow
def test_install_prints_no_tracebacks(env: dict[str, str], home: Path) -> None:
    r = _run(env, "install", REPO, "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "failed on" not in r.stderr, r.stderr


@pytest.mark.slow
def test_ctrl_c_pauses_and_the_same_command_resumes(
    hub: FakeHub, env: dict[str, str], home: Path, tmp_path: Path, pipeline_files: dict[str, Path]
) -> None:
    repo_bytes = sum(p.stat().st_size for p in pipeline_files.values())
    hub.faults("*", speed_limit_bps=SLOW_BPS)
    first = _Spawned(env, tmp_path / "run1", "install", REPO, "--home", str(home))
    try:
        # A few hundred kB on the wire and bytes in a .part file: well into the download.
        _wait_until(
            lambda: (
                _started_parts(home)
                and sum(n for p, n in hub.stats.bytes_sent_by_path.items() if p.startswith("/cdn/")) >= 150_000
            ),
            timeout=30,
            what="a .part file holding downloaded bytes",
            proc=first,
        )
        first.proc.send_signal(signal.SIGINT)
        code = first.proc.wait(timeout=10)
    finally:
        first.kill()
    assert code == 130, first.err
    assert "paused" in first.err
    assert "installed" not in first.out

    [staging] = list((home / "tmp" / "install").iterdir())
    assert re.fullmatch(r"\d+-[0-9a-f]{8}", staging.name), staging.name  # per job and per owner
    parts = list(staging.rglob("*.part"))
    assert parts, list(staging.rglob("*"))
    assert not (staging / "unet" / "diffusion_pytorch_model.safetensors").exists()  # ~20 s of data at this rate
    done = _done_bytes(staging)
    assert 0 < done < repo_bytes
    assert _listed(env, home) == []

    hub.clear_faults()
    hub.stats.reset()
    r = _run(env, "install", REPO, "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert "installed tiny-sd" in r.stdout
    [record] = _listed(env, home)
    assert record["source"] == REPO and record["type"] == "main"
    assert not staging.exists()

    # The second run fetched what was missing, not the repo again.
    resent = _file_bytes(hub)
    assert resent < repo_bytes
    assert resent <= repo_bytes - done + 16 * 1024  # small files, redirect bodies
    resumed = [r for r in hub.stats.requests if r.path.startswith("/cdn/") and r.range]
    assert any(not r.range.startswith("bytes=0-") for r in resumed if r.range), resumed


@pytest.mark.slow
def test_no_wait_returns_at_once_with_the_job_id(hub: FakeHub, env: dict[str, str], home: Path) -> None:
    hub.faults("*", speed_limit_bps=SLOW_BPS)  # waiting would take ~20 s
    started = time.monotonic()
    r = _run(env, "install", REPO, "--no-wait", "--home", str(home), timeout=30)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    m = re.match(rf"job (\d+): {re.escape(REPO)} \(waiting\)\n", r.stdout)
    assert m, r.stdout
    # No server runs on this home: the command says what will run the job.
    assert "nothing runs these jobs until `modeldepot serve`" in " ".join(r.stdout.split()), r.stdout
    job_id = int(m.group(1))
    assert elapsed < 15, elapsed

    jobs = _run(env, "jobs", "--json", "--home", str(home))
    assert jobs.returncode == 0, jobs.stderr
    [row] = json.loads(jobs.stdout)
    assert row["id"] == job_id and row["source"] == REPO
    assert row["status"] not in ("completed", "error", "cancelled")

    # The same command again picks the recorded job up and finishes it.
    hub.clear_faults()
    done = _run(env, "install", REPO, "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert "installed tiny-sd" in done.stdout
    rows = json.loads(_run(env, "jobs", "--json", "--home", str(home)).stdout)
    assert [(row["id"], row["status"]) for row in rows] == [(job_id, "completed")]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_typo_repo_exits_1_naming_it(
    hub: FakeHub, home: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Any]
) -> None:
    monkeypatch.setenv("MODELDEPOT_HF_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    r = run("install", "org/tiny-sdd")
    assert r.code == 1
    [line] = _error_lines(r.err)
    assert "org/tiny-sdd" in line
    assert "not found" in r.err
    assert "installed" not in r.out
    assert run("list", "--json").json() == []


def test_typo_repo_error_is_one_line(
    hub: FakeHub, home: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Any]
) -> None:
    monkeypatch.setenv("MODELDEPOT_HF_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    r = run("install", "org/tiny-sdd")
    assert r.code == 1
    lines = r.err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    # The progress bar comes first; after the error line there is nothing (no wrapped remainder).
    assert [line for line in lines[at + 1 :] if line.strip()] == [], r.err


def test_nonsense_source_exits_1_naming_the_accepted_forms(home: Path, run: Callable[..., Any]) -> None:
    r = run("install", "::no such thing::")
    assert r.code == 1
    [line] = _error_lines(r.err)
    assert "'::no such thing::'" in line
    assert "Accepted forms" in r.err
    for form in ("org/name:fp16", "https://civitai.com/models/ID", "civitai:VERSION_ID", "local file or folder"):
        assert form in r.err, form
    assert "Traceback" not in r.err
    assert run("jobs", "--json").json() == []


def test_install_refuses_a_local_file_that_is_not_a_model(home: Path, tmp_path: Path, run: Callable[..., Any]) -> None:
    readme = tmp_path / "readme.txt"
    readme.write_text("# notes\n")
    r = run("install", str(readme))
    assert r.code == 1
    [line] = _error_lines(r.err)
    assert "readme.txt is not a model file" in line
    assert run("list", "--json").json() == []
    forced = run("install", str(readme), "--force")
    assert forced.code == 0, forced.err


def test_doctor_exits_1_on_problems_and_0_once_fixed(home: Path, tmp_path: Path, run: Callable[..., Any]) -> None:
    from modeldepot.testing import factories

    assert run("doctor").code == 0
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    assert run("register", str(lora)).code == 0
    lora.unlink()
    found = run("doctor")
    assert found.code == 1
    assert "missing" in found.out and "doctor --fix" in found.err
    fixed = run("doctor", "--fix")
    assert fixed.code == 0, fixed.err
    assert "forgotten" in fixed.out
    assert run("doctor").code == 0


def test_cancel_of_a_finished_job_says_so_and_exits_1(home: Path, tmp_path: Path, run: Callable[..., Any]) -> None:
    from modeldepot.testing import factories

    vae = factories.write_vae(tmp_path / "vae.safetensors")
    assert run("install", str(vae)).code == 0
    [job] = run("jobs", "--json").json()
    r = run("cancel", str(job["id"]))
    assert r.code == 1
    [line] = _error_lines(r.err)
    assert f"job {job['id']} already completed" in line
    assert "cancelled" not in r.out
    assert run("jobs", "--json").json()[0]["status"] == "completed"


def test_download_into_a_new_folder_named_with_a_trailing_slash(
    hub: FakeHub, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Any]
) -> None:
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    url = hub.add_file("files/dl/7", b"weights" * 100, content_disposition="server-name.safetensors")
    dest = tmp_path / "downloads" / "new"
    r = run("download", url, f"{dest}/")
    assert r.code == 0, r.err
    assert dest.is_dir()
    assert (dest / "server-name.safetensors").read_bytes() == b"weights" * 100
