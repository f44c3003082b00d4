"""Fleet mode in one process: two workers (two homes) share one PostgreSQL database and one bucket
on a real local S3 server. Installs push, installs of a fleet model pull (no download), evict and
the LRU budget drop local copies only, bucket gc marks then sweeps, status counts it all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modeldepot.errors import BlobCorruptError, ConfigurationError, FleetError
from modeldepot.fleet import collect, status
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]
REPO = "acme/tiny-a"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    folder = factories.write_sd_pipeline_family(tmp_path / "family", n=1)[0]
    with FakeHub() as h:
        h.add_hf_repo(REPO, {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()})
        h.add_file("/files/lora.safetensors", factories.write_lora(tmp_path / "lora.safetensors"))
        h.add_file("/files/vae.safetensors", factories.write_vae(tmp_path / "vae.safetensors"))
        yield h


@pytest.fixture
def worker(tmp_path: Path, pg_url: str, bucket_url: str, hub: FakeHub) -> Iterator[Callable[..., ModelManager]]:
    """Opens worker N (its own home) of the fleet; closed at the end."""
    opened: list[ModelManager] = []

    def open_worker(n: int, **settings: Any) -> ModelManager:
        mm = ModelManager.open(
            **{
                "home": tmp_path / f"worker{n}",
                "db": pg_url,
                "blob_remote": bucket_url,
                "hf_endpoint": hub.url,
                "civitai_endpoint": hub.url,
                "allow_private_urls": True,
                "link_modes": ["hardlink", "copy"],
                **settings,
            }
        )
        opened.append(mm)
        return mm

    yield open_worker
    for mm in opened:
        mm.close()


def _install(mm: ModelManager, source: str) -> Any:
    job = mm.install.wait_for_job(mm.install.heuristic_import(source), timeout=300)
    assert job.complete, job.error
    return job


def test_install_pushes_and_another_worker_pulls_without_downloading(
    worker: Callable[..., ModelManager], hub: FakeHub
) -> None:
    a, b = worker(1), worker(2)
    job = _install(a, REPO)
    key = job.config_out.key
    man = a.storage.manifest(key)
    in_bucket = {blob.digest: blob.size for blob in a.fleet.tier.list()}
    assert {e.digest: e.size for e in man.entries}.items() <= in_bucket.items()
    asked = len(hub.stats.requests)

    # The record is the fleet's: worker 2 lists it, not local yet.
    record = b.store.get_model(key)
    assert not Path(record.path).exists()
    assert record.path.startswith(str(b.config.models_path))

    again = _install(b, REPO)
    assert again.outcome == "pulled", again.notes
    assert again.config_out.key == key
    assert len(hub.stats.requests) == asked, "worker 2 asked the source instead of the bucket"
    assert Path(record.path).is_dir()
    assert b.storage.verify(key=key).ok
    for e in man.entries:
        assert (Path(record.path) / e.relpath).read_bytes() == (Path(man.dest) / e.relpath).read_bytes()  # type: ignore[operator]

    # Stored relative to each worker's models folder: one manifest, a place under every home.
    with a.services.db.connect() as conn:
        dest = conn.execute(sa.text("SELECT dest FROM storage_models WHERE model_key = :k"), {"k": key}).scalar_one()
    assert not str(dest).startswith("/"), dest


def test_follower_of_a_running_install_pulls_when_it_ends(worker: Callable[..., ModelManager], hub: FakeHub) -> None:
    a, b = worker(1), worker(2)
    hub.faults("/files/*", speed_limit_bps=400_000)
    url = hub.url_for("/files/vae.safetensors")
    first = a.install.heuristic_import(url)
    second = b.install.heuristic_import(url)
    assert second.id == first.id  # one job for the fleet
    first = a.install.wait_for_job(first, timeout=300)
    second = b.install.wait_for_job(second, timeout=300)
    assert first.complete and second.complete, (first.error, second.error)
    assert second.outcome == "pulled"
    assert len([r for r in hub.stats.requests if r.path == "/files/vae.safetensors" and r.method == "GET"]) == 1
    assert Path(b.store.get_model(first.config_out.key).path).is_file()


def test_evict_keeps_record_and_bucket_and_load_pulls_back(worker: Callable[..., ModelManager]) -> None:
    a = worker(1)
    b = worker(2)
    key = _install(a, REPO).config_out.key
    b.fleet.pull(key)
    assert b.fleet.is_local(key)
    before = {blob.digest for blob in b.fleet.tier.list()}
    result = b.fleet.evict(key)
    assert result.blobs >= 1 and result.bytes > 0
    assert not b.fleet.is_local(key)
    assert not Path(b.store.get_model(key).path).exists()
    assert not any(b.storage.blobs.has(e.digest) for e in b.storage.manifest(key).entries)
    assert {blob.digest for blob in b.fleet.tier.list()} == before
    assert a.fleet.is_local(key), "evicting on one worker touched another"
    # A load of a model this worker does not hold pulls it first.
    with b.load.load_model(b.store.get_model(key), "vae") as vae:
        assert type(vae).__name__ == "AutoencoderKL"
    assert b.fleet.is_local(key)
    b.storage.gc(grace_seconds=0)  # the local gc never reaches the bucket
    a.install.delete(key)
    a.storage.gc(grace_seconds=0)
    assert {blob.digest for blob in a.fleet.tier.list()} == before


def test_local_budget_evicts_the_least_recently_used(worker: Callable[..., ModelManager], hub: FakeHub) -> None:
    a = worker(1)
    lora = _install(a, hub.url_for("/files/lora.safetensors")).config_out.key
    vae = _install(a, hub.url_for("/files/vae.safetensors")).config_out.key
    size = a.storage.manifest(vae).size
    b = worker(2, local_cache_gb=(size + 1024) / (1 << 30))
    b.fleet.pull(lora)
    b.fleet.pull(vae)  # over budget: the lora (used least recently) goes
    assert b.fleet.is_local(vae) and not b.fleet.is_local(lora)
    assert b.fleet.local_bytes() <= size + 1024


def test_bucket_gc_marks_then_sweeps_only_unreferenced(worker: Callable[..., ModelManager], hub: FakeHub) -> None:
    a = worker(1)
    keep = _install(a, hub.url_for("/files/lora.safetensors")).config_out.key
    gone = _install(a, hub.url_for("/files/vae.safetensors")).config_out.key
    gone_digests = {e.digest for e in a.storage.manifest(gone).entries}
    a.install.delete(gone)
    assert collect(a.fleet, grace_seconds=3600).removed == []  # marked, not yet swept
    first = collect(a.fleet, grace_seconds=0)
    assert set(first.removed) == gone_digests
    left = {blob.digest for blob in a.fleet.tier.list()}
    assert not left & gone_digests
    assert {e.digest for e in a.storage.manifest(keep).entries} <= left
    # A blob an ingest holds (pending row) is never swept, however old its mark.
    digest = next(iter({e.digest for e in a.storage.manifest(keep).entries}))
    with a.services.db.begin() as conn:
        conn.execute(sa.text("INSERT INTO fleet_gc_marks (digest, marked_at) VALUES (:d, 0)"), {"d": digest})
    assert digest not in collect(a.fleet, grace_seconds=0).removed


def test_status_counts_workers_models_and_bytes(worker: Callable[..., ModelManager], hub: FakeHub) -> None:
    a, b = worker(1), worker(2)
    key = _install(a, hub.url_for("/files/vae.safetensors")).config_out.key
    b.fleet.pull(key)
    report = status(a.fleet)
    assert {w["worker"] for w in report.workers} == {a.fleet.worker, b.fleet.worker}
    assert all(w["models"] == 1 and w["alive"] for w in report.workers)
    size = a.storage.manifest(key).size
    assert report.bucket_bytes == report.unique_bytes == size
    assert report.logical_bytes == size
    assert report.missing == 0 and report.in_flight == [] and report.shared_db


def test_tampered_bucket_object_is_refused(worker: Callable[..., ModelManager], hub: FakeHub, tmp_path: Path) -> None:
    a, b = worker(1), worker(2)
    key = _install(a, hub.url_for("/files/lora.safetensors")).config_out.key
    entry = a.storage.manifest(key).entries[0]
    evil = tmp_path / "evil"
    evil.write_bytes(b"x" * entry.size)
    tier = a.fleet.tier
    tier.delete(entry.digest)
    # Put other bytes under the digest's key (what a broken or hostile bucket would serve).
    tier.client.upload_file(str(evil), tier.bucket.bucket, tier.bucket.key_for(entry.digest))
    with pytest.raises(BlobCorruptError):
        b.fleet.pull(key)
    assert not b.storage.blobs.has(entry.digest)
    assert not Path(b.store.get_model(key).path).exists()


def test_inplace_models_cannot_be_pulled(worker: Callable[..., ModelManager], tmp_path: Path) -> None:
    a = worker(1)
    path = factories.write_lora(tmp_path / "mine.safetensors")
    key = a.install.register_path(path)
    with pytest.raises(FleetError, match="in place"):
        a.fleet.pull(key)


def test_fleet_off_says_how_to_turn_it_on(tmp_path: Path) -> None:
    with ModelManager.open(home=tmp_path / "solo") as mm, pytest.raises(ConfigurationError, match="blob_remote"):
        mm.fleet  # noqa: B018


def test_a_model_deleted_on_one_worker_leaves_no_folder_on_another(
    worker: Callable[..., ModelManager], hub: FakeHub
) -> None:
    a, b = worker(1), worker(2)
    key = _install(a, hub.url_for("/files/vae.safetensors")).config_out.key
    b.fleet.pull(key)
    path = Path(b.store.get_model(key).path)
    assert path.is_file()
    a.install.delete(key)
    assert path.is_file()  # worker 2 has not looked yet
    assert b.fleet.prune_deleted() == [key]
    assert not path.exists()


def test_budget_drops_stray_blobs_of_a_pull_that_died(worker: Callable[..., ModelManager], hub: FakeHub) -> None:
    a = worker(1)
    key = _install(a, hub.url_for("/files/vae.safetensors")).config_out.key
    entry = a.storage.manifest(key).entries[0]
    b = worker(2)
    b.fleet.fetch((entry,))  # the blob arrived, the model was never built
    assert b.storage.blobs.has(entry.digest) and not b.fleet.is_local(key)
    assert b.fleet._drop_strays(min_age=3600) == 0  # young: may be a pull in progress
    assert b.fleet._drop_strays(min_age=0) == entry.size
    assert not b.storage.blobs.has(entry.digest)
    assert entry.digest in {blob.digest for blob in b.fleet.tier.list()}


def test_a_bucket_that_is_not_there_fails_the_install_before_downloading(
    worker: Callable[..., ModelManager], hub: FakeHub
) -> None:
    a = worker(1, blob_remote="s3://no-such-bucket-here/x")
    job = a.install.wait_for_job(a.install.heuristic_import(hub.url_for("/files/vae.safetensors")), timeout=120)
    assert not job.complete
    assert "no-such-bucket-here does not exist" in (job.error or "")
    assert not [r for r in hub.stats.requests if r.path == "/files/vae.safetensors" and r.method == "GET"]


def test_one_machine_with_sqlite_and_a_bucket_works_and_says_the_records_are_not_shared(
    worker: Callable[..., ModelManager], hub: FakeHub, tmp_path: Path
) -> None:
    solo = worker(1, db=str(tmp_path / "solo.db"))
    key = _install(solo, hub.url_for("/files/lora.safetensors")).config_out.key
    report = status(solo.fleet)
    assert not report.shared_db
    assert report.bucket_objects == 1 and report.missing == 0
    assert solo.fleet.evict(key).blobs == 1
    assert solo.fleet.pull(key).blobs == 1
