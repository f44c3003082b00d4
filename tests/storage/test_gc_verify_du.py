"""Refcounts, gc with grace period, verify + repair, du."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from _storage_helpers import make_store, pipeline, tree_sha256, write

from modeldepot.storage import ContentStore


def _install(store: ContentStore, src: Path, key: str) -> Path:
    dest = store.config.models_path / "sd-1" / "main" / key
    store.import_files(src, key, dest)
    return dest


def test_gc_keeps_referenced_removes_unreferenced_after_grace(store: ContentStore, tmp_path: Path) -> None:
    _install(store, pipeline(tmp_path / "a", 1), "a")
    _install(store, pipeline(tmp_path / "b", 2), "b")
    orphan = store.add_file(write(tmp_path / "orphan", b"orphan bytes"))
    report = store.gc()  # within the grace period the orphan (a live ingest, maybe) is kept
    assert report.removed == [] and orphan.digest in report.kept_pending
    report = store.gc(grace_seconds=0)
    assert report.removed == [orphan.digest] and report.bytes_freed == len(b"orphan bytes")
    store.delete_model("a")
    only_a = {e.digest for e in store.manifest("b").entries}
    dry = store.gc(dry_run=True, grace_seconds=0)
    assert len(dry.removed) == 2 and set(dry.removed).isdisjoint(only_a)
    assert all(store.blobs.has(d) for d in dry.removed)  # dry run deletes nothing
    real = store.gc(grace_seconds=0)
    assert sorted(real.removed) == sorted(dry.removed)
    assert all(store.blobs.has(d) for d in store.refcounts())
    assert tree_sha256(store.config.models_path / "sd-1" / "main" / "b") == tree_sha256(tmp_path / "b")


def test_gc_reports_unexpected_files_without_deleting(store: ContentStore, tmp_path: Path) -> None:
    stray = store.config.blobs_dir / "ab" / "notes.txt"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("mine")
    misplaced = store.config.blobs_dir / "cd" / ("ab" + "0" * 62)
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    misplaced.write_text("x")
    top = store.config.blobs_dir / "README"
    top.write_text("y")
    report = store.gc(grace_seconds=0)
    assert set(report.unexpected_files) == {stray, misplaced, top}
    assert stray.exists() and misplaced.exists() and top.exists()


def test_refcounts_rebuilt_from_manifests(store: ContentStore, tmp_path: Path) -> None:
    _install(store, pipeline(tmp_path / "a", 1), "a")
    _install(store, pipeline(tmp_path / "b", 2), "b")
    refs = store.rebuild_refcounts()
    assert sorted(set(refs.values())) == [1, 2]
    assert sum(refs.values()) == 16


def test_verify_clean_store(store: ContentStore, tmp_path: Path) -> None:
    _install(store, pipeline(tmp_path / "a", 1), "a")
    report = store.verify()
    assert report.ok and report.blobs_checked == 8 and report.files_checked == 8


def _corrupt(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_finds_corrupt_blob_affecting_models_and_repairs_from_copy(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["copy"])
    _install(store, pipeline(tmp_path / "a", 1), "a")
    dest_b = _install(store, pipeline(tmp_path / "b", 2), "b")
    vae = next(e.digest for e in store.manifest("a").entries if e.relpath.startswith("vae/diffusion"))
    _corrupt(store.blobs.path_for(vae))
    report = store.verify()
    assert report.corrupt_blobs == [vae]
    assert set(report.affected_models) == {"a", "b"}
    # a fresh copy-mode materialisation refuses the corrupt blob (never served silently)
    from modeldepot.errors import BlobCorruptError

    with pytest.raises(BlobCorruptError):
        store.materialise("b", store.config.models_path / "elsewhere")
    fixed = store.verify(repair=True)
    assert any("restored" in r for r in fixed.repaired)
    assert store.verify().ok
    assert tree_sha256(dest_b) == tree_sha256(tmp_path / "b")
    db.close()


def test_verify_detects_edited_hardlinked_file_and_unrepairable_blob(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["hardlink"])
    dest = _install(store, pipeline(tmp_path / "a", 1), "a")
    target = dest / "unet" / "diffusion_pytorch_model.safetensors"
    assert target.stat().st_mode & 0o222 == 0  # read-only: an editor cannot write it by accident
    if os.geteuid() != 0:  # root ignores mode bits
        with pytest.raises(PermissionError):
            target.open("r+b")
    _corrupt(target)  # forced: chmod + write edits the shared inode, i.e. the blob
    report = store.verify(key="a")
    assert len(report.corrupt_blobs) == 1 and "a" in report.affected_models
    again = store.verify(key="a", repair=True)
    assert not any("restored" in r for r in again.repaired)  # no good copy anywhere: reported
    assert store.verify(key="a").corrupt_blobs == report.corrupt_blobs
    db.close()


def test_verify_detects_missing_and_replaced_files_and_repairs(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["hardlink", "copy"])
    src = pipeline(tmp_path / "a", 1)
    dest = _install(store, src, "a")
    os.chmod(dest / "unet", 0o755)
    (dest / "unet" / "config.json").unlink()
    replaced = dest / "vae" / "config.json"
    os.chmod(dest / "vae", 0o755)
    replaced.unlink()
    replaced.write_bytes((src / "vae" / "config.json").read_bytes())  # same bytes, new inode
    report = store.verify()
    assert set(report.damaged_files) == {dest / "unet" / "config.json", replaced}
    assert report.corrupt_blobs == [] and report.missing_blobs == []
    store.verify(repair=True)
    assert store.verify().ok and tree_sha256(dest) == tree_sha256(src)
    db.close()


def test_verify_missing_blob(store: ContentStore, tmp_path: Path) -> None:
    _install(store, pipeline(tmp_path / "a", 1), "a")
    d = store.manifest("a").entries[0].digest
    store.blobs.path_for(d).unlink()
    report = store.verify()
    assert report.missing_blobs == [d] and "a" in report.affected_models


def test_du(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["hardlink"])
    a, b = pipeline(tmp_path / "a", 1), pipeline(tmp_path / "b", 2)
    _install(store, a, "a")
    _install(store, b, "b")
    sizes_a = {p: p.stat().st_size for p in a.rglob("*") if p.is_file()}
    sizes_b = {p: p.stat().st_size for p in b.rglob("*") if p.is_file()}
    report = store.du()
    assert report.logical_bytes == sum(sizes_a.values()) + sum(sizes_b.values())
    unet = lambda s: sum(v for p, v in s.items() if p.parent.name == "unet")  # noqa: E731
    assert report.physical_bytes == sum(sizes_a.values()) + unet(sizes_b)
    assert report.saved_bytes == report.logical_bytes - report.physical_bytes > 0
    assert report.per_model["a"].unique_bytes == unet(sizes_a)
    assert report.per_model["b"].logical == sum(sizes_b.values())
    db.close()


def test_recover_drops_stale_pending_and_tmp(store: ContentStore, tmp_path: Path) -> None:
    stray = store.blobs.tmp / "incoming-deadbeef"
    stray.write_bytes(b"half")
    store.add_file(write(tmp_path / "x", b"x"))
    with store.db.begin() as c:
        c.execute(sa.text("UPDATE storage_pending SET created_at = :t"), {"t": time.time() - 10 * 86400})
    done = store.recover(tmp_age_seconds=0)
    assert str(stray) in done["tmp_removed"] and len(done["pending_dropped"]) == 1
    assert not stray.exists()
