"""Folders: diffusers pipelines, standalone submodels, LoRA / embedding / IP-Adapter folders, junk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modeldepot.configs import MainDiffusersConfig
from modeldepot.errors import IdentificationError
from modeldepot.identify import identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType, SubModelType
from modeldepot.testing import factories as F

from .identify_helpers import as_record, reason

S = SubModelType


@pytest.mark.parametrize(
    ("base", "variant", "expect_base", "pred", "subs"),
    [
        (
            "sd-1",
            "normal",
            B.StableDiffusion1,
            "epsilon",
            {S.UNet, S.VAE, S.TextEncoder, S.Tokenizer, S.Scheduler, S.FeatureExtractor},
        ),
        ("sd-1", "inpaint", B.StableDiffusion1, "epsilon", None),
        ("sd-2", "normal", B.StableDiffusion2, "v_prediction", None),
        ("sd-2", "depth", B.StableDiffusion2, "epsilon", None),
        (
            "sdxl",
            "normal",
            B.StableDiffusionXL,
            "epsilon",
            {S.UNet, S.VAE, S.TextEncoder, S.TextEncoder2, S.Tokenizer, S.Tokenizer2, S.Scheduler},
        ),
        (
            "sdxl-refiner",
            "normal",
            B.StableDiffusionXLRefiner,
            "epsilon",
            {S.UNet, S.VAE, S.TextEncoder2, S.Tokenizer2, S.Scheduler},
        ),
    ],
)
def test_unet_pipelines(
    tmp_path: Path, base: str, variant: str, expect_base: B, pred: str, subs: set[SubModelType] | None
) -> None:
    root = F.write_diffusers_pipeline(tmp_path / "pipe", base, variant=variant)
    ident = identify(root)
    assert (ident.type, ident.format, ident.base) == (ModelType.Main, ModelFormat.Diffusers, expect_base)
    assert ident.compatible_bases == {expect_base}
    assert ident.variant == variant
    assert ident.prediction_type == SchedulerPredictionType(pred)
    assert ident.repo_variant == ModelRepoVariant.Default
    if subs is not None:
        assert set(ident.submodels) == subs
        assert all(ident.submodels[s] == s.value for s in subs)
    reason(ident, "type", "model_index.json")
    reason(ident, "base", str(expect_base), "cross_attention_dim")
    reason(ident, "variant", variant, "in_channels")
    reason(ident, "prediction_type", pred, "scheduler_config.json")
    reason(ident, "submodels", "unet", "vae")
    reason(ident, "repo_variant", "default")
    record = as_record(ident, root)
    assert isinstance(record, MainDiffusersConfig) and record.submodels is not None
    assert record.submodels[S.UNet].model_type == ModelType.Main


def test_prediction_type_override_in_scheduler(tmp_path: Path) -> None:
    ident = identify(F.write_diffusers_pipeline(tmp_path / "p", "sd-2", prediction_type="epsilon"))
    assert ident.prediction_type == SchedulerPredictionType.Epsilon


def test_fp16_repo_variant(tmp_path: Path) -> None:
    ident = identify(F.write_diffusers_pipeline(tmp_path / "p", "sdxl", fp16=True))
    assert ident.repo_variant == ModelRepoVariant.FP16
    reason(ident, "repo_variant", "fp16", ".fp16.")


@pytest.mark.parametrize(
    ("variant", "needle"), [("dev", "guidance_embeds True"), ("schnell", "guidance_embeds False"), ("dev_fill", "384")]
)
def test_flux_pipeline(tmp_path: Path, variant: str, needle: str) -> None:
    root = F.write_diffusers_pipeline(tmp_path / "flux", "flux", variant=variant)
    ident = identify(root)
    assert (ident.type, ident.format, ident.base, ident.variant) == (
        ModelType.Main,
        ModelFormat.Diffusers,
        B.Flux,
        variant,
    )
    assert ident.prediction_type is None
    assert {S.Transformer, S.TextEncoder2, S.Tokenizer2, S.VAE} <= set(ident.submodels)
    reason(ident, "variant", variant, needle)
    reason(ident, "prediction_type", "none", "FlowMatch")
    record = as_record(ident, root)
    assert record.submodels[S.TextEncoder2].model_type == ModelType.T5Encoder  # type: ignore[attr-defined]


def test_sd3_pipeline(tmp_path: Path) -> None:
    ident = identify(F.write_diffusers_pipeline(tmp_path / "sd3", "sd-3"))
    assert (ident.base, ident.variant) == (B.StableDiffusion3, "normal")
    assert S.TextEncoder3 in ident.submodels
    reason(ident, "base", "sd-3", "SD3Transformer2DModel")


def test_missing_submodel_folder_lowers_confidence(tmp_path: Path) -> None:
    root = F.write_diffusers_pipeline(tmp_path / "p", "sd-1")
    for f in (root / "text_encoder").iterdir():
        f.unlink()
    (root / "text_encoder").rmdir()
    ident = identify(root)
    assert S.TextEncoder not in ident.submodels and ident.confidence < 0.9
    assert any("text_encoder" in r and "missing" in r for r in ident.reasons)


@pytest.mark.parametrize(
    ("writer", "kwargs", "type_", "fmt", "base", "variant"),
    [
        (F.write_diffusers_vae, {"base": "sd-1"}, ModelType.VAE, ModelFormat.Diffusers, B.StableDiffusion1, None),
        (F.write_diffusers_vae, {"base": "sdxl"}, ModelType.VAE, ModelFormat.Diffusers, B.StableDiffusionXL, None),
        (F.write_diffusers_vae, {"base": "flux"}, ModelType.VAE, ModelFormat.Diffusers, B.Flux, None),
        (F.write_diffusers_vae, {"base": "sd-3"}, ModelType.VAE, ModelFormat.Diffusers, B.StableDiffusion3, None),
        (
            F.write_diffusers_controlnet,
            {"base": "sd-1"},
            ModelType.ControlNet,
            ModelFormat.Diffusers,
            B.StableDiffusion1,
            None,
        ),
        (
            F.write_diffusers_controlnet,
            {"base": "sdxl"},
            ModelType.ControlNet,
            ModelFormat.Diffusers,
            B.StableDiffusionXL,
            None,
        ),
        (
            F.write_diffusers_t2i_adapter,
            {"base": "sd-1"},
            ModelType.T2IAdapter,
            ModelFormat.Diffusers,
            B.StableDiffusion1,
            None,
        ),
        (
            F.write_diffusers_t2i_adapter,
            {"base": "sdxl"},
            ModelType.T2IAdapter,
            ModelFormat.Diffusers,
            B.StableDiffusionXL,
            None,
        ),
        (F.write_diffusers_clip_vision, {"variant": "H"}, ModelType.CLIPVision, ModelFormat.Diffusers, B.Any, "huge"),
        (
            F.write_diffusers_clip_vision,
            {"variant": "G"},
            ModelType.CLIPVision,
            ModelFormat.Diffusers,
            B.Any,
            "gigantic",
        ),
        (F.write_diffusers_clip_text, {"variant": "L"}, ModelType.CLIPEmbed, ModelFormat.Diffusers, B.Any, "large"),
        (F.write_diffusers_clip_text, {"variant": "G"}, ModelType.CLIPEmbed, ModelFormat.Diffusers, B.Any, "gigantic"),
        (F.write_diffusers_t5, {}, ModelType.T5Encoder, ModelFormat.T5Encoder, B.Any, None),
        (F.write_diffusers_lora, {"base": "sdxl"}, ModelType.LoRA, ModelFormat.Diffusers, B.StableDiffusionXL, None),
        (
            F.write_ip_adapter_folder,
            {"base": "sd-1"},
            ModelType.IPAdapter,
            ModelFormat.InvokeAI,
            B.StableDiffusion1,
            None,
        ),
        (
            F.write_embedding_folder,
            {"base": "sd-2"},
            ModelType.TextualInversion,
            ModelFormat.EmbeddingFolder,
            B.StableDiffusion2,
            None,
        ),
    ],
)
def test_standalone_folders(tmp_path: Path, writer, kwargs, type_, fmt, base, variant) -> None:  # type: ignore[no-untyped-def]
    root = writer(tmp_path / "m", **kwargs)
    ident = identify(root)
    assert (ident.type, ident.format, ident.base, ident.variant) == (type_, fmt, base, variant)
    reason(ident, "type", str(type_))
    reason(ident, "format", str(fmt))
    reason(ident, "base", str(base))
    as_record(ident, root)


def test_sd_family_vae_folder_is_compatible_with_sd1_and_sd2(tmp_path: Path) -> None:
    ident = identify(F.write_diffusers_vae(tmp_path / "vae", base="sd-1"))
    assert ident.compatible_bases == {B.StableDiffusion1, B.StableDiffusion2}
    reason(ident, "base", "scaling_factor 0.18215")


def test_ip_adapter_folder_keeps_encoder_id(tmp_path: Path) -> None:
    ident = identify(F.write_ip_adapter_folder(tmp_path / "ip"))
    assert ident.extra["image_encoder_model_id"] == "InvokeAI/ip_adapter_sd_image_encoder"
    assert as_record(ident, tmp_path / "ip").image_encoder_model_id == ident.extra["image_encoder_model_id"]  # type: ignore[attr-defined]


def test_pipeline_family_shares_identical_components(tmp_path: Path) -> None:
    roots = F.write_sd_pipeline_family(tmp_path / "fam", n=3)
    assert len(roots) == 3
    for rel in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "model_index.json"):
        assert len({(r / rel).read_bytes() for r in roots}) == 1, rel
    assert len({(r / "unet/diffusion_pytorch_model.safetensors").read_bytes() for r in roots}) == 3
    assert {identify(r).base for r in roots} == {B.StableDiffusion1}


def test_empty_folder_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    ident = identify(tmp_path / "e")
    assert (ident.type, ident.format, ident.base) == (ModelType.Unknown, ModelFormat.Unknown, B.Unknown)
    reason(ident, "type", "unknown", "empty")


def test_folder_of_unrelated_files_is_unknown(tmp_path: Path) -> None:
    root = tmp_path / "junk"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("hello")
    (root / "sub" / "pic.png").write_bytes(b"\x89PNG")
    ident = identify(root)
    assert ident.type == ModelType.Unknown
    reason(ident, "type", "unknown", "unrelated files")


def test_folder_with_loose_weights_points_at_the_file(tmp_path: Path) -> None:
    F.write_lora(tmp_path / "loras" / "a.safetensors")
    ident = identify(tmp_path / "loras")
    assert ident.type == ModelType.Unknown
    reason(ident, "type", "a.safetensors", "identify a file directly")


def test_symlink_loop_in_folder_terminates(tmp_path: Path) -> None:
    root = tmp_path / "loop"
    root.mkdir()
    os.symlink(root, root / "again")
    os.symlink(root / "self", root / "self")  # a link to itself
    (root / "notes.txt").write_text("x")
    ident = identify(root)
    assert ident.type == ModelType.Unknown


def test_path_that_is_a_symlink_loop_raises(tmp_path: Path) -> None:
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path / "b", tmp_path / "a")
    with pytest.raises(IdentificationError, match="symbolic link loop"):
        identify(tmp_path / "a")


def test_malformed_model_index_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "model_index.json").write_text("{not json")
    with pytest.raises(IdentificationError, match=r"model_index\.json: not valid JSON"):
        identify(root)


def test_unknown_config_class_is_unknown(tmp_path: Path) -> None:
    F.write_json(tmp_path / "m" / "config.json", {"architectures": ["LlamaForCausalLM"]})
    ident = identify(tmp_path / "m")
    assert ident.type == ModelType.Unknown and ident.extra["class_name"] == "LlamaForCausalLM"
    reason(ident, "type", "LlamaForCausalLM")
