"""Hugging Face model folders of the Nataili-style managers: BLIP captioners, Stable Diffusion's
safety checker and full CLIP models, told apart by the class their ``config.json`` names.

The configs are trimmed copies of the real repositories' (identification reads nothing else), so
these tests need no torch; ``tests/load/test_hf_models.py`` identifies the loadable factory folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldepot.configs import (
    CaptionerDiffusersConfig,
    CLIPVisionDiffusersConfig,
    SafetyCheckerDiffusersConfig,
    class_for,
    parse_config,
)
from modeldepot.identify import identify
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType
from modeldepot.testing.factories import write_json, write_safetensors

from .identify_helpers import as_record, reason

_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "vocab_size": 30524}
_VISION = {"hidden_size": 1024, "num_hidden_layers": 24, "image_size": 224, "patch_size": 14}


def _folder(root: Path, architecture: str, model_type: str, **extra: Any) -> Path:
    cfg = {"architectures": [architecture], "model_type": model_type, "text_config": _TEXT, "vision_config": _VISION}
    write_json(root / "config.json", {**cfg, **extra})
    write_safetensors(root / "model.safetensors", {"vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14)})
    write_json(root / "preprocessor_config.json", {"processor_class": "BlipProcessor"})
    return root


def test_blip_captioner_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "blip-image-captioning-base", "BlipForConditionalGeneration", "blip")
    ident = identify(root)
    assert (ident.type, ident.format, ident.base) == (ModelType.Captioner, ModelFormat.Diffusers, B.Any)
    assert ident.compatible_bases == {B.Any}
    reason(ident, "type", "captioner", "BlipForConditionalGeneration")
    reason(ident, "base", "any")
    record = as_record(ident, root)
    assert isinstance(record, CaptionerDiffusersConfig)
    assert record.architecture == "BlipForConditionalGeneration"


def test_safety_checker_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "stable-diffusion-safety-checker", "StableDiffusionSafetyChecker", "clip")
    ident = identify(root)
    assert (ident.type, ident.format, ident.base) == (ModelType.SafetyChecker, ModelFormat.Diffusers, B.Any)
    reason(ident, "type", "safety_checker", "StableDiffusionSafetyChecker")
    assert isinstance(as_record(ident, root), SafetyCheckerDiffusersConfig)


def test_full_clip_model_stays_clip_vision_and_says_it_is_full(tmp_path: Path) -> None:
    root = _folder(tmp_path / "clip-vit-large-patch14", "CLIPModel", "clip")
    ident = identify(root)
    assert (ident.type, ident.format, ident.base) == (ModelType.CLIPVision, ModelFormat.Diffusers, B.Any)
    assert ident.variant == "large"  # from vision_config, not the text tower
    assert any("full CLIP model" in r and "text and vision" in r for r in ident.reasons), ident.reasons
    assert isinstance(as_record(ident, root), CLIPVisionDiffusersConfig)


def test_image_tower_alone_is_not_called_a_full_clip_model(tmp_path: Path) -> None:
    root = tmp_path / "image_encoder"
    write_json(root / "config.json", {"architectures": ["CLIPVisionModelWithProjection"], **_VISION})
    write_safetensors(root / "model.safetensors", {"vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14)})
    ident = identify(root)
    assert ident.type == ModelType.CLIPVision
    assert not any("full CLIP" in r for r in ident.reasons)


@pytest.mark.parametrize("architecture", ["BlipForQuestionAnswering", "BlipForImageTextRetrieval", "BlipModel"])
def test_other_blip_heads_are_not_captioners(tmp_path: Path, architecture: str) -> None:
    """Only the captioning head captions: a VQA or retrieval BLIP must not be offered as one."""
    ident = identify(_folder(tmp_path / "blip", architecture, "blip"))
    assert ident.type == ModelType.Unknown
    reason(ident, "type", architecture)


def test_record_classes_are_in_the_union() -> None:
    assert class_for("captioner", "diffusers") is CaptionerDiffusersConfig
    assert class_for(ModelType.SafetyChecker, ModelFormat.Diffusers) is SafetyCheckerDiffusersConfig
    assert ModelType("safety_checker") is ModelType.SafetyChecker
    record = parse_config(
        {"name": "blip", "path": "/m/blip", "model_type": "captioner", "model_format": "diffusers", "base": "any"}
    )
    assert isinstance(record, CaptionerDiffusersConfig) and record.architecture is None
    checker = parse_config(
        {"name": "nsfw", "path": "/m/sc", "type": "safety_checker", "format": "diffusers", "base": "any"}
    )
    assert isinstance(checker, SafetyCheckerDiffusersConfig)
    assert parse_config(checker.model_dump()) == checker
