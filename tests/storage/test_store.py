"""Manifests, materialisation, link modes, in-place models, delete, unsafe paths."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from _storage_helpers import make_store, pipeline, tree_sha256, write

from modeldepot.errors import (
    DuplicateModelException,
    NotAllowedError,
    StorageError,
    UnknownModelException,
    UnsafePathError,
)
from modeldepot.storage import ContentStore, hash_tree


def _install(store: ContentStore, src: Path, key: str, name: str) -> Path:
    dest = store.config.models_path / "sd-1" / "main" / name
    store.import_files(src, key, dest)
    return dest


def test_folder_roundtrip_shares_blobs(store: ContentStore, tmp_path: Path) -> None:
    a = pipeline(tmp_path / "a", 1)
    b = pipeline(tmp_path / "b", 2)
    da = _install(store, a, "ka", "a")
    db_ = _install(store, b, "kb", "b")
    assert tree_sha256(da) == tree_sha256(a)
    assert tree_sha256(db_) == tree_sha256(b)
    man = store.manifest("ka")
    assert man.kind == "folder" and man.dest == da and not man.inplace
    assert {e.relpath for e in man.entries} == set(tree_sha256(a))
    refs = store.refcounts()
    vae = next(e.digest for e in man.entries if e.relpath == "vae/diffusion_pytorch_model.safetensors")
    assert refs[vae] == 2
    # 8 files each; only the two unet files differ: 6 shared + 2 x 2 unique = 10 blobs
    assert len(list(store.blobs.iter_files())) == len(set(refs)) == 10


def test_materialised_files_are_readonly_and_atomic(store: ContentStore, tmp_path: Path) -> None:
    dest = _install(store, pipeline(tmp_path / "p", 1), "k", "p")
    for f in dest.rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) & 0o222 == 0
    assert [p.name for p in dest.parent.iterdir()] == ["p"]  # no build leftovers


def test_single_file_model(store: ContentStore, tmp_path: Path) -> None:
    src = write(tmp_path / "m.safetensors", os.urandom(1000))
    dest = store.config.models_path / "sd-1" / "lora" / "m.safetensors"
    res = store.import_files(src, "k1", dest)
    assert res.path == dest and dest.is_file()
    assert dest.read_bytes() == src.read_bytes()
    assert store.manifest("k1").kind == "file"


def test_link_mode_fallthrough_on_exdev(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, db = make_store(home, link_modes=["hardlink", "symlink", "copy"])
    src = write(tmp_path / "m.bin", os.urandom(1000))

    def exdev(*_a: object, **_k: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    staged = store.stage(src)
    monkeypatch.setattr(os, "link", exdev)
    with db.begin() as conn:
        store.commit(conn, "k", staged, dest=store.config.models_path / "m.bin")
    res = store.materialise("k")
    assert res.mode_used == "symlink"
    assert res.path.is_symlink() and not os.readlink(res.path).startswith("/")  # relative link
    assert res.path.read_bytes() == src.read_bytes()
    db.close()


def test_link_mode_eacces_is_an_error_not_a_fallthrough(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, db = make_store(home, link_modes=["hardlink", "copy"])
    src = write(tmp_path / "m.bin", os.urandom(1000))
    staged = store.stage(src)
    with db.begin() as conn:
        store.commit(conn, "k", staged, dest=store.config.models_path / "m.bin")

    def eacces(*_a: object, **_k: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "link", eacces)
    with pytest.raises(PermissionError):
        store.materialise("k")
    assert list(store.config.models_path.iterdir()) == []  # nothing half-built left
    db.close()


def test_hardlink_mode_shares_inode(home: Path, tmp_path: Path) -> None:
    store, db = make_store(home, link_modes=["hardlink", "copy"])
    src = write(tmp_path / "m.bin", os.urandom(1000))
    res = store.import_files(src, "k", store.config.models_path / "m.bin")
    assert res.mode_used == "hardlink"
    blob = store.blobs.path_for(store.manifest("k").entries[0].digest)
    assert res.path.stat().st_ino == blob.stat().st_ino
    db.close()


def test_copy_mode_refuses_corrupt_blob(home: Path, tmp_path: Path) -> None:
    from modeldepot.errors import BlobCorruptError

    store, db = make_store(home, link_modes=["copy"])
    src = write(tmp_path / "m.bin", os.urandom(5000))
    staged = store.stage(src)
    with db.begin() as conn:
        store.commit(conn, "k", staged, dest=store.config.models_path / "m.bin")
    blob = store.blobs.path_for(staged.entries[0].digest)
    blob.chmod(0o644)
    blob.write_bytes(b"evil" + blob.read_bytes()[4:])
    with pytest.raises(BlobCorruptError):
        store.materialise("k")
    assert not (store.config.models_path / "m.bin").exists()
    db.close()


def test_materialise_refuses_outside_models(store: ContentStore, tmp_path: Path) -> None:
    staged = store.stage(write(tmp_path / "m.bin", b"x"))
    with store.db.begin() as conn, pytest.raises(NotAllowedError, match="not inside"):
        store.commit(conn, "k", staged, dest=tmp_path / "elsewhere")
    with store.db.begin() as conn:
        store.commit(conn, "k", staged)
    for bad in (tmp_path / "x", store.config.models_path / ".." / "x", store.config.models_path):
        with pytest.raises(NotAllowedError):
            store.materialise("k", bad)


def test_commit_is_part_of_callers_transaction(store: ContentStore, tmp_path: Path) -> None:
    staged = store.stage(pipeline(tmp_path / "p", 1))

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.db.begin() as conn:
        store.commit(conn, "k", staged, dest=store.config.models_path / "p")
        raise Boom
    assert not store.has_model("k")
    with store.db.begin() as conn:
        store.commit(conn, "k", staged, dest=store.config.models_path / "p")
    with store.db.begin() as conn, pytest.raises(DuplicateModelException):
        store.commit(conn, "k", staged)


def test_rematerialise_repairs_a_damaged_folder(store: ContentStore, tmp_path: Path) -> None:
    src = pipeline(tmp_path / "p", 1)
    dest = _install(store, src, "k", "p")
    (dest / "unet" / "config.json").unlink()
    os.chmod(dest / "vae", 0o755)
    (dest / "vae" / "extra.txt").write_text("junk")
    store.rematerialise("k")
    assert tree_sha256(dest) == tree_sha256(src)


def test_delete_model_removes_files_and_unknown_is_noop(store: ContentStore, tmp_path: Path) -> None:
    dest = _install(store, pipeline(tmp_path / "p", 1), "k", "p")
    assert store.delete_model("k") is True
    assert not dest.exists()
    assert not store.has_model("k")
    assert store.delete_model("k") is False
    with pytest.raises(UnknownModelException):
        store.manifest("k")


def test_inplace_model_never_touched_unless_unconditionally(store: ContentStore, tmp_path: Path) -> None:
    src = pipeline(tmp_path / "user" / "p", 1)
    before = tree_sha256(src)
    with store.db.begin() as conn:
        store.register_inplace(conn, "k", src)
    man = store.manifest("k")
    assert man.inplace and man.dest == src.resolve()
    assert list(store.blobs.iter_files()) == []  # hashes only, no blobs
    assert store.refcounts() == {}
    with pytest.raises(StorageError, match="in place"):
        store.materialise("k")
    store.delete_model("k", delete_files=True)
    assert tree_sha256(src) == before
    with store.db.begin() as conn:
        store.register_inplace(conn, "k2", src, entries=hash_tree(src)[1])
    store.delete_model("k2", unconditionally=True)
    assert not src.exists()


def test_move_folder_import(store: ContentStore, tmp_path: Path) -> None:
    src = pipeline(store.config.home / "downloads" / "p", 1)
    expected = tree_sha256(src)
    dest = store.config.models_path / "p"
    store.import_files(src, "k", dest, move=True)
    assert not src.exists()
    assert tree_sha256(dest) == expected


def test_unsafe_relpath_in_manifest_is_refused(store: ContentStore, tmp_path: Path) -> None:
    dest = _install(store, pipeline(tmp_path / "p", 1), "k", "p")
    with store.db.begin() as conn:
        conn.execute(
            sa.text("UPDATE storage_manifest SET relpath = '../../escaped' WHERE relpath = 'model_index.json'")
        )
    with pytest.raises(UnsafePathError):
        store.manifest("k")
    with pytest.raises(UnsafePathError):
        store.rematerialise("k")
    assert not (dest.parent.parent / "escaped").exists()
    for bad in ("/etc/passwd", "a/../../b"):
        with store.db.begin() as conn, pytest.raises(UnsafePathError):
            from modeldepot.storage.base import ManifestEntry, StagedModel

            entry = ManifestEntry(bad, "0" * 64, 1)
            store.commit(conn, "bad", StagedModel("s", "folder", (entry,), tmp_path))


def test_symlinks_inside_followed_outside_and_loops_refused(store: ContentStore, tmp_path: Path) -> None:
    src = pipeline(tmp_path / "p", 1)
    (src / "alias.json").symlink_to("model_index.json")
    staged = store.stage(src)
    assert "alias.json" in {e.relpath for e in staged.entries}
    (tmp_path / "secret").write_text("s")
    (src / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="outside"):
        store.stage(src)
    (src / "leak").unlink()
    (src / "unet" / "loop").symlink_to("..")
    with pytest.raises(StorageError, match="loop"):
        store.stage(src)
    (src / "unet" / "loop").unlink()
    (src / "self").symlink_to("self")
    with pytest.raises(StorageError, match="loop"):
        store.stage(src)


@pytest.mark.postgres
def test_store_on_postgresql(home: Path, tmp_path: Path, pg_url: str) -> None:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig

    cfg = DepotConfig(home=home, db=pg_url)
    db = Database.open(pg_url)
    store = ContentStore(cfg, db)
    a = _install(store, pipeline(tmp_path / "a", 1), "a", "a")
    _install(store, pipeline(tmp_path / "b", 2), "b", "b")
    assert tree_sha256(a) == tree_sha256(tmp_path / "a")
    assert sorted(set(store.refcounts().values())) == [1, 2]
    assert store.du().per_model["a"].unique_bytes > 0
    store.delete_model("a")
    assert len(store.gc(grace_seconds=0).removed) == 2
    assert store.verify().ok
    db.close()
    from modeldepot import ModelManager
    from modeldepot.testing import factories as F

    src = F.write_sd_pipeline_family(tmp_path / "fam", 2)
    with ModelManager.open(home=tmp_path / "home2", db=pg_url) as mm:
        for root in src:
            mm.normalized.import_model(root)
        assert mm.normalized.get_pipeline_by_name("pipeline-1", "sd-1", "vae").refcount == 2
        assert tree_sha256(mm.normalized.export("pipeline-0", "sd-1", tmp_path / "out")) == tree_sha256(src[0])


def test_materialise_elsewhere_moves_the_model(store: ContentStore, tmp_path: Path) -> None:
    src = pipeline(tmp_path / "p", 1)
    old = _install(store, src, "k", "p")
    new = store.config.models_path / "sdxl" / "main" / "p"
    assert store.materialise("k", new).path == new
    assert not old.exists() and store.manifest("k").dest == new
    assert tree_sha256(new) == tree_sha256(src)
