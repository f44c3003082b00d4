"""Loads are exact (issue 13): a missing, extra or reshaped tensor is a ModelLoadError naming it,
on every path (diffusers / transformers ``from_pretrained``, single-file checkpoints, state-dict
builds), unless the caller asks for a partial load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from safetensors.torch import load_file, save_file  # noqa: E402

from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.load import InvalidSubmodelError, ModelCache, ModelLoadError, ModelLoadService  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def svc(depot_config: DepotConfig) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))


def _edit(path: Path, drop: str | None = None, add: str | None = None, reshape: str | None = None) -> None:
    sd = load_file(str(path))
    if drop is not None:
        del sd[drop]
    if add is not None:
        sd[add] = torch.zeros(3)
    if reshape is not None:
        sd[reshape] = torch.zeros(*[d + 1 for d in sd[reshape].shape])
    save_file(sd, str(path))


def _copy(src: Path, dest: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    return dest


# ----- from_pretrained (diffusers and transformers folders) ---------------------------------------
def test_diffusers_folder_with_a_missing_weight_is_an_error(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    vae = _copy(tiny["vae"], tmp_path / "vae")
    _edit(vae / "diffusion_pytorch_model.safetensors", drop="decoder.conv_out.bias")
    cfg = mkcfg(vae, type="vae", format="diffusers")
    with pytest.raises(ModelLoadError, match=r"missing keys: decoder\.conv_out\.bias") as err:
        svc.load_model(cfg)
    assert "AutoencoderKL" in str(err.value) and str(vae) in str(err.value)
    # The explicit opt-in loads it, and is cached apart from exact loads.
    partial = svc.load_model(cfg, partial=True)
    assert partial.model.decoder.conv_out.bias.shape == (3,)
    with pytest.raises(ModelLoadError):
        svc.load_model(cfg)


def test_diffusers_folder_with_an_extra_tensor_is_an_error(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    pipe = _copy(tiny["pipeline"], tmp_path / "pipe")
    _edit(pipe / "unet" / "diffusion_pytorch_model.safetensors", add="down_blocks.9.stowaway.weight")
    cfg = mkcfg(pipe, type="main", format="diffusers")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: down_blocks\.9\.stowaway\.weight"):
        svc.load_model(cfg, "unet")
    assert svc.load_model(cfg, "vae").model is not None  # the other parts are fine


def test_diffusers_folder_with_a_wrong_shape_is_an_error_even_partial(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    vae = _copy(tiny["vae"], tmp_path / "vae")
    _edit(vae / "diffusion_pytorch_model.safetensors", reshape="decoder.conv_out.bias")
    cfg = mkcfg(vae, type="vae", format="diffusers")
    for partial in (False, True):
        with pytest.raises(ModelLoadError, match=r"decoder\.conv_out\.bias"):
            svc.load_model(cfg, partial=partial)


def test_transformers_folder_with_a_missing_weight_is_an_error(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    pipe = _copy(tiny["pipeline"], tmp_path / "pipe")
    te = pipe / "text_encoder" / "model.safetensors"
    key = next(k for k in load_file(str(te)) if k.endswith("layers.1.mlp.fc2.weight"))
    _edit(te, drop=key)
    cfg = mkcfg(pipe, type="main", format="diffusers")
    with pytest.raises(ModelLoadError, match=r"CLIPTextModel: 1 missing keys: .*layers\.1\.mlp\.fc2\.weight"):
        svc.load_model(cfg, "text_encoder")


# ----- single-file checkpoints ----------------------------------------------------------------------
def _sd1(tiny: dict[str, Any], tmp_path: Path, mkcfg: Any, **edit: str) -> Any:
    ck = tiny["checkpoint"]
    path = _copy(ck.path, tmp_path / "ck.safetensors")
    _edit(path, **edit)
    return mkcfg(path, type="main", format="checkpoint", config_path=str(ck.config_dir))


def test_checkpoint_unet_drops_no_tensor(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    cfg = _sd1(tiny, tmp_path, mkcfg, add="model.diffusion_model.input_blocks.1.9.stowaway")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: model\.diffusion_model\.input_blocks\.1\.9\.stowaway"):
        svc.load_model(cfg, "unet")


def test_checkpoint_unet_missing_weight(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    cfg = _sd1(tiny, tmp_path, mkcfg, drop="model.diffusion_model.out.2.bias")
    with pytest.raises(ModelLoadError, match=r"UNet2DConditionModel: 1 missing keys: conv_out\.bias"):
        svc.load_model(cfg, "unet")
    unet = svc.load_model(cfg, "unet", partial=True).model
    assert not any(p.is_meta for p in unet.parameters())


def test_checkpoint_vae_and_text_encoder_missing_weights(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    sd = load_file(str(tiny["checkpoint"].path))
    te_key = next(k for k in sd if k.startswith("cond_stage_model.") and k.endswith("layers.0.mlp.fc1.bias"))
    cfg = _sd1(tiny, tmp_path, mkcfg, drop="first_stage_model.decoder.conv_out.bias")
    with pytest.raises(ModelLoadError, match=r"AutoencoderKL: 1 missing keys: decoder\.conv_out\.bias"):
        svc.load_model(cfg, "vae")
    path = Path(cfg.path)
    _edit(path, drop=te_key)
    with pytest.raises(ModelLoadError, match=r"CLIPTextModel: 1 missing keys: .*layers\.0\.mlp\.fc1\.bias"):
        svc.load_model(cfg, "text_encoder")


def test_single_file_vae_missing_weight(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    path = _copy(tiny["vae_file"], tmp_path / "vae.safetensors")
    _edit(path, drop="decoder.norm_out.weight")
    cfg = mkcfg(path, type="vae", format="checkpoint", config_path=str(tiny["checkpoint"].config_dir))
    with pytest.raises(ModelLoadError, match=r"missing keys: decoder\.conv_norm_out\.weight"):
        svc.load_model(cfg)


def test_single_file_encoder_extra_tensor(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    path = F.tiny_clip_l_single_file(tmp_path / "clip_l.safetensors")
    _edit(path, add="text_model.encoder.layers.0.stowaway")
    cfg = mkcfg(path, type="clip_embed", format="checkpoint", base="any")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: text_model\.encoder\.layers\.0\.stowaway"):
        svc.load_model(cfg)


def test_upscaler_missing_weight_names_it(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    path = _copy(tiny["esrgan_basicsr"], tmp_path / "x4.safetensors")
    sd = load_file(str(path))
    key = next(k for k in sd if k.endswith("conv_hr.bias"))
    _edit(path, drop=key)
    cfg = mkcfg(path, type="spandrel_image_to_image", format="checkpoint", base="any")
    with pytest.raises(ModelLoadError, match=r"ESRGAN \(RRDBNet\) upscaler: 1 missing keys: conv_hr\.bias") as err:
        svc.load_model(cfg)
    assert "unsupported" not in str(err.value)


@pytest.mark.parametrize(
    ("drop", "add"), [("controlnet_mid_block.bias", None), (None, "controlnet_down_blocks.9.extra")]
)
def test_single_file_controlnet_is_exact(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any, drop: str | None, add: str | None
) -> None:
    cn_dir = tiny["controlnet"]
    single = _copy(cn_dir / "diffusion_pytorch_model.safetensors", tmp_path / "cn.safetensors")
    conf = tmp_path / "conf" / "controlnet"
    conf.mkdir(parents=True)
    (conf / "config.json").write_bytes((cn_dir / "config.json").read_bytes())
    _edit(single, drop=drop, add=add)
    cfg = mkcfg(single, type="controlnet", format="checkpoint", config_path=str(conf.parent))
    kind = "missing" if drop else "unexpected"
    with pytest.raises(ModelLoadError, match=rf"ControlNetModel: 1 {kind} keys: {drop or add}"):
        svc.load_model(cfg)


# ----- T2I-Adapter files -----------------------------------------------------------------------------
def _tencent_keys(sd: dict[str, Any], blocks: int) -> dict[str, Any]:
    """diffusers FullAdapter names -> TencentARC's (the layout of the released .pth/.safetensors)."""
    out: dict[str, Any] = {}
    for k, v in sd.items():
        parts = k.removeprefix("adapter.").split(".")
        if parts[0] == "body" and parts[2] == "resnets":
            out[f"body.{int(parts[1]) * blocks + int(parts[3])}.{'.'.join(parts[4:])}"] = v
        elif parts[0] == "body":  # in_conv of a stage: its first block's
            out[f"body.{int(parts[1]) * blocks}.{'.'.join(parts[2:])}"] = v
        else:
            out[".".join(parts)] = v
    return out


