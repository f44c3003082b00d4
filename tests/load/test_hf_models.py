"""BLIP captioners, full CLIP models and Stable Diffusion's safety checker (issue 15): the factory
folders identify, register in a ModelManager, load exactly as their classes with their processors,
and run."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.configs import (  # noqa: E402
    CaptionerDiffusersConfig,
    CLIPVisionDiffusersConfig,
    ModelConfigBase,
    SafetyCheckerDiffusersConfig,
)
from modeldepot.errors import InvalidSubmodelError, ModelLoadError  # noqa: E402
from modeldepot.identify import identify  # noqa: E402
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType  # noqa: E402
from modeldepot.testing.factories._hf_models import (  # noqa: E402
    IMAGE_SIZE,
    write_blip_folder,
    write_clip_model_folder,
    write_safety_checker_folder,
)

pytestmark = pytest.mark.torch

_WRITERS: dict[str, Callable[..., Path]] = {
    "blip": write_blip_folder,
    "clip": write_clip_model_folder,
    "safety_checker": write_safety_checker_folder,
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each folder written once for the module (a second or two in all)."""
    root = tmp_path_factory.mktemp("hf-models")
    return {name: write(root / name) for name, write in _WRITERS.items()}


@pytest.fixture
def mm(tmp_path: Path) -> Any:
    with ModelManager.open(home=tmp_path / "home") as manager:
        yield manager


def _register(mm: ModelManager, path: Path) -> ModelConfigBase:
    return mm.store.get_model(mm.install.register_path(path))


def _image() -> Image.Image:
    # Not square and not the model's size: the processor must resize (and crop) it.
    return Image.new("RGB", (IMAGE_SIZE + 8, IMAGE_SIZE + 16), (200, 40, 40))


@pytest.mark.parametrize(
    ("name", "kind", "record_class", "model_class"),
    [
        ("blip", ModelType.Captioner, CaptionerDiffusersConfig, "BlipForConditionalGeneration"),
        ("clip", ModelType.CLIPVision, CLIPVisionDiffusersConfig, "CLIPModel"),
        ("safety_checker", ModelType.SafetyChecker, SafetyCheckerDiffusersConfig, "StableDiffusionSafetyChecker"),
    ],
)
def test_folder_identifies_registers_and_loads(
    mm: ModelManager, folders: dict[str, Path], name: str, kind: ModelType, record_class: type, model_class: str
) -> None:
    ident = identify(folders[name])
    assert (ident.type, ident.format, ident.base) == (kind, ModelFormat.Diffusers, BaseModelType.Any)
    assert any(model_class in r for r in ident.reasons), ident.reasons
    config = _register(mm, folders[name])
    assert isinstance(config, record_class)
    model = mm.load_model_by_key(config.key).model
    assert type(model).__name__ == model_class
    assert not model.training
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def test_full_clip_model_loads_both_towers(mm: ModelManager, folders: dict[str, Path]) -> None:
    config = _register(mm, folders["clip"])
    model = mm.load_model_by_key(config.key).model
    assert isinstance(model, transformers.CLIPModel)
    processor = mm.load_model_by_key(config.key, "feature_extractor").model
    assert isinstance(processor, transformers.CLIPProcessor)
    assert isinstance(mm.load_model_by_key(config.key, "tokenizer").model, transformers.CLIPProcessor)
    batch = processor(text=["a red cat", "a dog"], images=_image(), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits_per_image.shape == (1, 2)
    width = model.config.projection_dim
    assert out.text_embeds.shape == (2, width) and out.image_embeds.shape == (1, width)


def test_blip_processor_and_generate(mm: ModelManager, folders: dict[str, Path]) -> None:
    config = _register(mm, folders["blip"])
    assert config.architecture == "BlipForConditionalGeneration"  # type: ignore[attr-defined]
    model = mm.load_model_by_key(config.key).model
    processor = mm.load_model_by_key(config.key, "tokenizer").model
    assert isinstance(processor, transformers.BlipProcessor)
    assert isinstance(mm.load_model_by_key(config.key, "feature_extractor").model, transformers.BlipProcessor)
    unk = processor.tokenizer.unk_token_id
    assert unk not in processor.tokenizer("a photo of a red cat")["input_ids"]
    inputs = processor(images=_image(), return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=4)
    assert ids.dtype == torch.long and ids.shape[0] == 1 and 1 < ids.shape[1] <= 6
    assert int(ids[0, 0]) == model.config.text_config.bos_token_id
    assert isinstance(processor.decode(ids[0], skip_special_tokens=True), str)


def test_safety_checker_runs(mm: ModelManager, folders: dict[str, Path]) -> None:
    np = pytest.importorskip("numpy")
    config = _register(mm, folders["safety_checker"])
    checker = mm.load_model_by_key(config.key).model
    # The pipeline's name for the part loads the same model.
    assert type(mm.load_model_by_key(config.key, "safety_checker").model) is type(checker)
    extractor = mm.load_model_by_key(config.key, "feature_extractor").model
    assert isinstance(extractor, transformers.CLIPImageProcessor)
    pixels = extractor(images=[_image(), _image()], return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    images = np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, dtype=np.float32)
    with torch.no_grad():
        out_images, flags = checker(images=images, clip_input=pixels)
    assert out_images.shape == images.shape
    assert len(flags) == 2 and all(isinstance(f, bool) for f in flags)


@pytest.mark.parametrize(("name", "sub"), [("safety_checker", "tokenizer"), ("blip", "unet"), ("blip", "vae")])
def test_submodels_they_do_not_have(mm: ModelManager, folders: dict[str, Path], name: str, sub: str) -> None:
    config = _register(mm, folders[name])
    with pytest.raises(InvalidSubmodelError, match=sub):
        mm.load_model_by_key(config.key, sub)


def test_missing_processor_files_are_named(mm: ModelManager, folders: dict[str, Path], tmp_path: Path) -> None:
    root = shutil.copytree(folders["safety_checker"], tmp_path / "checker")
    (root / "preprocessor_config.json").unlink()
    config = _register(mm, root)
    with pytest.raises(InvalidSubmodelError, match=r"preprocessor_config\.json"):
        mm.load_model_by_key(config.key, "feature_extractor")


@pytest.mark.parametrize("name", sorted(_WRITERS))
def test_a_removed_weight_is_a_clear_error(
    mm: ModelManager, folders: dict[str, Path], tmp_path: Path, name: str
) -> None:
    root = shutil.copytree(folders[name], tmp_path / name)
    weights = load_file(str(root / "model.safetensors"))
    # A weight no initialisation would recreate: the libraries would silently fill it at random.
    dropped = sorted(
        k for k in weights if k.endswith("layer_norm1.weight") or k.endswith("attention.self.query.weight")
    )[0]
    del weights[dropped]
    save_file(weights, str(root / "model.safetensors"), metadata={"format": "pt"})
    config = _register(mm, root)
    with pytest.raises(ModelLoadError, match=re.escape(dropped)) as info:
        mm.load_model_by_key(config.key)
    assert "missing" in str(info.value)
    # A caller that knows the file is incomplete can still have it.
    assert mm.load_model_by_key(config.key, partial=True).model is not None
