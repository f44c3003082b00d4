"""User overrides always win and are recorded; explain() shows the verdict and every rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldepot.errors import InvalidModelConfigException
from modeldepot.identify import explain, identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType, SchedulerPredictionType
from modeldepot.testing import factories as F

from .identify_helpers import as_record, reason


def test_base_override_on_vae(tmp_path: Path) -> None:
    path = F.write_vae(tmp_path / "vae.safetensors")
    ident = identify(path, {"base": "sdxl"})
    assert ident.base == B.StableDiffusionXL
    assert ident.compatible_bases == {B.StableDiffusionXL, B.StableDiffusionXLRefiner}
    assert ident.overridden == {"base"}
    assert "base: sdxl (set by user)" in ident.reasons
    assert any(r.startswith("(overridden) base: sd-1") for r in ident.reasons)
    assert as_record(ident, path).base == B.StableDiffusionXL


def test_override_to_a_base_already_compatible_keeps_the_set(tmp_path: Path) -> None:
    ident = identify(F.write_vae(tmp_path / "vae.safetensors"), {"base": B.StableDiffusion2})
    assert ident.base == B.StableDiffusion2
    assert ident.compatible_bases == {B.StableDiffusion1, B.StableDiffusion2}


def test_sdxl_lora_taken_for_sd1_can_be_corrected(tmp_path: Path) -> None:
    ident = identify(F.write_lora(tmp_path / "l.safetensors", base="sd-1"), {"base": "sdxl"})
    assert (ident.base, ident.compatible_bases) == (B.StableDiffusionXL, {B.StableDiffusionXL})
    reason(ident, "base", "sdxl", "set by user")


def test_every_field_can_be_overridden(tmp_path: Path) -> None:
    overrides = {
        "type": ModelType.Main,
        "format": "checkpoint",
        "base": "sd-2",
        "variant": "inpaint",
        "prediction_type": "epsilon",
        "compatible_bases": ["sd-2", "sd-1"],
    }
    path = F.write_sd1_checkpoint(tmp_path / "m.safetensors")
    ident = identify(path, overrides)
    assert (ident.type, ident.format, ident.base, ident.variant, ident.prediction_type) == (
        ModelType.Main,
        ModelFormat.Checkpoint,
        B.StableDiffusion2,
        "inpaint",
        SchedulerPredictionType.Epsilon,
    )
    assert ident.compatible_bases == {B.StableDiffusion1, B.StableDiffusion2}
    assert ident.overridden == set(overrides)
    for name in overrides:
        reason(ident, name, "set by user")
    as_record(ident, path)


def test_type_override_adjusts_format(tmp_path: Path) -> None:
    path = F.write_safetensors(tmp_path / "x.safetensors", {"mystery.weight": (4, 4)})
    ident = identify(path, {"type": "lora", "base": "sdxl"})
    assert (ident.type, ident.format, ident.base) == (ModelType.LoRA, ModelFormat.LyCORIS, B.StableDiffusionXL)
    assert ident.overridden == {"type", "base"}
    reason(ident, "format", "lycoris", "adjusted")
    as_record(ident, path)


def test_flux_variant_override(tmp_path: Path) -> None:
    ident = identify(F.write_flux_checkpoint(tmp_path / "f.safetensors", variant="dev"), {"variant": "schnell"})
    assert ident.variant == "schnell"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base": "sd-9"}, "base"),
        ({"type": "nonsense"}, "type"),
        ({"variant": "wobbly"}, "variant"),
        ({"colour": "red"}, "colour"),
        ({"type": "lora", "format": "t5_encoder"}, "format"),
    ],
)
def test_bad_overrides_are_clear_errors(tmp_path: Path, overrides: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidModelConfigException) as info:
        identify(F.write_vae(tmp_path / "vae.safetensors"), overrides)
    assert info.value.field == field
    assert field in str(info.value)


def test_explain_lists_verdict_reasons_and_every_rule(tmp_path: Path) -> None:
    ident = identify(
        F.write_sdxl_checkpoint(tmp_path / "xl.safetensors", merged_lora=True), {"prediction_type": "v_prediction"}
    )
    text = explain(ident)
    assert text.startswith("Verdict: main / checkpoint / base sdxl")
    for line in ident.reasons:
        assert line in text
    for cand in ident.candidates:
        assert f"{cand.rule}:" in text
    assert "lora: matched, lost to sd_unet_checkpoint" in text
    assert "vae: matched, lost to sd_unet_checkpoint" in text
    assert "esrgan: no match" in text
    assert "set by user: prediction_type" in text
    assert "sd_unet_checkpoint: WON" in text


def test_explain_unknown_and_declared(tmp_path: Path) -> None:
    text = explain(identify(F.write_sdxl_lora(tmp_path / "l.safetensors", with_metadata=True)))
    assert "declared_metadata: declared in metadata" in text
    text = explain(identify(F.write_safetensors(tmp_path / "x.safetensors", {"a": (1,)})))
    assert text.startswith("Verdict: unknown / unknown / base unknown")
    assert "no rule matched" in text


def test_to_dict_is_json(tmp_path: Path) -> None:
    ident = identify(F.write_diffusers_pipeline(tmp_path / "p", "sdxl", fp16=True), {"base": "sdxl"})
    doc = json.loads(json.dumps(ident.to_dict()))
    assert doc["type"] == "main" and doc["repo_variant"] == "fp16" and doc["overridden"] == ["base"]
    assert doc["submodels"]["unet"] == "unet" and doc["candidates"][0]["rule"] == "diffusers_pipeline"
