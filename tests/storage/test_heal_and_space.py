"""Issue 13: damaged blobs are healed by a re-ingest; a full disk leaves nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from _storage_helpers import make_store, pipeline, write

from modeldepot.errors import InsufficientSpaceError
from modeldepot.storage import ContentStore
from modeldepot.storage import _blobs as blobs_module


def _corrupt(store: ContentStore, digest: str) -> None:
    blob = store.blobs.path_for(digest)
    blob.chmod(0o644)
    with blob.open("r+b") as f:
        f.seek(10)
        f.write(b"\xff\xfe")


def _enospc_after(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    """``os.write`` as on a full disk: ``allowed`` bytes in short writes, then ENOSPC."""
    real_write = os.write
    left = [allowed]

    def write_until_full(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(memoryview(data)[: min(len(data), left[0], 1000)]))
        left[0] -= n
        return n

    monkeypatch.setattr(blobs_module.os, "write", write_until_full)


def test_enospc_after_a_short_write_is_a_clear_error_not_buffererror(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "big.bin", os.urandom(300_000))
    _enospc_after(monkeypatch, 5_000)  # short writes leave slices of the mmap alive on failure
    with pytest.raises(InsufficientSpaceError, match=r"no space left on .*blobs: need 300000 bytes, have \d+"):
        store.stage(src)
    monkeypatch.undo()
    assert list(store.blobs.tmp.glob("incoming-*")) == []
    assert list(store.blobs.iter_files()) == []
    assert src.read_bytes()[:10]  # the source is untouched


def test_enospc_in_the_middle_of_a_folder_leaves_no_blob_and_no_pending_row(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "folder"
    write(src / "a.bin", os.urandom(2_000))  # stored before the disk fills
    write(src / "b.bin", os.urandom(200_000))
    _enospc_after(monkeypatch, 10_000)
    with pytest.raises(InsufficientSpaceError):
        store.stage(src)
    monkeypatch.undo()
    assert list(store.blobs.iter_files()) == []
    assert list(store.blobs.tmp.glob("incoming-*")) == []
    with store.db.connect() as c:
        from modeldepot.storage._schema import q

        assert c.execute(q("SELECT COUNT(*) FROM storage_pending")).scalar() == 0


def test_a_failed_stage_keeps_blobs_other_models_use(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = os.urandom(2_000)
    first = write(tmp_path / "m1" / "shared.bin", shared)
    store.import_files(first.parent, "m1", store.config.models_path / "m1")
    src = tmp_path / "m2"
    write(src / "a-shared.bin", shared)
    write(src / "b-big.bin", os.urandom(200_000))
    _enospc_after(monkeypatch, 1_000)
    with pytest.raises(InsufficientSpaceError):
        store.stage(src)
    monkeypatch.undo()
    assert store.verify().ok  # m1's blob is still there and sound


def test_verify_marks_a_corrupt_blob_and_the_next_ingest_replaces_it(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["hardlink", "copy"])
    try:
        src = pipeline(tmp_path / "p", 1)
        store.import_files(src, "k1", store.config.models_path / "p")
        vae = store.manifest("k1").entries
        digest = next(e.digest for e in vae if e.relpath == "vae/diffusion_pytorch_model.safetensors")
        _corrupt(store, digest)
        report = store.verify(repair=True)
        assert digest in report.corrupt_blobs
        assert report.remaining and not report.healthy  # no good copy: still damaged, and it says so
        assert store.is_known_bad(digest)
        # Ingesting the same content again replaces the damaged blob instead of deduplicating onto
        # it, and rebuilds the model whose file was hardlinked to the damaged inode.
        staged = store.stage(src)
        store.discard(staged)
        assert staged.healed == (digest,)
        assert not store.is_known_bad(digest)
        assert store.blobs.verify(digest) is True
        assert store.verify().ok
    finally:
        db.close()


def test_an_unmarked_blob_is_still_deduplicated(store: ContentStore, tmp_path: Path) -> None:
    src = write(tmp_path / "f.bin", os.urandom(5_000))
    info = store.add_file(src)
    again = store.add_file(src)
    assert (again.digest, again.healed) == (info.digest, False)


def test_repair_that_heals_everything_is_healthy(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["copy"])
    try:
        src = pipeline(tmp_path / "p", 2)
        store.import_files(src, "k", store.config.models_path / "p")
        damaged = store.config.models_path / "p" / "unet" / "config.json"
        damaged.chmod(0o644)
        damaged.write_text("{}")
        report = store.verify(repair=True)
        assert not report.ok and report.repaired
        assert report.remaining == [] and report.healthy
    finally:
        db.close()
