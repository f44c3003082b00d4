"""Fleet mode across processes (issue 19's soak test): 4 workers, each its own home and its own
``modeldepot`` processes, one PostgreSQL database and one bucket on a real local S3 server.

Contract: each source file crosses "the internet" (the fakehub) once for the whole fleet; the
bucket holds each blob of the fleet's manifests once; every worker ends with every model local,
verified and loadable; no job ends in error; a downloading worker killed with SIGKILL hands its
job to a worker that follows it, which downloads from the source again (the partial file was on
the dead worker's disk) and completes.

"The same 3 models and 2 distinct ones" is read as: every worker installs the 3 shared sources and
2 sources of its own, 3 + 4 * 2 = 11 sources in all.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.install._procs import PROCESS_TIMEOUT, Spawned, cli_env, kill_all, run_json, wait_until

from modeldepot.fleet._s3 import S3BlobTier
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

WORKERS = 4
SHARED = ("acme/tiny-0", "acme/tiny-1", "acme/tiny-2")
#: Per response: the ~4-6 MB weight files of each pipeline take a few seconds, so the 4 workers'
#: installs of the shared repos overlap (one runs each job, the others follow it).
PIPELINE_BPS = 2_000_000
#: Per response; the ~36 MB checkpoint takes ~18 s, so the kill lands mid-download.
BIG_FILE_BPS = 2_000_000
BIG_FILE_PATH = "/files/big/tiny-xl.safetensors"
LEASE = {"INSTALL_LEASE_SECONDS": "3"}

#: Loads every model of the fleet from each home named in argv (pipelines: their UNet, the part
#: each has of its own); prints [{key: class name}] in home order. One process opens the homes in
#: turn: torch and diffusers are imported once (four loaders at once take minutes on 2 cores).
LOADER = """
import json, sys
from modeldepot.manager import ModelManager
results = []
for home in sys.argv[1:]:
    with ModelManager.open(home=home) as mm:
        loaded = {}
        for record in mm.store.all_models():
            sub = "unet" if record.type == "main" else None
            loaded[record.key] = type(mm.load.load_model(record, sub).model).__name__
    results.append(loaded)