@pytest.mark.parametrize("layout", ["tencent", "diffusers"])
def test_t2i_adapter_single_file_matches_diffusers(
    svc: ModelLoadService, tmp_path: Path, mkcfg: Any, layout: str
) -> None:
    import diffusers

    torch.manual_seed(0)
    reference = diffusers.T2IAdapter(
        in_channels=3, channels=[8, 16, 16, 32], num_res_blocks=2, downscale_factor=8, adapter_type="full_adapter"
    ).eval()
    sd = reference.state_dict()
    path = tmp_path / "t2i.safetensors"
    save_file(_tencent_keys(sd, 2) if layout == "tencent" else dict(sd), str(path))
    adapter = svc.load_model(mkcfg(path, type="t2i_adapter", format="checkpoint")).model
    assert type(adapter).__name__ == "T2IAdapter"
    hint = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(adapter(hint), reference(hint), strict=True):
            torch.testing.assert_close(got, want)


def test_t2i_adapter_single_file_that_is_not_one(svc: ModelLoadService, tmp_path: Path, mkcfg: Any) -> None:
    path = tmp_path / "t2i.safetensors"
    save_file({"conv_in.weight": torch.zeros(8, 100, 3, 3), "body.0.block1.weight": torch.zeros(8, 8, 3, 3)}, str(path))
    with pytest.raises(ModelLoadError, match="T2I-Adapter"):
        svc.load_model(mkcfg(path, type="t2i_adapter", format="checkpoint"))


