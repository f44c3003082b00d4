"""Main-model checkpoints: SD-1, SD-2, SDXL, SDXL refiner, SD-3, FLUX; variants and prediction types."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.configs import MainCheckpointConfig
from modeldepot.identify import identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType, SchedulerPredictionType
from modeldepot.testing import factories as F

from .identify_helpers import as_record, reason

EPS, VPRED = SchedulerPredictionType.Epsilon, SchedulerPredictionType.VPrediction


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sd1_checkpoint(tmp_path: Path, suffix: str) -> None:
    path = F.write_sd1_checkpoint(tmp_path / f"sd1{suffix}")
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.Main, ModelFormat.Checkpoint, B.StableDiffusion1)
    assert ident.compatible_bases == {B.StableDiffusion1}
    assert ident.variant == "normal"
    assert ident.prediction_type == EPS
    assert ident.repo_variant is None and ident.submodels == {} and ident.overridden == set()
    assert ident.confidence >= 0.9
    reason(ident, "type", "main", "input_blocks.0.0.weight")
    reason(ident, "base", "sd-1", "768", "attn2.to_k.weight")
    reason(ident, "variant", "normal", "in_channels 4")
    reason(ident, "prediction_type", "epsilon")
    source = "pickle key table" if suffix == ".ckpt" else "safetensors header"
    assert ident.extra["source"].startswith(source)
    if suffix == ".ckpt":
        assert ident.extra["unwrapped"] == "state_dict."
    assert isinstance(as_record(ident, path), MainCheckpointConfig)


def test_sd1_inpaint_with_metadata(tmp_path: Path) -> None:
    ident = identify(F.write_sd1_checkpoint(tmp_path / "m.safetensors", inpaint=True, with_metadata=True))
    assert ident.base == B.StableDiffusion1 and ident.variant == "inpaint"
    reason(ident, "base", "declared", "modelspec.architecture", "keys agree")
    reason(ident, "variant", "inpaint")
    assert ident.confidence >= 0.98


def test_sd2_defaults_to_v_prediction(tmp_path: Path) -> None:
    ident = identify(F.write_sd2_checkpoint(tmp_path / "sd2.safetensors"))
    assert (ident.base, ident.variant, ident.prediction_type) == (B.StableDiffusion2, "normal", VPRED)
    reason(ident, "base", "sd-2", "1024")
    reason(ident, "prediction_type", "v_prediction", "SD-2 default", "override")
    assert ident.confidence < 0.9  # a default, not a certainty


def test_sd2_global_step_220000_is_epsilon(tmp_path: Path) -> None:
    ident = identify(F.write_sd2_checkpoint(tmp_path / "sd2-base.ckpt", global_step=220000))
    assert ident.prediction_type == EPS
    reason(ident, "prediction_type", "epsilon", "global_step 220000")


def test_sd2_declared_prediction_type_wins(tmp_path: Path) -> None:
    ident = identify(F.write_sd2_checkpoint(tmp_path / "sd2.safetensors", prediction_type="epsilon"))
    assert ident.prediction_type == EPS
    reason(ident, "prediction_type", "declared", "modelspec.prediction_type")


@pytest.mark.parametrize("variant", ["inpaint", "depth"])
def test_sd2_variants_are_epsilon(tmp_path: Path, variant: str) -> None:
    ident = identify(F.write_sd2_checkpoint(tmp_path / "sd2.safetensors", variant=variant))
    assert (ident.variant, ident.prediction_type) == (variant, EPS)
    reason(ident, "variant", variant, "in_channels")


def test_sdxl_checkpoint(tmp_path: Path) -> None:
    path = F.write_sdxl_checkpoint(tmp_path / "xl.safetensors")
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.Main, ModelFormat.Checkpoint, B.StableDiffusionXL)
    assert (ident.variant, ident.prediction_type) == ("normal", EPS)
    reason(ident, "base", "sdxl", "2048", "input_blocks.4.1")
    reason(ident, "base", "label_emb", "2816", "confirms")
    as_record(ident, path)


@pytest.mark.parametrize(
    ("kwargs", "pred", "needle", "extra"),
    [
        ({"v_pred": True}, VPRED, "v_pred marker", {}),
        ({"edm_vpred": True}, VPRED, "edm_vpred.sigma_max", {"edm": True}),
        ({"edm": True}, EPS, "edm_mean/edm_std", {"edm": True}),
    ],
)
def test_sdxl_prediction_markers(
    tmp_path: Path, kwargs: dict[str, bool], pred: object, needle: str, extra: dict[str, bool]
) -> None:
    ident = identify(F.write_sdxl_checkpoint(tmp_path / "xl.safetensors", **kwargs))
    assert ident.prediction_type == pred
    reason(ident, "prediction_type", needle)
    for k, v in extra.items():
        assert ident.extra[k] == v


def test_sdxl_inpaint(tmp_path: Path) -> None:
    ident = identify(F.write_sdxl_checkpoint(tmp_path / "xl.safetensors", inpaint=True))
    assert (ident.base, ident.variant) == (B.StableDiffusionXL, "inpaint")
    reason(ident, "variant", "inpaint", "in_channels 9")


def test_merged_lora_keys_do_not_make_a_lora(tmp_path: Path) -> None:
    ident = identify(F.write_sdxl_checkpoint(tmp_path / "xl.safetensors", merged_lora=True))
    assert ident.type == ModelType.Main
    lora = next(c for c in ident.candidates if c.rule == "lora")
    assert lora.matched and lora.lost_to == "sd_unet_checkpoint"
    assert any("lost to sd_unet_checkpoint" in r for r in lora.reasons)


def test_sdxl_refiner(tmp_path: Path) -> None:
    ident = identify(F.write_sdxl_refiner_checkpoint(tmp_path / "refiner.safetensors"))
    assert (ident.base, ident.compatible_bases) == (B.StableDiffusionXLRefiner, {B.StableDiffusionXLRefiner})
    reason(ident, "base", "sdxl-refiner", "1280")
    reason(ident, "base", "label_emb", "2560", "confirms")


@pytest.mark.parametrize(("size", "label"), [("medium", "medium"), ("large", "large")])
def test_sd3_checkpoint(tmp_path: Path, size: str, label: str) -> None:
    path = F.write_sd3_checkpoint(tmp_path / "sd3.safetensors", size=size, complete=False)  # full width
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.Main, ModelFormat.Checkpoint, B.StableDiffusion3)
    assert ident.prediction_type is None and ident.extra["sd3_size"] == label
    reason(ident, "base", "sd-3", "joint_blocks")
    reason(ident, "prediction_type", "flow-matching")
    as_record(ident, path)


@pytest.mark.parametrize(
    ("variant", "prefix", "needle"),
    [
        ("dev", "", "guidance"),
        ("schnell", "", "no guidance_in"),
        ("dev_fill", "", "384"),
        ("dev", "model.diffusion_model.", "guidance"),
    ],
)
def test_flux_checkpoint(tmp_path: Path, variant: str, prefix: str, needle: str) -> None:
    path = F.write_flux_checkpoint(tmp_path / "flux.safetensors", variant=variant, prefix=prefix)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base, ident.variant) == (
        ModelType.Main,
        ModelFormat.Checkpoint,
        B.Flux,
        variant,
    )
    assert ident.compatible_bases == {B.Flux} and ident.prediction_type is None
    reason(ident, "base", "flux", "double_blocks")
    reason(ident, "variant", variant, needle)
    assert isinstance(as_record(ident, path), MainCheckpointConfig)


def test_unknown_width_gives_unknown_base_not_an_error(tmp_path: Path) -> None:
    p = "model.diffusion_model."
    path = F.write_safetensors(
        tmp_path / "odd.safetensors",
        {
            f"{p}input_blocks.0.0.weight": (320, 4, 3, 3),
            f"{p}input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 512),
            f"{p}out.2.weight": (4, 320, 3, 3),
        },
    )
    ident = identify(path)
    assert (ident.type, ident.base) == (ModelType.Main, B.Unknown)
    reason(ident, "base", "unknown", "512")