print(json.dumps(results))
"""


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Three tiny SD-1 pipelines (~9 MB each) sharing byte-identical vae / text encoder / tokenizer /
    scheduler files, with a UNet each: the bucket must hold the shared blobs once."""
    root = tmp_path_factory.mktemp("family")
    folders = factories.write_sd_pipeline_family(root, n=len(SHARED))
    return {
        repo: {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        for repo, folder in zip(SHARED, folders, strict=True)
    }


@pytest.fixture(scope="module")
def own_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two files per worker (a LoRA and a VAE, seeded apart): fakehub path -> file."""
    root = tmp_path_factory.mktemp("own")
    files: dict[str, Path] = {}
    for w in range(WORKERS):
        files[f"/files/w{w}/style.safetensors"] = factories.write_lora(root / f"w{w}-style.safetensors", seed=100 + w)
        files[f"/files/w{w}/vae.safetensors"] = factories.write_vae(root / f"w{w}-vae.safetensors", seed=200 + w)
    return files


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.write_sdxl_checkpoint(tmp_path_factory.mktemp("big") / "tiny-xl.safetensors")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def fleet_env(hub: FakeHub, pg_url: str, bucket_url: str) -> dict[str, str]:
    """The environment of every worker process: the fakehub, the shared database and bucket (the
    AWS_* variables are in os.environ, set by ``bucket_url``), a 3 s install lease."""
    return cli_env(hub.url, DB=pg_url, BLOB_REMOTE=bucket_url, **LEASE)


# -- helpers --------------------------------------------------------------------------------------


def _spawn_all(env: dict[str, str], homes: Sequence[Path], logs: Path, *args: str) -> list[Spawned]:
    return [Spawned(env, home, logs / f"{args[0]}-{home.name}", *args) for home in homes]


def _wait_all(procs: list[Spawned], timeout: float = PROCESS_TIMEOUT) -> None:
    """Every process ends with exit 0 (all of them are waited for; the failures are reported together)."""
    try:
        codes = [p.wait(timeout) for p in procs]
    finally:
        kill_all(procs)
    failed = [p.describe() for p, code in zip(procs, codes, strict=True) if code != 0]
    assert not failed, "processes failed:\n" + "\n\n".join(failed)


def _all_json(env: dict[str, str], homes: Sequence[Path], logs: Path, *args: str) -> list[Any]:
    """Run ``modeldepot ARGS --json`` on every home at once; the parsed outputs, in home order."""
    procs = _spawn_all(env, homes, logs, *args, "--json")
    _wait_all(procs)
    return [json.loads(p.out) for p in procs]


def _load_all(env: dict[str, str], homes: Sequence[Path]) -> list[dict[str, str]]:
    """Run ``LOADER`` on the homes; what it loaded on each ({key: class name}), in home order."""
    r = subprocess.run(
        [sys.executable, "-c", LOADER, *map(str, homes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert r.returncode == 0, f"loading exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    results: list[dict[str, str]] = json.loads(r.stdout.strip().splitlines()[-1])
    return results


def _manifest_digests(pg_url: str, keys: Sequence[str] | None = None) -> dict[str, int]:
    """digest -> size of every blob the fleet's manifests (or those of ``keys``) name."""
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT model_key, digest, size FROM storage_manifest")).all()
    finally:
        engine.dispose()
    return {str(d): int(s) for k, d, s in rows if keys is None or k in keys}


def _bucket(bucket_url: str) -> list[tuple[str, int]]:
    """(digest, size) of every object in the bucket, as listed (a key listed twice shows twice)."""
    return [(b.digest, b.size) for b in S3BlobTier(bucket_url).list()]


def _local_blobs(home: Path) -> set[str]:
    blobs = home / "blobs"
    return {p.name for p in blobs.rglob("*") if p.is_file() and p.parent.name == p.name[:2]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_each_source_file_fetched_once(
    hub: FakeHub, repo_files: dict[str, dict[str, Path]], plain_files: dict[str, Path]
) -> None:
    """Fakehub's request log: every file of every source was downloaded by exactly one GET.

    HF files are downloaded from ``/<repo>/resolve/<commit>/<file>`` (small files answer there,
    weight files redirect to ``/cdn/<sha256>``); the plan reads a pipeline's ``model_index.json``
    once more (no Range: metadata, like the ``/api`` calls), at most once per repo for the fleet.
    """
    requests = hub.stats.requests
    errors = [r for r in requests if r.status >= 400 and not r.path.startswith("/api/")]
    assert errors == [], f"fakehub answered errors: {errors}"
    gets = [r for r in requests if r.method == "GET"]
    resolve = [r for r in gets if "/resolve/" in r.path]
    downloads = Counter(r.path for r in resolve if r.range is not None)
    plan_reads = Counter(r.path for r in resolve if r.range is None)
    expected_cdn: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    for repo, files in repo_files.items():
        for rel, path in files.items():
            prefix = f"/{repo}/resolve/"
            found = [p for p in downloads if p.startswith(prefix) and p.split("/", 5)[5] == rel]
            assert len(found) == 1, f"{repo}/{rel} was downloaded from {found}: {sorted(downloads)}"
            url = found[0]
            assert downloads[url] == 1, f"{url} was downloaded {downloads[url]} times"
            if any(r.path == url and r.status in (301, 302, 307) for r in resolve):
                cdn = f"/cdn/{_sha256(path)}"
                expected_cdn[cdn] += 1
                sizes[cdn] = path.stat().st_size
    assert sum(downloads.values()) == sum(len(files) for files in repo_files.values()), downloads
    assert all(p.endswith("/model_index.json") for p in plan_reads), plan_reads
    assert all(n == 1 for n in plan_reads.values()), f"a pipeline's plan was made more than once: {plan_reads}"

    # Weight files shared by the repos (same bytes, same /cdn/ path) go once per repo that has them:
    # a source file once, whatever the number of workers.
    cdn_gets = Counter(r.path for r in gets if r.path.startswith("/cdn/"))
    assert cdn_gets == expected_cdn, f"CDN GETs {dict(cdn_gets)} != one per redirected file {dict(expected_cdn)}"
    served = hub.stats.bytes_sent_by_path
    for cdn, n in expected_cdn.items():
        assert served.get(cdn, 0) == n * sizes[cdn], f"{cdn}: {served.get(cdn, 0)} bytes for {n} x {sizes[cdn]}"

    plain = Counter(r.path for r in gets if r.path.startswith("/files/"))
    assert plain == dict.fromkeys(plain_files, 1), f"plain files GET counts: {dict(plain)}"
    for url, file in plain_files.items():
        assert served.get(url, 0) == file.stat().st_size, f"{url}: {served.get(url, 0)} bytes served"


# -- 1. four workers install the same and their own models at once --------------------------------


def test_four_workers_one_download_per_file(
    hub: FakeHub,
    family: dict[str, dict[str, Path]],
    own_files: dict[str, Path],
    fleet_env: dict[str, str],
    pg_url: str,
    bucket_url: str,
    tmp_path: Path,
) -> None:
    for repo, files in family.items():
        hub.add_hf_repo(repo, files)
    urls = {path: hub.add_file(path, file) for path, file in own_files.items()}
    hub.faults("/cdn/*", speed_limit_bps=PIPELINE_BPS)
    env = fleet_env
    homes = [tmp_path / f"worker{w}" for w in range(WORKERS)]
    logs = tmp_path / "logs"

    # Each worker asks for the shared repos in another order (so each leads some jobs and follows
    # others) and then for its own two files, all in one `install` (its jobs run side by side).
    sources = [
        [
            *SHARED[w % 3 :],
            *SHARED[: w % 3],
            urls[f"/files/w{w}/style.safetensors"],
            urls[f"/files/w{w}/vae.safetensors"],
        ]
        for w in range(WORKERS)
    ]
    installers = [
        Spawned(env, home, logs / f"install-{home.name}", "install", "--json", *s)
        for home, s in zip(homes, sources, strict=True)
    ]
    _wait_all(installers)
    hub.clear_faults()
    outputs = [json.loads(p.out) for p in installers]

    # Each source was installed (downloaded) by one worker; the others pulled it from the bucket.
    outcomes: dict[str, Counter[str]] = {}
    keys: dict[str, str] = {}
    for reported in outputs:
        for job in reported:
            assert job["complete"], job
            outcomes.setdefault(job["source"], Counter())[job["outcome"]] += 1
            key = job["config_out"]["key"]
            assert keys.setdefault(job["source"], key) == key, f"{job['source']} has two keys"
    all_sources = {*SHARED, *urls.values()}
    assert set(outcomes) == all_sources
    for source in SHARED:
        assert outcomes[source] == {"installed": 1, "pulled": WORKERS - 1}, (source, outcomes[source])
    for url in urls.values():
        assert outcomes[url] == {"installed": 1}, (url, outcomes[url])
    assert len(set(keys.values())) == len(all_sources)

    _assert_each_source_file_fetched_once(hub, family, own_files)
    asked = len(hub.stats.requests)

    # Every worker makes every model of the fleet local, from the bucket: the other workers' own ones.
    pulled = _all_json(env, homes, logs, "pull", "--all")
    for w, results in enumerate(pulled):
        assert {r["key"] for r in results} == set(keys.values()), (w, results)
        others = {keys[u] for path, u in urls.items() if not path.startswith(f"/files/w{w}/")}
        assert {r["key"] for r in results if not r["already_local"]} == others, (w, results)
    assert len(hub.stats.requests) == asked, "a pull asked the source instead of the bucket"

    # The bucket holds every blob of every manifest, once, and nothing else.
    digests = _manifest_digests(pg_url)
    listed = _bucket(bucket_url)
    assert len(listed) == len({d for d, _ in listed}), "a blob is in the bucket twice"
    assert dict(listed) == digests
    # Family pipelines share blobs: fewer distinct blobs than files.
    files_total = sum(len(files) for files in family.values()) + len(own_files)
    assert len(digests) < files_total
    for home in homes:
        assert _local_blobs(home) == set(digests), f"{home.name} lacks blobs of the fleet"

    # Every worker's store verifies (each checks every blob of the fleet); beside them, `jobs` says
    # no job ended in error or is left over, and `fleet status` sees 4 workers holding every model.
    verifiers = _spawn_all(env, homes, logs, "verify", "--json")
    jobs = Spawned(env, homes[0], logs / "jobs", "jobs", "--json")
    status = Spawned(env, homes[1], logs / "status", "fleet", "status", "--json")
    _wait_all([*verifiers, jobs, status])
    for home, p in zip(homes, verifiers, strict=True):
        checked = json.loads(p.out)
        assert checked["blobs_checked"] == len(digests), (home.name, checked)
        assert not (checked["corrupt_blobs"] or checked["missing_blobs"] or checked["damaged_files"]), checked
    rows = json.loads(jobs.out)
    assert [r for r in rows if r["status"] != "completed"] == [], rows
    assert {r["source"] for r in rows} == all_sources
    report = json.loads(status.out)
    assert len(report["workers"]) == WORKERS, report["workers"]
    assert {w["home"] for w in report["workers"]} == {str(h) for h in homes}
    assert all(w["models"] == len(all_sources) and w["alive"] for w in report["workers"]), report["workers"]
    assert report["bucket_objects"] == len(digests) and report["missing"] == 0, report
    assert report["bucket_bytes"] == report["unique_bytes"] == sum(digests.values()), report
    assert report["in_flight"] == [], report

    # Every model loads on every worker.
    for home, loaded in zip(homes, _load_all(env, homes), strict=True):
        assert set(loaded) == set(keys.values()), (home.name, loaded)
    assert len(hub.stats.requests) == asked, "verifying or loading asked the source"


# -- 2. kill -9 of the downloading worker hands the download to a follower ------------------------


def _rows_for(env: dict[str, str], home: Path, source: str) -> list[dict[str, Any]]:
    return [r for r in run_json(env, home, "jobs") if r["source"] == source]


def test_killed_downloader_hands_the_download_to_a_follower(
    hub: FakeHub, big_file: Path, fleet_env: dict[str, str], pg_url: str, bucket_url: str, tmp_path: Path
) -> None:
    env = fleet_env
    url = hub.add_file(BIG_FILE_PATH, big_file)
    size = big_file.stat().st_size
    hub.faults("/files/*", speed_limit_bps=BIG_FILE_BPS)
    one, two = tmp_path / "worker1", tmp_path / "worker2"
    logs = tmp_path / "logs"
    first = Spawned(env, one, logs / "first", "install", "--json", url)
    second: Spawned | None = None
    try:
        wait_until(
            lambda: hub.stats.bytes_sent_by_path.get(BIG_FILE_PATH, 0) > 0,
            timeout=PROCESS_TIMEOUT,
            what="worker 1 downloading",
            watch=[first],
        )
        second = Spawned(env, two, logs / "second", "install", "--json", url)
        wait_until(
            lambda: hub.stats.bytes_sent_by_path.get(BIG_FILE_PATH, 0) >= size // 2,
            timeout=PROCESS_TIMEOUT,
            what="half the file served to worker 1",
            watch=[first, second],
        )
        [row] = _rows_for(env, two, url)
        assert row["status"] == "downloading" and row["pid"] == first.pid, row
        served_before = hub.stats.bytes_sent_by_path[BIG_FILE_PATH]
        assert served_before < size, "worker 1 finished before the kill: slow the file down"
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(timeout=60) == -signal.SIGKILL
        hub.clear_faults()
        code = second.wait()
        assert code == 0, second.describe()
    finally:
        kill_all([p for p in (first, second) if p is not None])

    # Worker 2 followed worker 1's job (the same row), took it over and downloaded from the source.
    [job] = json.loads(second.out)
    assert job["id"] == row["id"] and job["complete"], job
    assert job["outcome"] == "installed", job
    assert any(str(first.pid) in note for note in job["notes"]), f"worker 2 never followed worker 1: {job['notes']}"
    served = hub.stats.bytes_sent_by_path[BIG_FILE_PATH]
    assert served >= served_before + size, f"{served} bytes served: worker 2 did not download the file itself"
    rows = _rows_for(env, two, url)
    assert [(r["id"], r["status"]) for r in rows] == [(row["id"], "completed")], rows
    key = job["config_out"]["key"]
    path = Path(job["config_out"]["path"])
    assert path.is_relative_to(two) and _sha256(path) == _sha256(big_file)
    report = run_json(env, two, "verify", key)
    assert report["blobs_checked"] >= 1 and not (report["corrupt_blobs"] or report["missing_blobs"]), report

    # Its blob is in the bucket; worker 1's home pulls it from there, asking the source nothing.
    digests = _manifest_digests(pg_url, [key])
    assert dict(_bucket(bucket_url)) == digests
    asked = len(hub.stats.requests)
    [pulled] = run_json(env, one, "pull", key)
    assert pulled["key"] == key and not pulled["already_local"] and pulled["bytes"] == size, pulled
    assert len(hub.stats.requests) == asked, "worker 1's pull asked the source"
    local = Path(run_json(env, one, "show", key)["path"])
    assert local.is_relative_to(one) and _sha256(local) == _sha256(big_file)
    report = run_json(env, one, "verify", key)
    assert not (report["corrupt_blobs"] or report["missing_blobs"] or report["damaged_files"]), report
