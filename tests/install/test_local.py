"""Local installs: in place, into the store (copy and move), dedup, delete semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modeldepot.errors import DuplicateModelException, ModelNotFoundException
from modeldepot.manager import ModelManager
from modeldepot.taxonomy import BaseModelType, ModelType
from modeldepot.testing import factories


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_path_copies_into_store_and_materialises(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_sd1_checkpoint(tmp_path / "dream.safetensors")
    key = mm.install.install_path(src)
    rec = mm.store.get_model(key)
    assert (rec.type, rec.base, rec.inplace) == (ModelType.Main, BaseModelType.StableDiffusion1, False)
    path = Path(rec.path)
    assert path == mm.config.models_path / "sd-1" / "main" / "dream.safetensors"
    assert path.read_bytes() == src.read_bytes() and src.exists()
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # read-only (root ignores modes)
    assert path.stat().st_mode & 0o222 == 0
    # The record's hash is the content hash of the file.
    from modeldepot.hashing import ModelHash

    assert rec.hash == ModelHash("blake3").hash(src)


def test_same_content_twice_returns_existing_record(mm: ModelManager, tmp_path: Path) -> None:
    a = factories.write_sdxl_lora(tmp_path / "a.safetensors")
    b = tmp_path / "copy-of-a.safetensors"
    b.write_bytes(a.read_bytes())
    k1 = mm.install.install_path(a)
    k2 = mm.install.install_path(b)
    assert k1 == k2 and len(mm.store.all_models()) == 1
    mm.config.on_duplicate = "error"
    with pytest.raises(DuplicateModelException, match="same content"):
        mm.install.install_path(b)


def test_pipeline_family_is_deduplicated(mm: ModelManager, tmp_path: Path) -> None:
    pipes = factories.write_sd_pipeline_family(tmp_path / "src", n=3)
    keys = [mm.install.install_path(p) for p in pipes]
    assert len(set(keys)) == 3
    names = sorted(mm.store.get_model(k).name for k in keys)
    assert len(set(names)) == 3
    for p, k in zip(pipes, keys, strict=True):
        assert read_tree(Path(mm.store.get_model(k).path)) == read_tree(p)
    du = mm.storage.du()
    unique: dict[str, int] = {}
    import blake3

    for p in pipes:
        for f in p.rglob("*"):
            if f.is_file():
                unique[blake3.blake3(f.read_bytes()).hexdigest()] = f.stat().st_size
    assert du.physical_bytes == sum(unique.values())
    assert du.saved_bytes > 0 and du.logical_bytes > du.physical_bytes


def test_names_unique_per_base_and_type(mm: ModelManager, tmp_path: Path) -> None:
    a = factories.write_sd1_checkpoint(tmp_path / "x" / "model.safetensors", seed=1)
    b = factories.write_sd1_checkpoint(tmp_path / "y" / "model.safetensors", seed=2)
    k1, k2 = mm.install.install_path(a), mm.install.install_path(b)
    assert mm.store.get_model(k1).name == "model"
    assert mm.store.get_model(k2).name == "model (2)"
    assert mm.store.get_model(k1).path != mm.store.get_model(k2).path


def test_move_install_takes_the_file(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_vae(tmp_path / "vae.safetensors")
    data = src.read_bytes()
    key = mm.install.install_path(src, move=True)
    assert not src.exists()
    assert Path(mm.store.get_model(key).path).read_bytes() == data


def test_delete_semantics(mm: ModelManager, tmp_path: Path) -> None:
    owned = factories.write_sd1_checkpoint(tmp_path / "owned.safetensors", seed=3)
    mine = factories.write_sd1_checkpoint(tmp_path / "mine.safetensors", seed=4)
    k_owned = mm.install.install_path(owned)
    k_mine = mm.install.register_path(mine)
    stored = Path(mm.store.get_model(k_owned).path)
    mm.install.delete(k_owned)
    assert not stored.exists()
    mm.install.delete(k_mine)
    assert mine.exists(), "an in-place model's file is the user's"
    k_mine = mm.install.register_path(mine)
    mm.install.unconditionally_delete(k_mine)
    assert not mine.exists()
    assert mm.store.all_models() == []
    assert mm.storage.gc().removed  # the owned model's blob is now garbage


def test_register_missing_path(mm: ModelManager, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundException, match="nope"):
        mm.install.register_path(tmp_path / "nope.safetensors")


def test_local_job_through_the_queue(mm: ModelManager, tmp_path: Path) -> None:
    src = factories.write_textual_inversion(tmp_path / "emb.safetensors")
    job = mm.install.heuristic_import(str(src), inplace=True)
    mm.install.wait_for_job(job, timeout=30)
    assert job.complete, job.error
    assert job.config_out is not None and job.config_out.type == ModelType.TextualInversion
    assert job.config_out.path == str(src.resolve())


def test_scan_registers_a_tree_in_place(mm: ModelManager, tmp_path: Path) -> None:
    root = tmp_path / "webui" / "models"
    factories.write_sd1_checkpoint(root / "Stable-diffusion" / "a.safetensors")
    factories.write_lora(root / "Lora" / "b.safetensors")
    factories.write_diffusers_pipeline(root / "diffusers" / "pipe")
    (root / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text("not a model")
    result = mm.install.scan_and_register(root)
    assert sorted(r["status"] for r in result) == ["registered"] * 3
    again = mm.install.scan_and_register(root)
    assert sorted(r["status"] for r in again) == ["present"] * 3
    assert all(m.inplace for m in mm.store.all_models())


@pytest.mark.parametrize("records", ["sqlite", "yaml"])
def test_invokeai_style_construction(tmp_path: Path, records: str) -> None:
    """ModelInstallService(app_config, record_store, download_queue, event_bus), as InvokeAI builds it."""
    from modeldepot.config import DepotConfig
    from modeldepot.events import EventBus, EventRecorder
    from modeldepot.install import ModelInstallService
    from modeldepot.records import ModelRecordServiceBase

    config = DepotConfig(home=tmp_path / "h", link_modes=["hardlink", "copy"])
    db_file = tmp_path / ("records.yaml" if records == "yaml" else "records.db")
    store = ModelRecordServiceBase.from_db_file(db_file)
    bus = EventBus()
    recorder = EventRecorder(bus)
    installer = ModelInstallService(config, store, None, bus)
    installer.start()
    try:
        src = factories.write_sd1_checkpoint(tmp_path / "m.safetensors")
        job = installer.heuristic_import(str(src))
        installer.wait_for_installs(timeout=30)
        assert job.complete, job.error
        assert store.get_model(job.config_out.key).path.startswith(str(config.models_path))  # type: ignore[union-attr]
        assert "model_install_completed" in recorder.names()
    finally:
        installer.stop()
        store.close()


def test_install_accepts_the_documented_config_field(mm: ModelManager, tmp_path: Path) -> None:
    """Seed 002 calls a checkpoint's config file ``config``; it is ``config_path`` here."""
    src = factories.write_sd1_checkpoint(tmp_path / "c.safetensors")
    key = mm.install.register_path(src, {"config": "configs/stable-diffusion/v1-inference.yaml"})
    rec = mm.store.get_model(key)
    assert rec.config_path == "configs/stable-diffusion/v1-inference.yaml" == rec.config  # type: ignore[attr-defined]


def test_install_model_is_the_documented_spelling_of_import_model(mm: ModelManager, tmp_path: Path) -> None:
    from modeldepot.install import LocalModelSource

    src = factories.write_lora(tmp_path / "doc.safetensors")
    job = mm.install.install_model(LocalModelSource(path=src))
    assert mm.install.wait_for_job(job, timeout=60).complete, job.error
    assert job.config_out is not None and job.config_out.name == "doc"
