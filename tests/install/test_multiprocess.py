"""Several processes, one home (and one PostgreSQL): issue 12's acceptance tests.

Contract: a job is owned by the process running it (owner + heartbeat lease of
``install_lease_seconds``); a job whose owner is dead (same host) or whose lease expired is taken
over by another process that starts the install service or asks for the same source. The same
source asked for by several processes at once ends as one model, and every one of them exits 0.
``install --no-wait`` with no server says that nothing runs the job until ``modeldepot serve`` or
``modeldepot install`` runs; ``import_model()`` before ``start()`` runs the job or raises a
``ModelDepotError``, never a SQL error and never a silent wait.

The process tests are ``slow`` (CI's slow pass); the library-level ones are cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import PROCESS_TIMEOUT, Looper, Spawned, cli_env, duplicate_blobs, kill_all, run, run_json, wait_until

from modeldepot.config import DepotConfig
from modeldepot.errors import ModelDepotError
from modeldepot.install import LocalModelSource, ModelInstallService
from modeldepot.manager import ModelManager
from modeldepot.records import ModelRecordServiceSQL
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

REPO_A, REPO_B, REPO_C = "acme/tiny-a", "acme/tiny-b", "acme/tiny-c"
ENDED = ("completed", "error", "cancelled")
#: Per response; the 5.8 MB text encoder of each pipeline takes ~4 s, so the installs overlap.
PIPELINE_BPS = 1_500_000
#: Per response; the ~36 MB checkpoint takes ~18 s, so a kill lands mid-download.
BIG_FILE_BPS = 2_000_000
BIG_FILE_PATH = "/files/big/tiny-xl.safetensors"

slow = pytest.mark.slow
long_timeout = pytest.mark.timeout(900)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Three tiny SD-1 pipelines (~9 MB each) that share byte-identical vae / text encoder /
    tokenizer / scheduler files and differ in their UNet: concurrent installs ingest the shared
    blobs at the same time."""
    root = tmp_path_factory.mktemp("family")
    folders = factories.write_sd_pipeline_family(root, n=3)
    return {
        repo: {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        for repo, folder in zip((REPO_A, REPO_B, REPO_C), folders, strict=True)
    }


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.write_sdxl_checkpoint(tmp_path_factory.mktemp("big") / "tiny-xl.safetensors")


@pytest.fixture
def published(hub: FakeHub, family: dict[str, dict[str, Path]]) -> FakeHub:
    for repo, files in family.items():
        hub.add_hf_repo(repo, files)
    return hub


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra MODELDEPOT_* settings: none (SQLite in the home) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    url: str = request.getfixturevalue("pg_url")
    return {"DB": url}


def _cdn_path(path: Path) -> str:
    return f"/cdn/{hashlib.sha256(path.read_bytes()).hexdigest()}"


def _rows(env: dict[str, str], home: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = run_json(env, home, "jobs")
    for row in rows:
        assert {"id", "status", "source"} <= set(row), row
    return rows


def _rows_for(env: dict[str, str], home: Path, source: str) -> list[dict[str, Any]]:
    return [r for r in _rows(env, home) if r["source"] == source]


def _models(env: dict[str, str], home: Path) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = run_json(env, home, "list")
    return models


def _any_part_state(home: Path) -> bool:
    """Resumable download state (``<name>.part.json``) exists somewhere under the home's tmp."""
    return any((home / "tmp").rglob("*.part.json")) if (home / "tmp").is_dir() else False


# -- 1. several installers and a reader, one home -------------------------------------------------


@slow
@long_timeout
def test_concurrent_installs_one_home(
    published: FakeHub,
    family: dict[str, dict[str, Path]],
    db_settings: dict[str, str],
    home: Path,
    tmp_path: Path,
) -> None:
    hub = published
    hub.faults("/cdn/*", speed_limit_bps=PIPELINE_BPS)
    env = cli_env(hub.url, **db_settings)
    sources = [REPO_A] * 4 + [REPO_B, REPO_C]
    installers: list[Spawned] = []
    looper: Looper | None = None
    try:
        installers = [Spawned(env, home, tmp_path / f"install-{i}", "install", s) for i, s in enumerate(sources)]
        looper = Looper(env, home, [("doctor", "--json"), ("jobs", "--json")])
        codes = [p.wait(PROCESS_TIMEOUT) for p in installers]
        looper.stop()
    finally:
        kill_all(installers)
        if looper is not None:
            looper.stop()

    failed = [p.describe() for p, code in zip(installers, codes, strict=True) if code != 0]
    assert not failed, "installers failed:\n" + "\n".join(failed)
    assert looper.results, "the doctor/jobs loop never ran"
    assert not looper.failures, "doctor/jobs runs failed beside the installers:\n" + "\n".join(looper.failures)

    # Each model exists once.
    models = _models(env, home)
    assert Counter(m["source"] for m in models) == {REPO_A: 1, REPO_B: 1, REPO_C: 1}, models
    for m in models:
        assert (Path(m["path"]) / "model_index.json").is_file(), m

    # No job ended in error, and none is left for nobody to run.
    rows = _rows(env, home)
    assert {r["source"] for r in rows} == {REPO_A, REPO_B, REPO_C}, rows
    assert [r for r in rows if r["status"] != "completed"] == [], rows

    # Every blob once, and every blob used.
    assert duplicate_blobs(home) == {}
    du = run_json(env, home, "du")
    assert du["unreferenced_bytes"] == 0, du
    gc = run_json(env, home, "gc", "--dry-run")
    assert gc["removed"] == [], gc

    # The four requests for A were one install: its UNet (unique to A) went over the wire once.
    unet = family[REPO_A]["unet/diffusion_pytorch_model.safetensors"]
    served = hub.stats.bytes_sent_by_path.get(_cdn_path(unet), 0)
    assert served < 2 * unet.stat().st_size, f"A's UNet was served {served} bytes for {unet.stat().st_size}"


# -- 2. a killed (or frozen) installer's job is resumed by another process ------------------------


def _start_big_install(
    hub: FakeHub, big_file: Path, home: Path, tmp_path: Path
) -> tuple[dict[str, str], str, Spawned, int]:
    """One installer of the big file, well into its (throttled) download; returns env, url, the
    process and its job id."""
    url = hub.add_file(BIG_FILE_PATH, big_file)
    hub.faults("/files/*", speed_limit_bps=BIG_FILE_BPS)
    env = cli_env(hub.url, INSTALL_LEASE_SECONDS="3")
    size = big_file.stat().st_size
    first = Spawned(env, home, tmp_path / "first", "install", url)
    try:
        wait_until(
            lambda: hub.stats.bytes_sent_by_path.get(BIG_FILE_PATH, 0) >= size // 2 and _any_part_state(home),
            timeout=PROCESS_TIMEOUT,
            what="half the file served and resumable state on disk",
            watch=[first],
        )
        [row] = wait_until(lambda: _rows_for(env, home, url), timeout=60, what="the job row", watch=[first])
        assert row["status"] not in ENDED, row
    except BaseException:
        first.kill()
        raise
    return env, url, first, int(row["id"])


def _assert_one_completed_job(env: dict[str, str], home: Path, big_file: Path, url: str, job_id: int) -> None:
    rows = _rows_for(env, home, url)
    assert [r for r in rows if r["status"] == "error"] == [], rows
    assert job_id in {r["id"] for r in rows if r["status"] == "completed"}, f"job {job_id} did not complete: {rows}"
    [model] = [m for m in _models(env, home) if m["source"] == url]
    assert hashlib.sha256(Path(model["path"]).read_bytes()).digest() == hashlib.sha256(big_file.read_bytes()).digest()


def _assert_resumed(hub: FakeHub, big_file: Path) -> None:
    size = big_file.stat().st_size
    served = hub.stats.bytes_sent_by_path.get(BIG_FILE_PATH, 0)
    # Half was served before the first process died: starting over would send >= 1.5x the size.
    assert served < 1.4 * size, f"{served} bytes served for a {size}-byte file: the download started over"
    ranged = [r.range for r in hub.stats.requests_for(BIG_FILE_PATH, "GET") if r.range]
    assert any(not r.startswith("bytes=0-") for r in ranged), f"no request resumed mid-file: {ranged}"


@slow
@long_timeout
def test_killed_installer_is_resumed_by_another(hub: FakeHub, big_file: Path, home: Path, tmp_path: Path) -> None:
    env, url, first, job_id = _start_big_install(hub, big_file, home, tmp_path)
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=60) == -signal.SIGKILL
    hub.clear_faults()

    second = run(env, home, "install", url)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
    _assert_one_completed_job(env, home, big_file, url, job_id)
    _assert_resumed(hub, big_file)


@slow
@long_timeout
def test_frozen_installer_loses_its_job_when_its_lease_expires(
    hub: FakeHub, big_file: Path, home: Path, tmp_path: Path
) -> None:
    """The owner is alive (same host, pid running) but sends no heartbeat: after the lease
    (3 s here) another process takes the job over. It may start the download afresh: the frozen
    owner's partial file is not safe to adopt while that process could still wake up."""
    env, url, first, job_id = _start_big_install(hub, big_file, home, tmp_path)
    try:
        os.kill(first.pid, signal.SIGSTOP)
        hub.clear_faults()
        second = run(env, home, "install", url)
        assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
        _assert_one_completed_job(env, home, big_file, url, job_id)
    finally:
        first.kill()  # SIGKILL ends a stopped process too; it never runs again


# -- 3. the same source twice, from two services on one home --------------------------------------


def test_two_managers_on_one_home_install_one_model(
    published: FakeHub, family: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    """Two services (as two processes would) ask for the same repo at once: one model, no error."""
    hub = published
    hub.faults("/cdn/*", speed_limit_bps=4_000_000)
    settings: dict[str, Any] = {
        "home": tmp_path / "depot",
        "hf_endpoint": hub.url,
        "civitai_endpoint": hub.url,
        "allow_private_urls": True,
        "link_modes": ["hardlink", "copy"],
    }
    with ModelManager.open(**settings) as one, ModelManager.open(**settings) as two:
        a = one.install.heuristic_import(REPO_A)
        b = two.install.heuristic_import(REPO_A)
        one.install.wait_for_job(a, timeout=120)
        two.install.wait_for_job(b, timeout=120)
        assert a.complete, a.error
        assert b.complete, b.error
        assert a.config_out is not None and b.config_out is not None
        assert a.config_out.key == b.config_out.key
        assert [m.source for m in one.store.all_models()] == [REPO_A]
    unet = family[REPO_A]["unet/diffusion_pytorch_model.safetensors"]
    assert hub.stats.bytes_sent_by_path.get(_cdn_path(unet), 0) < 2 * unet.stat().st_size


# -- 4. nothing waits silently --------------------------------------------------------------------


@slow
@long_timeout
def test_no_wait_says_who_runs_it(published: FakeHub, home: Path) -> None:
    env = cli_env(published.url)
    r = run(env, home, "install", "--no-wait", REPO_A)
    said = r.stdout + r.stderr
    assert r.returncode == 0, said
    assert "modeldepot serve" in said.lower(), f"--no-wait did not say what will run the job:\n{said}"
    [row] = _rows_for(env, home, REPO_A)
    assert row["status"] not in ENDED, row
    job_id = row["id"]
    assert re.search(rf"\b{job_id}\b", said), f"--no-wait did not name job {job_id}:\n{said}"

    done = run(env, home, "install", REPO_A)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert [(x["id"], x["status"]) for x in _rows_for(env, home, REPO_A)] == [(job_id, "completed")]
    assert [m["source"] for m in _models(env, home)] == [REPO_A]


def test_no_wait_hands_the_job_to_a_running_server(published: FakeHub, home: Path) -> None:
    """A server on the home (here: the API app in this process) takes a job queued by another
    process's ``install --no-wait`` and runs it; the command says so."""
    from fastapi.testclient import TestClient

    from modeldepot.api.app import create_app

    config = DepotConfig(
        home=home,
        hf_endpoint=published.url,
        civitai_endpoint=published.url,
        allow_private_urls=True,
        link_modes=["hardlink", "copy"],
        install_lease_seconds=3,  # the server's watch beat (a third of it) finds the job quickly
    )
    with ModelManager(config) as mm, TestClient(create_app(mm)):
        r = run(cli_env(published.url), home, "install", "--no-wait", REPO_B)
        said = r.stdout + r.stderr
        assert r.returncode == 0, said
        assert f"pid {os.getpid()}" in said, f"--no-wait did not name the running server:\n{said}"
        [job] = wait_until(
            lambda: [j for j in mm.install.list_jobs() if j.source == REPO_B], 60, "the server to take the job"
        )
        done = mm.install.wait_for_job(job, timeout=120)
        assert done.complete, done.error
        assert [m.source for m in mm.store.all_models()] == [REPO_B]


@pytest.fixture(params=["fresh", "used"])
def unstarted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelInstallService]:
    """An install service built InvokeAI-style and never started, on a fresh home or on one whose
    database already holds the install tables."""
    home = tmp_path / "depot"
    if request.param == "used":
        with ModelManager.open(home=home) as mm:
            mm.install.list_jobs()
    config = DepotConfig(home=home, link_modes=["hardlink", "copy"])
    config.databases_dir.mkdir(parents=True, exist_ok=True)
    store = ModelRecordServiceSQL.from_db_file(config.db_url)
    service = ModelInstallService(config, store)
    try:
        yield service
    finally:
        service.stop()
        store.close()


def test_import_model_before_start_runs_or_refuses(unstarted: ModelInstallService, tmp_path: Path) -> None:
    lora = factories.write_lora(tmp_path / "style.safetensors")
    try:
        job = unstarted.import_model(LocalModelSource(path=lora))
    except ModelDepotError as exc:
        text = str(exc).lower()
        assert "no such table" not in text, f"a SQL error leaked: {exc!r}"
        assert "start" in text, f"the refusal does not say to start the service: {exc}"
        return
    unstarted.wait_for_job(job, timeout=30)  # a 40 kB local LoRA: seconds even on a loaded machine
    assert job.complete, f"job ended {job.status}: {job.error}"
    assert job.config_out is not None
    assert unstarted.record_store.exists(job.config_out.key)


def test_import_model_on_a_fresh_manager(tmp_path: Path) -> None:
    lora = factories.write_lora(tmp_path / "style.safetensors")
    with ModelManager.open(home=tmp_path / "depot", link_modes=["hardlink", "copy"]) as mm:
        job = mm.install.wait_for_job(mm.install.import_model(LocalModelSource(path=lora)), timeout=120)
        assert job.complete, job.error
        assert [m.key for m in mm.store.all_models()] == [job.config_out.key]  # type: ignore[union-attr]
