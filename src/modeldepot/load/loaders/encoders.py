"""CLIP text / vision and T5 encoders via transformers.

Accepted layouts: the model folder itself (``config.json`` + weights), or InvokeAI's layout with
``text_encoder[_2]/`` and ``tokenizer[_2]/`` subfolders. ``submodel_type`` picks encoder or tokenizer
(default: the encoder). A full CLIP model folder (``CLIPModel``: both towers, recorded as
clip_vision) answers ``tokenizer`` and ``feature_extractor`` with its ``CLIPProcessor``, which does
both jobs; an image-tower folder answers ``feature_extractor`` with its ``CLIPImageProcessor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.errors import ModelNotFoundException
from modeldepot.load._errors import InvalidSubmodelError
from modeldepot.load.loaders._common import from_pretrained, read_json, resolve_class
from modeldepot.load.loaders.captioners import load_processor
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

_Any = BaseModelType.Any
_ENCODER_DIRS = ("text_encoder", "text_encoder_2", "text_encoder_3", "image_encoder")
_TOKENIZER_DIRS = ("tokenizer", "tokenizer_2", "tokenizer_3")
_DEFAULT_CLASS = {
    ModelType.CLIPEmbed: "CLIPTextModel",
    ModelType.T5Encoder: "T5EncoderModel",
    ModelType.CLIPVision: "CLIPVisionModelWithProjection",
}


def _find(path: Path, names: tuple[str, ...], marker: str) -> Path | None:
    if (path / marker).is_file():
        return path
    for n in names:
        if (path / n / marker).is_file():
            return path / n
    return None


def _is_full_clip(path: Path) -> bool:
    cfg = path / "config.json"
    return cfg.is_file() and (read_json(cfg).get("architectures") or [None])[0] == "CLIPModel"


@ModelLoaderRegistry.register(base=_Any, type=ModelType.CLIPEmbed, format=ModelFormat.Diffusers)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.CLIPVision, format=ModelFormat.Diffusers)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.T5Encoder, format=ModelFormat.T5Encoder)
class TransformersEncoderLoader(ModelLoader):
    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        cfg = self.config
        assert cfg is not None
        if submodel_type in (SubModelType.Tokenizer, SubModelType.FeatureExtractor) and _is_full_clip(path):
            assert submodel_type is not None
            return load_processor(cfg, path, submodel_type, "CLIPProcessor")
        if submodel_type == SubModelType.FeatureExtractor and cfg.type == ModelType.CLIPVision:
            tower = _find(path, ("image_encoder",), "config.json") or path
            return load_processor(cfg, tower, submodel_type, "CLIPImageProcessor")
        if submodel_type is not None and submodel_type.value.startswith("tokenizer"):
            return self._tokenizer(path, submodel_type)
        if submodel_type is not None and submodel_type.value not in _ENCODER_DIRS:
            raise InvalidSubmodelError(
                f"model {cfg.name!r} ({cfg.type.value}) has no submodel {submodel_type.value!r}",
                key=cfg.key,
                submodel=submodel_type.value,
            )
        names = (submodel_type.value,) if submodel_type is not None else _ENCODER_DIRS
        folder = _find(path, names, "config.json")
        if folder is None:
            raise ModelNotFoundException(f"model {cfg.name!r}: no encoder config.json under {path}", path)
        arch = read_json(folder / "config.json").get("architectures") or [_DEFAULT_CLASS[cfg.type]]
        cls = resolve_class("transformers", str(arch[0]), folder / "config.json")
        return from_pretrained(cls, folder, self.torch_dtype, variant, partial=self.partial)

    def _tokenizer(self, path: Path, sub: SubModelType) -> Any:
        from transformers import AutoTokenizer

        assert self.config is not None
        folder = _find(path, (sub.value, *_TOKENIZER_DIRS), "tokenizer_config.json")
        if folder is None:
            raise InvalidSubmodelError(
                f"model {self.config.name!r} has no tokenizer files under {path}",
                key=self.config.key,
                submodel=sub.value,
            )
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


__all__ = ["TransformersEncoderLoader"]
