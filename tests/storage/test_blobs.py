"""Blobs: content addressing, dedup, move without copy, one-pass copy, full disk."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import blake3
import pytest
from _storage_helpers import write

from modeldepot.errors import InsufficientSpaceError, ModelNotFoundException, StorageError
from modeldepot.storage import ContentStore


def _b3(data: bytes) -> str:
    return str(blake3.blake3(data).hexdigest())


def test_add_file_copy_stores_readonly_blob_named_by_blake3(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = write(tmp_path / "a.safetensors", data)
    info = store.add_file(src)
    assert info.digest == _b3(data) and info.size == len(data)
    blob = store.config.blobs_dir / info.digest[:2] / info.digest
    assert blob.read_bytes() == data
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert src.exists()  # copy mode keeps the source
    assert list(store.blobs.tmp.glob("incoming-*")) == []


def test_duplicate_content_costs_no_space(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    a = store.add_file(write(tmp_path / "a.bin", data))
    b = store.add_file(write(tmp_path / "b.bin", data))
    assert a == b
    blobs = [p for p in store.blobs.iter_files()]
    assert len(blobs) == 1
    assert list(store.blobs.tmp.glob("incoming-*")) == []


def test_empty_file(store: ContentStore, tmp_path: Path) -> None:
    info = store.add_file(write(tmp_path / "empty", b""))
    assert info.size == 0 and info.digest == _b3(b"")
    assert store.blobs.path_for(info.digest).read_bytes() == b""


def test_move_mode_links_same_inode_without_copying(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    src = write(store.config.home / "incoming" / "m.safetensors", data)
    ino = src.stat().st_ino
    info = store.add_file(src, move=True)
    blob = store.blobs.path_for(info.digest)
    assert blob.stat().st_ino == ino  # no byte copied: the source inode became the blob
    assert not src.exists()
    assert blob.read_bytes() == data


def test_move_mode_falls_back_to_copy_across_filesystems(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(10_000)
    src = write(tmp_path / "x.bin", data)

    def exdev(*_a: object, **_k: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", exdev)
    info = store.add_file(src, move=True)
    assert not src.exists()
    assert store.blobs.path_for(info.digest).read_bytes() == data


def test_disk_full_during_ingest_fails_cleanly(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "big.bin", os.urandom(100_000))
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(InsufficientSpaceError, match=r"no space left on .*blobs: need 100000 bytes"):
        store.stage(src)
    monkeypatch.setattr(os, "write", real_write)
    assert list(store.blobs.tmp.glob("incoming-*")) == []
    assert list(store.blobs.iter_files()) == []
    assert store.keys() == []
    assert src.exists()


def test_missing_source_and_folder_errors(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundException, match="no such file"):
        store.add_file(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(StorageError, match="holds no files"):
        store.stage(tmp_path / "d")


def test_copy_out_detects_corruption(store: ContentStore, tmp_path: Path) -> None:
    from modeldepot.errors import BlobCorruptError

    info = store.add_file(write(tmp_path / "f", os.urandom(5000)))
    blob = store.blobs.path_for(info.digest)
    blob.chmod(0o644)
    with blob.open("r+b") as f:
        f.write(b"XX")
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(BlobCorruptError, match="corrupt"):
            store.blobs.copy_out(info.digest, fd)
    finally:
        os.close(fd)


def test_multi_window_copy_with_writeback(store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldepot.storage import _blobs

    monkeypatch.setattr(_blobs, "WRITEBACK_EVERY", 4 << 20)
    data = os.urandom((9 << 20) + 123)  # three copy windows, two writeback hints
    info = store.add_file(write(tmp_path / "big.bin", data))
    assert info.digest == _b3(data)
    assert store.blobs.path_for(info.digest).read_bytes() == data
