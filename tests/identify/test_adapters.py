"""LoRA / LyCORIS, ControlNet, IP-Adapter, T2I-Adapter and textual-inversion files."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.configs import LoRALyCORISConfig
from modeldepot.identify import identify, read_safetensors_header
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType
from modeldepot.testing import factories as F

from .identify_helpers import as_record, reason

BASES = {"sd-1": B.StableDiffusion1, "sd-2": B.StableDiffusion2, "sdxl": B.StableDiffusionXL, "flux": B.Flux}


@pytest.mark.parametrize(
    ("style", "base", "needle"),
    [
        ("kohya", "sd-1", "768"),
        ("kohya", "sd-2", "1024"),
        ("kohya", "sdxl", "2048"),
        ("kohya", "flux", "double_blocks"),
        ("peft", "sd-1", "768"),
        ("peft", "sdxl", "2048"),
        ("peft", "flux", "single_transformer_blocks"),
        ("loha", "sd-1", "768"),
        ("loha", "sdxl", "2048"),
        ("lokr", "sd-2", "1024"),
        ("lokr", "sdxl", "2048"),
    ],
)
def test_lora_styles_and_bases(tmp_path: Path, style: str, base: str, needle: str) -> None:
    path = F.write_lora(tmp_path / "l.safetensors", base=base, style=style)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.LoRA, ModelFormat.LyCORIS, BASES[base])
    assert ident.compatible_bases == {BASES[base]}
    assert ident.extra["lora_format"] == style
    assert ident.variant is None and ident.prediction_type is None
    reason(ident, "type", "lora")
    reason(ident, "format", "lycoris")
    reason(ident, "base", base, needle)
    assert isinstance(as_record(ident, path), LoRALyCORISConfig)


def test_sdxl_lora_without_unet_attn2_uses_two_text_encoders(tmp_path: Path) -> None:
    keys = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (768, 4),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (1280, 4),
    }
    ident = identify(F.write_safetensors(tmp_path / "te.safetensors", keys))
    assert ident.base == B.StableDiffusionXL
    reason(ident, "base", "te1 + te2")


def test_kohya_metadata_declares_base(tmp_path: Path) -> None:
    ident = identify(F.write_sdxl_lora(tmp_path / "l.safetensors", with_metadata=True))
    assert ident.base == B.StableDiffusionXL and ident.confidence >= 0.98
    reason(ident, "base", "declared: ss_base_model_version = 'sdxl_base_v1-0'", "keys agree")
    declared = ident.candidates[0]
    assert declared.rule == "declared_metadata" and declared.matched and declared.type == ModelType.LoRA


def test_declared_metadata_beats_contradicting_keys(tmp_path: Path) -> None:
    """An SD-1-shaped LoRA whose trainer wrote sdxl: the declaration wins, the conflict is reported."""
    path = F.write_lora(tmp_path / "l.safetensors", base="sd-1")
    keys = {k: v.shape for k, v in read_safetensors_header(path).tensors.items()}
    F.write_safetensors(path, keys, metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    ident = identify(path)
    assert ident.base == B.StableDiffusionXL
    reason(ident, "base", "declared", "wins over the keys", "sd-1")
    assert ident.confidence <= 0.7


def test_modelspec_architecture_declares_base(tmp_path: Path) -> None:
    ident = identify(F.write_lora(tmp_path / "l.safetensors", base="sd-2", modelspec=True))
    reason(ident, "base", "modelspec.architecture", "stable-diffusion-v2-768-v/lora")


def test_unrecognised_declared_value_is_a_note(tmp_path: Path) -> None:
    path = F.write_lora(tmp_path / "l.safetensors")
    header = read_safetensors_header(path)
    F.write_safetensors(
        path, {k: t.shape for k, t in header.tensors.items()}, metadata={"ss_base_model_version": "pixart_sigma"}
    )
    ident = identify(path)
    assert ident.base == B.StableDiffusion1
    assert any(r.startswith("note: ss_base_model_version = 'pixart_sigma' not recognised") for r in ident.reasons)


@pytest.mark.parametrize(
    ("style", "base", "needle"),
    [
        ("ldm", "sd-1", "768"),
        ("ldm", "sd-2", "1024"),
        ("ldm", "sdxl", "2048"),
        ("diffusers", "sd-1", "768"),
        ("diffusers", "sdxl", "2048"),
        ("flux", "flux", "FLUX ControlNet"),
    ],
)
def test_controlnet(tmp_path: Path, style: str, base: str, needle: str) -> None:
    path = F.write_controlnet(tmp_path / "cn.safetensors", base=base, style=style)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.ControlNet, ModelFormat.Checkpoint, BASES[base])
    reason(ident, "type", "controlnet")
    reason(ident, "base", base, needle)
    as_record(ident, path)


@pytest.mark.parametrize(
    ("name", "base", "plus"),
    [
        ("ip.bin", "sd-1", False),
        ("ip.safetensors", "sd-2", False),
        ("ipxl.safetensors", "sdxl", True),
        ("p.bin", "sdxl", False),
    ],
)
def test_ip_adapter(tmp_path: Path, name: str, base: str, plus: bool) -> None:
    path = F.write_ip_adapter(tmp_path / name, base=base, plus=plus)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.IPAdapter, ModelFormat.Checkpoint, BASES[base])
    assert ident.extra["plus"] is plus
    reason(ident, "type", "image_proj.* and ip_adapter.*")
    reason(ident, "base", base, "to_k_ip", str({"sd-1": 768, "sd-2": 1024, "sdxl": 2048}[base]))
    as_record(ident, path)


@pytest.mark.parametrize(("base", "width"), [("sd-1", "192"), ("sdxl", "768")])
def test_single_file_t2i_adapter(tmp_path: Path, base: str, width: str) -> None:
    path = F.write_t2i_adapter(tmp_path / "t2i.safetensors", base=base)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.T2IAdapter, ModelFormat.Checkpoint, BASES[base])
    reason(ident, "type", "t2i_adapter")
    reason(ident, "base", base, width)
    as_record(ident, path)


@pytest.mark.parametrize(
    ("name", "base", "needle"),
    [
        ("ti.pt", "sd-1", "string_to_param"),
        ("ti.pt", "sd-2", "string_to_param"),
        ("ti.safetensors", "sd-1", "emb_params"),
        ("ti.safetensors", "sd-2", "emb_params"),
        ("ti.safetensors", "sdxl", "clip_l + clip_g"),
        ("learned_embeds.bin", "sd-1", "token vector"),
    ],
)
def test_textual_inversion(tmp_path: Path, name: str, base: str, needle: str) -> None:
    path = F.write_textual_inversion(tmp_path / name, base=base)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (
        ModelType.TextualInversion,
        ModelFormat.EmbeddingFile,
        BASES[base],
    )
    reason(ident, "type", "embedding", needle)
    width = {"sd-1": "768", "sd-2": "1024", "sdxl": "1280"}[base]
    reason(ident, "base", base, width)
    as_record(ident, path)
