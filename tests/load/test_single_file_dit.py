"""Single-file SD-3 / FLUX.1 checkpoints, and architectures read from original-layout tensors.

The DiT files are made from tiny random diffusers transformers put into the original layout (the
inverse of diffusers' converters); loading them must give back the same weights. The shipped family
configs must come back unchanged from tensors of the released architectures (built on the meta
device, so no memory), which is what keeps real files loading as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from modeldepot import ModelManager  # noqa: E402
from modeldepot.load import InvalidSubmodelError, ModelLoadError  # noqa: E402
from modeldepot.load.loaders._ldm_config import openclip_text_config, unet_config_from_ldm  # noqa: E402
from modeldepot.load.loaders.components import controlnet_config_from_tensors  # noqa: E402
from modeldepot.load.loaders.single_file import shipped_config_dir  # noqa: E402
from modeldepot.taxonomy import BaseModelType  # noqa: E402
from modeldepot.testing.factories import _tiny  # noqa: E402
from modeldepot.testing.factories import torch_models as T  # noqa: E402

pytestmark = pytest.mark.torch


def _save(sd: dict[str, Any], path: Path, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _load(tmp_path: Path, path: Path, submodel: str = "transformer") -> Any:
    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(path))
        return mm.load.load_model(config, submodel).model


def _config(model: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if not k.startswith("_")}


def _same(model: Any, reference: Any) -> None:
    assert _config(model) == _config(reference)
    got, want = model.state_dict(), reference.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k].float(), v.float()), k


@pytest.mark.parametrize(("variant", "prefix"), [("dev", ""), ("schnell", "model.diffusion_model."), ("dev_fill", "")])
def test_flux_checkpoint_loads_the_same_weights(tmp_path: Path, variant: str, prefix: str) -> None:
    torch.manual_seed(0)
    reference = diffusers.FluxTransformer2DModel(**_tiny.flux_config(variant)).eval()
    path = _save(T.flux_to_bfl(reference.state_dict()), tmp_path / "flux.safetensors", prefix)
    _same(_load(tmp_path, path), reference)


def test_sd3_checkpoint_loads_the_same_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = diffusers.SD3Transformer2DModel(**_tiny.sd3_config()).eval()
    path = _save(T.sd3_to_sai(reference.state_dict()), tmp_path / "sd3.safetensors", "model.diffusion_model.")
    _same(_load(tmp_path, path), reference)


def test_dit_checkpoint_with_a_missing_tensor_is_an_error(tmp_path: Path) -> None:
    torch.manual_seed(2)
    sd = T.flux_to_bfl(diffusers.FluxTransformer2DModel(**_tiny.flux_config("dev")).state_dict())
    del sd["single_blocks.0.linear2.weight"]
    with pytest.raises(ModelLoadError, match=r"single_blocks\.0\.linear2\.weight"):
        _load(tmp_path, _save(sd, tmp_path / "flux.safetensors"))


def test_dit_checkpoint_has_no_tokenizer(tmp_path: Path) -> None:
    from modeldepot.testing import factories as F

    with pytest.raises(InvalidSubmodelError, match="install the diffusers repo"):
        _load(tmp_path, F.write_sd3_checkpoint(tmp_path / "sd3.safetensors"), "tokenizer")


def test_dit_controlnet_file_is_a_clear_error(tmp_path: Path) -> None:
    from modeldepot.testing import factories as F

    path = F.write_controlnet(tmp_path / "flux-cn.safetensors", style="flux")
    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(path))
        with pytest.raises(ModelLoadError, match="single-file flux ControlNet is not supported yet"):
            mm.load.load_model(config)


_ARCH = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "cross_attention_dim",
    "attention_head_dim",
    "use_linear_projection",
    "projection_class_embeddings_input_dim",
    "conditioning_embedding_out_channels",
)


def _family(base: str, sub: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shipped_config_dir(BaseModelType(base)) / sub / "config.json").read_text())
    return data


@pytest.mark.parametrize("base", ["sd-1", "sd-2", "sdxl", "sdxl-refiner"])
def test_released_unet_tensors_give_the_shipped_config(base: str) -> None:
    from accelerate import init_empty_weights

    family = _family(base, "unet")
    with init_empty_weights():
        unet = diffusers.UNet2DConditionModel.from_config(family)
    ldm = T.unet_to_ldm(dict(unet.state_dict()), dict(unet.config))
    inferred = unet_config_from_ldm(family, ldm, "model.diffusion_model.")
    for key in _ARCH:
        if key in family:
            assert inferred[key] == family[key], key
    depth = family.get("transformer_layers_per_block", 1)
    want = depth if isinstance(depth, list) else [depth] * len(family["block_out_channels"])
    # what a depth decides: the stages with attention, and the mid block (the last entry)
    used = [i for i, t in enumerate(family["down_block_types"]) if "CrossAttn" in t] + [len(want) - 1]
    assert [inferred["transformer_layers_per_block"][i] for i in used] == [want[i] for i in used]


@pytest.mark.parametrize("base", ["sd-1", "sdxl"])
def test_released_controlnet_tensors_give_the_shipped_config(base: str) -> None:
    from accelerate import init_empty_weights

    family = _family(base, "controlnet")
    with init_empty_weights():
        cn = diffusers.ControlNetModel.from_config(family)
    sd = dict(cn.state_dict())
    for layout in (sd, T.controlnet_to_ldm(sd, dict(cn.config))):
        inferred = controlnet_config_from_tensors(family, layout)
        for key in _ARCH:
            if key in family:
                assert inferred[key] == family[key], key


@pytest.mark.parametrize(("base", "sub"), [("sd-2", "text_encoder"), ("sdxl", "text_encoder_2")])
def test_released_openclip_tensors_give_the_shipped_config(base: str, sub: str) -> None:
    from accelerate import init_empty_weights

    family = _family(base, sub)
    conf = {k: v for k, v in family.items() if k != "model_type"}
    with init_empty_weights():
        te = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**conf))
    sd = {
        k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
        for k, v in te.state_dict().items()
    }
    inferred = openclip_text_config(family, T.openclip_to_ldm(sd, "p."), "p.")
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_attention_heads"):
        assert inferred[key] == family[key], key
