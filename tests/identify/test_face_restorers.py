"""GFPGAN and CodeFormer files: image-to-image face restorers, identified from their keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.configs import SpandrelImageToImageConfig
from modeldepot.identify import identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType
from modeldepot.testing.factories._face import gfpgan_shapes, write_gfpgan
from modeldepot.testing.factories._writers import Shape, write_weights

from .identify_helpers import as_record, reason

I2I = (ModelType.SpandrelImageToImage, ModelFormat.Checkpoint, B.Any)


def _codeformer_keys(layers: int = 9, connect: tuple[str, ...] = ("32", "64", "128", "256")) -> dict[str, Shape]:
    """A representative part of codeformer.pth's ``params_ema`` (real names and shapes)."""
    keys: dict[str, Shape] = {
        "encoder.blocks.0.weight": (64, 3, 3, 3),
        "encoder.blocks.0.bias": (64,),
        "encoder.blocks.1.norm1.weight": (64,),
        "encoder.blocks.1.conv1.weight": (64, 64, 3, 3),
        "quantize.embedding.weight": (1024, 256),
        "generator.blocks.0.weight": (512, 256, 3, 3),
        "position_emb": (256, 512),
        "feat_emb.weight": (512, 256),
        "feat_emb.bias": (512,),
        "idx_pred_layer.0.weight": (512,),
        "idx_pred_layer.0.bias": (512,),
        "idx_pred_layer.1.weight": (1024, 512),
    }
    for i in range(layers):
        p = f"ft_layers.{i}."
        keys |= {
            p + "self_attn.in_proj_weight": (1536, 512),
            p + "self_attn.in_proj_bias": (1536,),
            p + "self_attn.out_proj.weight": (512, 512),
            p + "linear1.weight": (1024, 512),
            p + "linear2.weight": (512, 1024),
            p + "norm1.weight": (512,),
            p + "norm2.weight": (512,),
        }
    widths = {"32": 256, "64": 256, "128": 128, "256": 128, "512": 64}
    for size in connect:
        ch, p = widths[size], f"fuse_convs_dict.{size}."
        keys |= {
            p + "encode_enc.norm1.weight": (2 * ch,),
            p + "encode_enc.conv1.weight": (ch, 2 * ch, 3, 3),
            p + "scale.0.weight": (ch, ch, 3, 3),
            p + "scale.2.weight": (ch, ch, 3, 3),
            p + "shift.0.weight": (ch, ch, 3, 3),
            p + "shift.2.weight": (ch, ch, 3, 3),
        }
    return keys


@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "GFPGANv1.3.safetensors"])
def test_gfpgan(tmp_path: Path, name: str) -> None:
    path = write_gfpgan(tmp_path / name, out_size=64)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == I2I
    assert ident.compatible_bases == {B.Any}
    assert ident.extra["architecture"] == "GFPGAN" and ident.extra["scale"] == 1
    assert (ident.extra["out_size"], ident.extra["num_style_feat"], ident.extra["sft_half"]) == (64, 16, True)
    assert ident.extra["purpose"] == "face_restoration"
    reason(ident, "type", "face-restorer", "stylegan_decoder")
    reason(ident, "base", "any")
    reason(ident, "architecture", "GFPGAN", "64px")
    record = as_record(ident, path)
    assert isinstance(record, SpandrelImageToImageConfig) and record.architecture == "GFPGAN"
    if name.endswith(".pth"):
        assert ident.extra["unwrapped"] == "params_ema."


def test_gfpgan_full_sft(tmp_path: Path) -> None:
    ident = identify(write_gfpgan(tmp_path / "g.safetensors", sft_half=False, different_w=False))
    assert ident.extra["architecture"] == "GFPGAN" and ident.extra["sft_half"] is False


@pytest.mark.parametrize("wrap", [None, "params_ema"])
def test_codeformer(tmp_path: Path, wrap: str | None) -> None:
    path = write_weights(
        tmp_path / ("codeformer.pth" if wrap else "codeformer.safetensors"), _codeformer_keys(), wrap=wrap
    )
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == I2I
    assert ident.extra["architecture"] == "CodeFormer" and ident.extra["scale"] == 1
    assert ident.extra["codebook_size"] == 1024 and ident.extra["n_layers"] == 9 and ident.extra["dim_embd"] == 512
    assert ident.extra["connect_list"] == ["32", "64", "128", "256"]
    reason(ident, "type", "face-restorer", "quantize.embedding")
    reason(ident, "architecture", "CodeFormer", "1024", "9 transformer layers")
    record = as_record(ident, path)
    assert isinstance(record, SpandrelImageToImageConfig) and record.architecture == "CodeFormer"


def test_partial_key_sets_are_not_face_restorers(tmp_path: Path) -> None:
    # A bare StyleGAN2 generator (no U-Net) and a VQGAN without CodeFormer's transformer.
    stylegan = {k: s for k, s in gfpgan_shapes().items() if k.startswith("stylegan_decoder.")}
    vqgan = {k: s for k, s in _codeformer_keys().items() if k.split(".")[0] in ("encoder", "quantize", "generator")}
    for name, keys in (("stylegan2.safetensors", stylegan), ("vqgan.safetensors", vqgan)):
        ident = identify(write_weights(tmp_path / name, keys, wrap=None))
        assert ident.type != ModelType.SpandrelImageToImage, name
        assert "architecture" not in ident.extra or ident.extra["architecture"] not in ("GFPGAN", "CodeFormer")
