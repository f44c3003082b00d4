"""The normalized view (document 004) over the one namespace: records are MODEL_NAME, every
installed model has parts, identical parts are one part with a refcount, export is byte-identical."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage_helpers import tree_sha256

from modeldepot import ModelManager
from modeldepot.errors import AmbiguousModelException, DuplicateModelException, StorageError, UnknownModelException
from modeldepot.storage import NormalizedStore
from modeldepot.testing import factories as F


@pytest.fixture
def mm(tmp_path: Path) -> Iterator[ModelManager]:
    with ModelManager.open(home=tmp_path / "home") as m:
        yield m


@pytest.fixture
def nm(mm: ModelManager) -> NormalizedStore:
    return mm.normalized


def _family(mm: ModelManager, root: Path, n: int = 3) -> list[str]:
    return [mm.install.install_path(p) for p in F.write_sd_pipeline_family(root, n)]


def test_installed_pipelines_are_found_with_shared_parts(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    _family(mm, tmp_path / "fam")
    vaes = {nm.get_pipeline_by_name(f"pipeline-{i}", "sd-1", "vae").digest for i in range(3)}
    unets = {nm.get_pipeline_by_name(f"pipeline-{i}", "sd-1", "unet").digest for i in range(3)}
    assert len(vaes) == 1 and len(unets) == 3
    vae = nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae")
    assert vae.refcount == 3 and vae.submodel == "vae" and not vae.embedded
    assert (vae.path / "config.json").is_file() and "diffusion_pytorch_model.safetensors" in vae.files
    assert nm.get_pipeline_by_name("pipeline-1", "sd-1", "text_encoder").refcount == 3
    assert nm.get_pipeline_by_name("pipeline-1", "sd-1", "tokenizer").refcount == 3
    counts = sorted(nm.part_refcounts().values())
    assert counts.count(1) == 3 and counts[-1] == 3  # three unets, the rest shared by all three


def test_imported_models_are_records(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    lora = F.write_lora(tmp_path / "LoWRA.safetensors")
    key = nm.import_model(lora, name="LoWRA", description="LoWRA adapted for low light", source="stabilityai/lowra")
    record = mm.store.get_model(key)
    assert record.name == "LoWRA" and str(record.type) == "lora"
    assert [r.key for r in mm.store.all_models()] == [key]  # what `modeldepot list` shows
    info = nm.get_model_by_name(name="LoWRA", type="lora")
    assert info.key == key and info.description == "LoWRA adapted for low light"
    assert info.source == "stabilityai/lowra" and info.path.read_bytes() == lora.read_bytes()
    with pytest.raises(DuplicateModelException):
        nm.import_model(F.write_lora(tmp_path / "other.safetensors", seed=5), name="LoWRA", type="lora")


def test_get_model_by_name_errors(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    _family(mm, tmp_path / "fam", 1)
    info = nm.get_model_by_name("pipeline-0", "main")
    assert info.is_pipeline and info.base == "sd-1"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(info.parts)
    with pytest.raises(UnknownModelException):
        nm.get_model_by_name("pipeline-0", "lora")
    with pytest.raises(UnknownModelException):
        nm.get_pipeline_by_name("pipeline-0", "sdxl", "vae")
    with pytest.raises(UnknownModelException, match="no submodel"):
        nm.get_pipeline_by_name("pipeline-0", "sd-1", "transformer")
    nm.import_model(F.write_vae(tmp_path / "v1.safetensors"), name="same", type="vae", base="sd-1")
    nm.import_model(F.write_vae(tmp_path / "v2.safetensors", base="sdxl", seed=2), name="same", type="vae", base="sdxl")
    with pytest.raises(AmbiguousModelException, match="pass base="):
        nm.get_model_by_name("same", "vae")
    assert nm.get_model_by_name("same", "vae", base="sdxl").base == "sdxl"


def test_an_sd1_vae_part_serves_sd2(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    _family(mm, tmp_path / "fam", 1)
    vae = nm.get_pipeline_by_name("pipeline-0", "sd-2", "vae")
    assert {"sd-1", "sd-2"} <= set(vae.bases)
    with pytest.raises(UnknownModelException):
        nm.get_pipeline_by_name("pipeline-0", "sd-2", "unet")  # a unet part has its model's base only


def test_a_base_override_never_adds_unknown(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    key = nm.import_model(F.write_lora(tmp_path / "l.safetensors"), base="sd-2")
    info = nm.get_model_by_name("l", "lora")
    assert info.key == key and info.base == "sd-2" and "unknown" not in info.compatible_bases
    assert all("unknown" not in p.bases for p in info.parts.values())


def test_export_creates_destination_name(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    roots = F.write_sd_pipeline_family(tmp_path / "fam", 2)
    for root in roots:
        mm.install.install_path(root)
    out = nm.export("pipeline-1", "sd-1", tmp_path / "out")
    assert out == tmp_path / "out" / "pipeline-1" and tree_sha256(out) == tree_sha256(roots[1])
    with pytest.raises(StorageError, match="exists"):
        nm.export("pipeline-1", "sd-1", tmp_path / "out")
    lora = F.write_lora(tmp_path / "style.safetensors")
    nm.import_model(lora)
    single = nm.export("style", "sd-1", tmp_path / "out")
    assert single == tmp_path / "out" / "style.safetensors" and single.read_bytes() == lora.read_bytes()


def test_export_of_a_model_registered_in_place(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    lora = F.write_lora(tmp_path / "mine.safetensors")
    mm.install.register_path(lora)
    out = nm.export("mine", "sd-1", tmp_path / "out")
    assert out.read_bytes() == lora.read_bytes()
    lora.write_bytes(lora.read_bytes()[:-1] + b"\x01")
    with pytest.raises(StorageError, match="changed since"):
        nm.export("mine", "sd-1", tmp_path / "out2")


def test_delete_keeps_shared_parts_until_last_user(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    keys = _family(mm, tmp_path / "fam", 2)
    vae_id = nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae").digest
    nm.delete(keys[0])
    assert nm.get_pipeline_by_name("pipeline-1", "sd-1", "vae").refcount == 1
    with pytest.raises(UnknownModelException):
        mm.store.get_model(keys[0])
    nm.delete(keys[1])
    assert vae_id not in nm.part_refcounts() and nm.part_refcounts() == {}
    assert mm.storage.refcounts() == {}


def test_parts_of_models_installed_before_parts_are_computed_on_demand(
    mm: ModelManager, nm: NormalizedStore, tmp_path: Path
) -> None:
    _family(mm, tmp_path / "fam", 2)
    before = nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae")
    with mm.db.begin() as conn:
        conn.exec_driver_sql("DELETE FROM nm_model_part")
        conn.exec_driver_sql("DELETE FROM nm_part_base")
        conn.exec_driver_sql("DELETE FROM nm_part")
    assert nm.part_refcounts() == {}
    again = nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae")
    assert again.digest == before.digest and again.refcount == 1  # pipeline-1 is not read until asked
    nm.list_models()
    assert nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae").refcount == 2


def test_single_file_parts_are_recorded_at_install(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    a = mm.install.install_path(F.write_sd1_checkpoint(tmp_path / "a.safetensors", seed=1))
    info = nm.get_model_by_name("a", "main")
    assert info.key == a and not info.is_pipeline
    embedded = {k: p for k, p in info.parts.items() if p.embedded}
    assert set(embedded) == {"unet", "vae", "text_encoder"}
    assert {"sd-1", "sd-2"} <= set(embedded["vae"].bases) and embedded["unet"].bases == ("sd-1",)
    # Another checkpoint: different weights, different parts.
    mm.install.install_path(F.write_sd1_checkpoint(tmp_path / "b.safetensors", seed=2))
    other = nm.get_model_by_name("b", "main")
    assert other.parts["vae"].digest != embedded["vae"].digest


def test_single_file_part_ids_ignore_names_and_non_weights(tmp_path: Path) -> None:
    """The part id is over tensor bytes only: renamed keys, other order, integer buffers and
    metadata do not change it; one changed weight does."""
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    from modeldepot.identify import read_safetensors_header
    from modeldepot.storage._blobs import hash_path
    from modeldepot.storage._parts import TensorTap, ldm_component, tensors_part_id, whole

    def part_id(path: Path, component_of: object) -> str:
        tap = TensorTap(read_safetensors_header(path), component_of)  # type: ignore[arg-type]
        hash_path(path, tap.feed)
        return tensors_part_id(tap.result()["vae"][0])

    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float16)}
    ldm = {f"first_stage_model.{k}": v for k, v in w.items()}
    ldm["first_stage_model.ids"] = np.arange(3, dtype=np.int64)
    save_file(ldm, str(tmp_path / "ldm.safetensors"), metadata={"x": "y"})
    save_file({"z.weight": w["a"].reshape(4, 4), "y.bias": w["b"]}, str(tmp_path / "diff.safetensors"))
    changed = dict(w, b=w["b"].copy())
    changed["b"][0] += 1
    save_file(changed, str(tmp_path / "changed.safetensors"))
    one = part_id(tmp_path / "ldm.safetensors", ldm_component)
    assert one == part_id(tmp_path / "diff.safetensors", whole("vae"))
    assert one != part_id(tmp_path / "changed.safetensors", whole("vae"))


@pytest.mark.torch
def test_a_single_files_vae_part_is_converted_once_and_shared(
    mm: ModelManager, nm: NormalizedStore, tmp_path: Path
) -> None:
    pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKL

    mm.install.install_path(F.write_sd1_checkpoint(tmp_path / "ckpt.safetensors", seed=3))
    part = nm.get_pipeline_by_name("ckpt", "sd-1", "vae")
    assert part.embedded and part.path.is_dir() and (part.path / "config.json").is_file()
    assert nm.get_pipeline_by_name("ckpt", "sd-1", "vae").path == part.path  # built once
    assert mm.storage.has_model(f"nm-part-{part.digest}")  # stored as its own blobs
    converted = AutoencoderKL.from_pretrained(part.path)
    with mm.load_model_by_attr("ckpt", "sd-1", "main", "vae") as original:
        for name, tensor in original.state_dict().items():
            torch.testing.assert_close(
                tensor.float(), converted.state_dict()[name].float(), rtol=0, atol=0, equal_nan=True
            )

    # A diffusers pipeline whose VAE holds the same weights (diffusers names, linear attention):
    # one part, used by two models.
    pipe = F.write_sd_pipeline_family(tmp_path / "fam", 1)[0]
    shutil.rmtree(pipe / "vae")
    shutil.copytree(part.path, pipe / "vae")
    mm.install.install_path(pipe)
    shared = nm.get_pipeline_by_name("pipeline-0", "sd-1", "vae")
    assert shared.digest == part.digest and shared.refcount == 2
    # The part's own copy goes with the last model that uses it.
    nm.delete(nm.get_model_by_name("ckpt", "main").key)
    assert part.path.is_dir()
    nm.delete(nm.get_model_by_name("pipeline-0", "main").key)
    assert not part.path.exists() and not mm.storage.has_model(f"nm-part-{part.digest}")


@pytest.mark.torch
def test_the_load_cache_shares_identical_parts(mm: ModelManager, nm: NormalizedStore, tmp_path: Path) -> None:
    """Models whose submodel is the same part, loaded the same way, share one copy in RAM."""
    pytest.importorskip("diffusers")
    for root in F.write_sd_pipeline_family(tmp_path / "fam", 2):
        mm.install.install_path(root)
    vae0 = mm.load_model_by_attr("pipeline-0", "sd-1", "main", "vae")
    vae1 = mm.load_model_by_attr("pipeline-1", "sd-1", "main", "vae")
    assert vae0.model is vae1.model and vae0.config.key != vae1.config.key
    unet0 = mm.load_model_by_attr("pipeline-0", "sd-1", "main", "unet")
    unet1 = mm.load_model_by_attr("pipeline-1", "sd-1", "main", "unet")
    assert unet0.model is not unet1.model  # other weights
    # Single files: the same embedded VAE in two checkpoints is shared; loaded another way, not.
    st = pytest.importorskip("safetensors.numpy")
    a = F.write_sd1_checkpoint(tmp_path / "a.safetensors", seed=4)
    tensors = st.load_file(str(a))
    st.save_file(tensors, str(tmp_path / "b.safetensors"), metadata={"note": "same weights, another file"})
    st.save_file(tensors, str(tmp_path / "c.safetensors"), metadata={"note": "and another"})
    mm.install.install_path(a)
    mm.install.install_path(tmp_path / "b.safetensors")
    mm.install.install_path(tmp_path / "c.safetensors", {"prediction_type": "v_prediction"})
    va, vb, vc = (mm.load_model_by_attr(n, "sd-1", "main", "vae") for n in ("a", "b", "c"))
    assert va.model is vb.model and vc.model is not va.model
