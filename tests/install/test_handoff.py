"""An install from a hub reads each downloaded file once: the download's own pass takes the blake3
and the tensor hashes, and the store links the files in without reading them again."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.manager import ModelManager
from modeldepot.storage import _blobs, _parts
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files the blob store hashes from here on."""
    hashed: list[str] = []
    real = _blobs.hash_path

    def counting(path: Path, tap: _blobs.Tap | None = None) -> str:
        hashed.append(Path(path).name)
        return real(path, tap)

    monkeypatch.setattr(_blobs, "hash_path", counting)
    return hashed


def _parts_and_manifest(mm: ModelManager, key: str) -> tuple[dict[str, str], dict[str, str]]:
    record = mm.store.get_model(key)
    parts = {name: p.digest for name, p in mm.normalized.get_model_by_name(record.name, "main").parts.items()}
    manifest = {e.relpath: e.digest for e in mm.storage.manifest(key).entries}
    return parts, manifest


def test_a_hub_install_stores_downloaded_files_without_reading_them_again(
    mm: ModelManager, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = factories.write_diffusers_pipeline(tmp_path / "src")
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    hub.add_hf_repo("acme/tiny-sd", files)
    hashed = _count_hashes(monkeypatch)
    real_feed = _parts.TensorTap.feed
    fed: list[str] = []

    def feed(self: _parts.TensorTap, offset: int, piece: memoryview) -> None:
        if offset == 0:
            fed.append(str(self.path))
        real_feed(self, offset, piece)

    monkeypatch.setattr(_parts.TensorTap, "feed", feed)
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/tiny-sd"), timeout=60)
    assert job.complete, job.error
    assert hashed == []  # no file was read again by the store
    assert fed and all(p.endswith(".safetensors.part") for p in fed)  # tensors hashed during the download only
    got = _parts_and_manifest(mm, job.config_out.key)  # type: ignore[union-attr]

    # The same files installed from disk (read and hashed by the store) give the same digests and parts.
    monkeypatch.undo()
    with ModelManager.open(home=tmp_path / "other") as other:
        local = other.install.wait_for_job(other.install.heuristic_import(str(folder)), timeout=60)
        assert local.complete, local.error
        assert _parts_and_manifest(other, local.config_out.key) == got  # type: ignore[union-attr]


def test_a_file_changed_after_its_download_is_hashed_again(
    mm: ModelManager, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    hub.add_hf_repo("acme/loras", {"style.safetensors": lora.read_bytes()})
    from modeldepot.install import _handoff

    real = _handoff.Handoff.received

    def stale(self: _handoff.Handoff, jobs: object) -> dict[int, _handoff.Received]:
        got = real(self, jobs)  # type: ignore[arg-type]
        # As if the file had been rewritten after the download hashed it: another mtime.
        return {
            ino: _handoff.Received(r.known._replace(identity=(ino, r.known.identity[1], 1)), r.tensors)
            for ino, r in got.items()
        }

    monkeypatch.setattr(_handoff.Handoff, "received", stale)
    hashed = _count_hashes(monkeypatch)
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/loras::style.safetensors"), timeout=60)
    assert job.complete, job.error
    assert hashed == ["style.safetensors"]  # not trusted: read and hashed by the store