# ----- bad submodel names, broken tokenizers ------------------------------------------------------
def test_nonsense_submodel_lists_the_models_parts(svc: ModelLoadService, tiny: dict[str, Any], mkcfg: Any) -> None:
    cfg = mkcfg(tiny["pipeline"], type="main", format="diffusers")
    with pytest.raises(
        InvalidSubmodelError, match=r"'nonsense' is not a submodel of model .*: scheduler, text_encoder"
    ):
        svc.load_model(cfg, "nonsense")
    ck = tiny["checkpoint"]
    cfg = mkcfg(ck.path, type="main", format="checkpoint", config_path=str(ck.config_dir))
    with pytest.raises(
        InvalidSubmodelError, match=r"not a submodel .*: scheduler, text_encoder, tokenizer, unet, vae$"
    ):
        svc.load_model(cfg, "nonsense")


def test_a_broken_tokenizer_is_a_load_error(
    svc: ModelLoadService, tiny: dict[str, Any], tmp_path: Path, mkcfg: Any
) -> None:
    pipe = _copy(tiny["pipeline"], tmp_path / "pipe")
    # A merge of tokens the vocabulary lacks: the tokenizers library raises a bare Exception.
    (pipe / "tokenizer" / "merges.txt").write_text("#version: 0.2\nq\u0100 zz</w>\n", encoding="utf-8")
    cfg = mkcfg(pipe, type="main", format="diffusers")
    with pytest.raises(ModelLoadError, match=r"cannot load model .*tokenizer|cannot load model"):
        svc.load_model(cfg, "tokenizer")
