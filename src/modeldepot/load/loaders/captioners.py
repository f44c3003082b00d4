"""Hugging Face folders that are neither pipelines nor text encoders: captioners (BLIP) and Stable
Diffusion's safety checker.

Each is one folder: ``config.json``, weights, and the processor files of the model beside them.
Without a submodel the model loads; ``tokenizer`` or ``feature_extractor`` gives the folder's
processor instead (BLIP's processor tokenizes text and prepares images, so it answers both; the
safety checker only has an image processor, a ``CLIPImageProcessor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import ModelNotFoundException
from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError
from modeldepot.load.loaders._common import from_pretrained, read_json, resolve_class
from modeldepot.load.loaders._strict import library_warnings_silenced
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase

_Any = BaseModelType.Any
_PROCESSOR_PARTS = (SubModelType.Tokenizer, SubModelType.FeatureExtractor)
#: Files any one of which makes a folder's processor loadable (transformers 4 writes the first,
#: transformers 5 the second; tokenizer-only processors have the third).
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _config_file(config: ModelConfigBase, path: Path) -> Path:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelNotFoundException(f"model {config.name!r}: no config.json in {path}", cfg)
    return cfg


def _no_submodel(config: ModelConfigBase, sub: SubModelType, has: str) -> InvalidSubmodelError:
    return InvalidSubmodelError(
        f"model {config.name!r} ({config.type.value}) has no submodel {sub.value!r}; it has {has}",
        key=config.key,
        submodel=sub.value,
    )


def load_processor(config: ModelConfigBase, folder: Path, sub: SubModelType, class_name: str = "AutoProcessor") -> Any:
    """The transformers processor ``class_name`` (``AutoProcessor``, ``CLIPProcessor``,
    ``CLIPImageProcessor``...) read from ``folder``, offline.

    Raises:
        InvalidSubmodelError: the folder has no processor files.
        ModelLoadError: they exist but transformers cannot read them.
    """
    wanted = _IMAGE_PROCESSOR_FILES if class_name.endswith("ImageProcessor") else _PROCESSOR_FILES
    if not any((folder / name).is_file() for name in wanted):
        raise InvalidSubmodelError(
            f"model {config.name!r} has no {sub.value} files ({' or '.join(wanted)}) in {folder}",
            key=config.key,
            submodel=sub.value,
        )
    import transformers

    # Muted: without torchvision transformers logs that it falls back to its PIL image processors,
    # which is what runs here anyway.
    with library_warnings_silenced():
        cls = getattr(transformers, class_name)
        try:
            return cls.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"model {config.name!r}: cannot read the {sub.value} ({class_name}) in {folder}: {exc}",
                path=str(folder),
            ) from exc


@ModelLoaderRegistry.register(base=_Any, type=ModelType.Captioner, format=ModelFormat.Diffusers)
class CaptionerLoader(ModelLoader):
    """A BLIP-style captioner: the class ``config.json`` names (``BlipForConditionalGeneration``)."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        config = self.config
        assert config is not None
        if submodel_type in _PROCESSOR_PARTS:
            assert submodel_type is not None
            return load_processor(config, path, submodel_type)
        if submodel_type is not None:
            raise _no_submodel(config, submodel_type, "tokenizer and feature_extractor (its processor)")
        cfg_file = _config_file(config, path)
        arch = read_json(cfg_file).get("architectures") or [getattr(config, "architecture", None)]
        if not arch[0]:
            raise ModelLoadError(f"{cfg_file}: no architectures entry names the model class", path=str(cfg_file))
        cls = resolve_class("transformers", str(arch[0]), cfg_file)
        return from_pretrained(cls, path, self.torch_dtype, variant, partial=self.partial)


@ModelLoaderRegistry.register(base=_Any, type=ModelType.SafetyChecker, format=ModelFormat.Diffusers)
class SafetyCheckerLoader(ModelLoader):
    """diffusers' ``StableDiffusionSafetyChecker`` (submodel ``safety_checker`` names it too)."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        config = self.config
        assert config is not None
        if submodel_type == SubModelType.FeatureExtractor:
            return load_processor(config, path, submodel_type, "CLIPImageProcessor")
        if submodel_type is not None and submodel_type != SubModelType.SafetyChecker:
            raise _no_submodel(config, submodel_type, "safety_checker and feature_extractor")
        _config_file(config, path)
        # Not exported at the top of diffusers, so resolve_class cannot name it.
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        return from_pretrained(StableDiffusionSafetyChecker, path, self.torch_dtype, variant, partial=self.partial)


__all__ = ["CaptionerLoader", "SafetyCheckerLoader", "load_processor"]
