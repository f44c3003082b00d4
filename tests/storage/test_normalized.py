"""The normalized view: pipelines of shared parts, lookups, byte-identical export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _storage_helpers import pipeline, tree_sha256, write

from modeldepot.errors import DuplicateModelException, StorageError, UnknownModelException
from modeldepot.storage import ContentStore, NormalizedStore


@pytest.fixture
def nm(store: ContentStore) -> NormalizedStore:
    return NormalizedStore(store)


def _family(nm: NormalizedStore, root: Path, n: int = 3) -> list[str]:
    return [nm.import_model(pipeline(root / f"p{i}", i), name=f"p{i}", base="sd-1", type="main") for i in range(n)]


def test_identical_parts_are_one_part_with_refcount(nm: NormalizedStore, tmp_path: Path) -> None:
    _family(nm, tmp_path)
    vaes = {nm.get_pipeline_by_name(f"p{i}", "sd-1", "vae").digest for i in range(3)}
    unets = {nm.get_pipeline_by_name(f"p{i}", "sd-1", "unet").digest for i in range(3)}
    assert len(vaes) == 1 and len(unets) == 3
    vae = nm.get_pipeline_by_name("p0", "sd-1", "vae")
    assert vae.refcount == 3 and vae.submodel == "vae"
    assert (vae.path / "config.json").is_file()  # a folder a diffusers loader opens
    assert set(vae.files) == {"config.json", "diffusion_pytorch_model.safetensors"}
    te = nm.get_pipeline_by_name("p1", "sd-1", "text_encoder")
    assert te.refcount == 3
    # parts: 3 unets + shared vae, text_encoder, tokenizer
    assert len(nm.part_refcounts()) == 6


def test_get_model_by_name(nm: NormalizedStore, tmp_path: Path) -> None:
    _family(nm, tmp_path, 1)
    info = nm.get_model_by_name("p0", "main")
    assert info.is_pipeline and info.base == "sd-1" and set(info.parts) == {"unet", "vae", "text_encoder", "tokenizer"}
    assert tree_sha256(info.path) == tree_sha256(tmp_path / "p0")  # the composed pipeline folder
    with pytest.raises(UnknownModelException):
        nm.get_model_by_name("p0", "lora")
    with pytest.raises(UnknownModelException):
        nm.get_pipeline_by_name("p0", "sdxl", "vae")
    with pytest.raises(UnknownModelException, match="no submodel"):
        nm.get_pipeline_by_name("p0", "sd-1", "transformer")


def test_export_is_byte_identical(nm: NormalizedStore, tmp_path: Path) -> None:
    _family(nm, tmp_path)
    for i in range(3):
        out = nm.export(f"p{i}", "sd-1", tmp_path / "out" / f"p{i}")
        assert tree_sha256(out) == tree_sha256(tmp_path / f"p{i}")
    with pytest.raises(StorageError, match="exists"):
        nm.export("p0", "sd-1", tmp_path / "out" / "p0")


def test_single_file_and_multi_base(nm: NormalizedStore, tmp_path: Path) -> None:
    src = write(tmp_path / "style.safetensors", os.urandom(3000))
    key = nm.import_model(src, type="lora", base="sd-1", format="lycoris")
    info = nm.get_model_by_name("style", "lora")
    assert info.key == key and not info.is_pipeline and info.path.read_bytes() == src.read_bytes()
    (tmp_path / "dest").mkdir()
    out = nm.export("style", "sd-1", tmp_path / "dest")
    assert out == tmp_path / "dest" / "style.safetensors" and out.read_bytes() == src.read_bytes()
    with pytest.raises(DuplicateModelException):
        nm.import_model(src, type="lora", base="sd-1", format="lycoris")


def test_delete_keeps_shared_parts_until_last_user(nm: NormalizedStore, tmp_path: Path) -> None:
    keys = _family(nm, tmp_path, 2)
    vae = nm.get_pipeline_by_name("p0", "sd-1", "vae")
    nm.delete(keys[0])
    assert nm.get_pipeline_by_name("p1", "sd-1", "vae").refcount == 1
    assert vae.path.is_dir()
    nm.delete(keys[1])
    assert not vae.path.exists()
    assert nm.part_refcounts() == {} and nm.store.refcounts() == {}
    assert len(nm.store.gc(grace_seconds=0).removed) > 0
    assert list(nm.store.blobs.iter_files()) == []


def test_import_uses_identify_when_type_missing(nm: NormalizedStore, tmp_path: Path) -> None:
    factories = pytest.importorskip("modeldepot.testing.factories")
    if not hasattr(factories, "write_sd_pipeline_family"):
        pytest.skip("modeldepot.testing.factories.write_sd_pipeline_family not available yet")
    roots = factories.write_sd_pipeline_family(tmp_path / "fam", n=3)
    for i, root in enumerate(roots):
        nm.import_model(root, name=f"f{i}")
    info = nm.get_model_by_name("f0", "main")
    assert info.base == "sd-1"
    assert nm.get_pipeline_by_name("f0", "sd-1", "vae").refcount == 3
    for i, root in enumerate(roots):
        assert tree_sha256(nm.export(f"f{i}", "sd-1", tmp_path / "x" / f"f{i}")) == tree_sha256(root)


def test_recover_rebuilds_pipeline_folder_and_parts(nm: NormalizedStore, tmp_path: Path) -> None:
    import shutil

    _family(nm, tmp_path, 1)
    info = nm.get_model_by_name("p0", "main")
    shutil.rmtree(info.path)
    shutil.rmtree(info.parts["vae"].path)
    (info.path.parent / ".mdbuild-half.1234").mkdir()
    nm.store.recover()
    assert nm.recover() == [info.key]
    assert tree_sha256(info.path) == tree_sha256(tmp_path / "p0")
    assert [p.name for p in info.path.parent.iterdir()] == [info.key]
