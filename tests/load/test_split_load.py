"""A single-file checkpoint record whose path is a split folder loads like the single file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.errors import ModelDepotError  # noqa: E402
from modeldepot.load import ModelCache, ModelLoadService  # noqa: E402
from modeldepot.load.loaders._common import is_safetensors, load_safetensors, load_weights  # noqa: E402
from modeldepot.storage._split import split_checkpoint  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def svc(depot_config: DepotConfig) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))


def _same_state(a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _both(ck: Any, split: Path, mkcfg: Any, base: str) -> tuple[Any, Any]:
    kw = {"type": "main", "format": "checkpoint", "base": base, "config_path": str(ck.config_dir)}
    return mkcfg(ck.path, name="file", **kw), mkcfg(split, name="split", **kw)


def test_split_sd1_checkpoint_loads_like_the_file(
    svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any, tmp_path: Path
) -> None:
    ck = tiny["checkpoint"]
    split_checkpoint(ck.path, tmp_path / "split")
    whole, split = _both(ck, tmp_path / "split", mkcfg, "sd-1")
    for sub in ("unet", "vae", "text_encoder"):
        _same_state(svc.load_model(split, sub).model, svc.load_model(whole, sub).model)
    assert svc.load_model(split, "tokenizer").model("ab").input_ids[0] == 512
    assert svc.load_model(split, "scheduler").model.config.prediction_type == "epsilon"


def test_split_sdxl_checkpoint_loads_like_the_file(svc: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    from modeldepot.testing.factories.torch_models import tiny_sdxl_checkpoint

    ck = tiny_sdxl_checkpoint(tmp_path / "xl")
    manifest = split_checkpoint(ck.path, tmp_path / "split")
    assert manifest.components == ("unet", "vae", "text_encoder", "text_encoder_2")
    whole, split = _both(ck, tmp_path / "split", mkcfg, "sdxl")
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _same_state(svc.load_model(split, sub).model, svc.load_model(whole, sub).model)


def test_each_submodel_reads_only_its_own_part(
    svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any, tmp_path: Path
) -> None:
    ck = tiny["checkpoint"]
    split_checkpoint(ck.path, tmp_path / "split")
    only_vae = tmp_path / "only-vae"
    only_vae.mkdir()
    for name in ("split.json", "vae.safetensors"):
        shutil.copy(tmp_path / "split" / name, only_vae / name)
    whole, partial = _both(ck, only_vae, mkcfg, "sd-1")
    _same_state(svc.load_model(partial, "vae").model, svc.load_model(whole, "vae").model)
    with pytest.raises(ModelDepotError, match=r"unet\.safetensors"):
        svc.load_model(partial, "unet")


def test_weight_readers_accept_a_split_folder(tiny: dict[str, Any], tmp_path: Path) -> None:
    ck = tiny["checkpoint"]
    split_checkpoint(ck.path, tmp_path / "split")
    assert is_safetensors(tmp_path / "split")
    whole = load_weights(ck.path)
    parts = load_weights(tmp_path / "split")
    assert parts.keys() == whole.keys() and all(torch.equal(parts[k], whole[k]) for k in whole)
    vae = load_safetensors(tmp_path / "split", lambda n: n.startswith("first_stage_model."), lambda n: n[18:])
    assert vae and all(not k.startswith("first_stage_model.") for k in vae)
