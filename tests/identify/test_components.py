"""VAE, CLIP vision, CLIP text, T5 and ESRGAN-family files."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.configs import SpandrelImageToImageConfig
from modeldepot.identify import identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType
from modeldepot.testing import factories as F

from .identify_helpers import as_record, reason

SD_FAMILY = {B.StableDiffusion1, B.StableDiffusion2}


def test_sd_family_vae(tmp_path: Path) -> None:
    path = F.write_vae(tmp_path / "vae-ft-mse.safetensors")
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.VAE, ModelFormat.Checkpoint, B.StableDiffusion1)
    assert ident.compatible_bases == SD_FAMILY
    assert ident.extra["latent_channels"] == 4
    reason(ident, "base", "sd-1", "4 latent channels", "structurally identical", "override")
    assert ident.confidence < 0.9
    as_record(ident, path)


def test_sdxl_vae_by_metadata(tmp_path: Path) -> None:
    ident = identify(F.write_vae(tmp_path / "vae.safetensors", base="sdxl", with_metadata=True))
    assert ident.base == B.StableDiffusionXL
    assert ident.compatible_bases == {B.StableDiffusionXL, B.StableDiffusionXLRefiner}
    reason(ident, "base", "declared", "stable-diffusion-xl-v1-base/vae")


def test_sdxl_vae_by_file_name(tmp_path: Path) -> None:
    ident = identify(F.write_vae(tmp_path / "sdxl_vae.safetensors", base="sdxl"))
    assert ident.base == B.StableDiffusionXL
    reason(ident, "base", "sdxl", "file name", "xl")


@pytest.mark.parametrize(("name", "base"), [("ae.safetensors", B.Flux), ("sd3_vae.safetensors", B.StableDiffusion3)])
def test_sixteen_channel_vae(tmp_path: Path, name: str, base: B) -> None:
    ident = identify(F.write_vae(tmp_path / name, base="flux"))
    assert (ident.type, ident.base, ident.compatible_bases) == (ModelType.VAE, base, {base})
    reason(ident, "base", str(base), "16 latent channels")


@pytest.mark.parametrize("complete", [True, False], ids=["tiny-complete", "full-depth-header"])
@pytest.mark.parametrize(
    ("variant", "value", "needle"), [("L", "large", "ViT-L"), ("H", "huge", "ViT-H"), ("G", "gigantic", "ViT-bigG")]
)
def test_clip_vision(tmp_path: Path, variant: str, value: str, needle: str, complete: bool) -> None:
    path = F.write_clip_vision(tmp_path / "image_encoder.safetensors", variant=variant, complete=complete)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base, ident.variant) == (
        ModelType.CLIPVision,
        ModelFormat.Checkpoint,
        B.Any,
        value,
    )
    assert ident.compatible_bases == {B.Any}
    reason(ident, "variant", value, needle)
    reason(ident, "base", "any")
    assert as_record(ident, path).clip_variant == value  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variant", "value", "width"), [("L", "large", "768"), ("H", "huge", "1024"), ("G", "gigantic", "1280")]
)
def test_clip_text_encoder(tmp_path: Path, variant: str, value: str, width: str) -> None:
    path = F.write_clip_text_encoder(tmp_path / "clip.safetensors", variant=variant)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base, ident.variant) == (
        ModelType.CLIPEmbed,
        ModelFormat.Checkpoint,
        B.Any,
        value,
    )
    reason(ident, "type", "clip_embed")
    reason(ident, "variant", value, width)
    as_record(ident, path)


@pytest.mark.parametrize(("d_model", "arch"), [(4096, "T5-XXL"), (2048, "T5-XL")])
def test_t5_encoder(tmp_path: Path, d_model: int, arch: str) -> None:
    path = F.write_t5_encoder(tmp_path / "t5.safetensors", d_model=d_model, complete=False)  # 24 blocks
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.T5Encoder, ModelFormat.Checkpoint, B.Any)
    assert ident.extra["architecture"] == arch and ident.extra["blocks"] == 24
    reason(ident, "type", "t5_encoder")
    reason(ident, "architecture", arch, str(d_model))
    as_record(ident, path)


@pytest.mark.parametrize(
    ("layout", "name", "scale", "needle"),
    [
        ("new", "RealESRGAN_x4plus.pth", 4, "Real-ESRGAN"),
        ("new", "RealESRGAN_x2plus.safetensors", 2, "Real-ESRGAN"),
        ("old", "4x_foolhardy_Remacri.pth", 4, "original key names"),
        ("old", "2x_old.safetensors", 2, "original key names"),
        ("bsrgan", "BSRGAN.pth", 4, "BSRGAN"),
    ],
)
def test_esrgan(tmp_path: Path, layout: str, name: str, scale: int, needle: str) -> None:
    path = F.write_esrgan(tmp_path / name, layout=layout, scale=scale)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.SpandrelImageToImage, ModelFormat.Checkpoint, B.Any)
    assert ident.extra["architecture"] == "ESRGAN" and ident.extra["scale"] == scale
    assert ident.extra["num_blocks"] == 3
    reason(ident, "type", "RRDB")
    reason(ident, "architecture", "ESRGAN", needle, f"x{scale}")
    record = as_record(ident, path)
    assert isinstance(record, SpandrelImageToImageConfig) and record.architecture == "ESRGAN"


def test_params_ema_wrapper_is_unwrapped(tmp_path: Path) -> None:
    ident = identify(F.write_esrgan(tmp_path / "x.pth", layout="new"))
    assert ident.extra["unwrapped"] == "params_ema."


def test_short_vit_b_and_siglip_towers_are_not_clip_vision(tmp_path: Path) -> None:
    def tower(name: str, width: int, depth: int, pre: bool) -> Path:
        keys = {f"vision_model.encoder.layers.{i}.layer_norm1.weight": (width,) for i in range(depth)}
        keys["vision_model.post_layernorm.weight"] = (width,)
        if pre:
            keys["vision_model.pre_layrnorm.weight"] = (width,)
        return F.write_weights(tmp_path / name, keys, wrap=None)

    # ViT-B/16 (width 768, 12 layers) is not a shortened ViT-L; a SigLIP tower has no pre_layrnorm.
    for path in (tower("vit-b.safetensors", 768, 12, True), tower("siglip.safetensors", 1280, 12, False)):
        assert identify(path).type != ModelType.CLIPVision, path.name
    short = identify(tower("short-h.safetensors", 1280, 12, True))
    assert (short.type, short.variant) == (ModelType.CLIPVision, "huge")
    reason(short, "variant", "huge", "12 of its 32 layers")
