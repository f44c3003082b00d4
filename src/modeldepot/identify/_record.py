"""The one mapping from an :class:`Identification` to the fields of its record class.

Install, register, scan and reidentify all go through :func:`record_fields`, so a model's record
does not depend on how it arrived.
"""

from __future__ import annotations

from typing import Any

from modeldepot.configs import class_for
from modeldepot.identify._result import Identification
from modeldepot.taxonomy import FluxVariantType, ModelType, ModelVariantType, SubModelType

_VARIANTS = {v.value for v in ModelVariantType} | {v.value for v in FluxVariantType}
_CLIP_TYPES = (ModelType.CLIPEmbed, ModelType.CLIPVision)

_SUBMODEL_TYPES: dict[SubModelType, ModelType] = {
    SubModelType.UNet: ModelType.Main,
    SubModelType.Transformer: ModelType.Main,
    SubModelType.VAE: ModelType.VAE,
    SubModelType.VAEDecoder: ModelType.VAE,  # the halves of an ONNX export's VAE
    SubModelType.VAEEncoder: ModelType.VAE,
    SubModelType.TextEncoder: ModelType.CLIPEmbed,
    SubModelType.TextEncoder2: ModelType.CLIPEmbed,
    SubModelType.TextEncoder3: ModelType.CLIPEmbed,
    SubModelType.ImageEncoder: ModelType.CLIPVision,
}


def record_fields(ident: Identification) -> dict[str, Any]:
    """The record fields ``ident`` decides: type, format, base, compatible_bases, and whichever of
    variant / prediction_type / repo_variant / submodels / clip_variant / architecture /
    image_encoder_model_id / upcast_attention / default size the record class has. Add ``name``
    and ``path`` and pass the result to :func:`modeldepot.configs.parse_config`."""
    cls = class_for(ident.type, ident.format, ident.base)
    fields = cls.model_fields
    out: dict[str, Any] = {
        "type": ident.type,
        "format": ident.format,
        "base": ident.base,
        "compatible_bases": set(ident.compatible_bases) | {ident.base},
        "identification": ident.to_dict(),
    }
    if "variant" in fields and ident.variant is not None and str(ident.variant) in _VARIANTS:
        out["variant"] = ident.variant
    if "clip_variant" in fields and ident.variant is not None and ident.type in _CLIP_TYPES:
        out["clip_variant"] = ident.variant
    if "prediction_type" in fields and ident.prediction_type is not None:
        out["prediction_type"] = ident.prediction_type
    if "repo_variant" in fields and ident.repo_variant is not None:
        out["repo_variant"] = ident.repo_variant
    if "submodels" in fields and ident.submodels:
        classes: dict[str, str] = ident.extra.get("submodel_classes", {})
        subs: dict[SubModelType, dict[str, Any]] = {}
        for kind, rel in ident.submodels.items():
            model_type = _SUBMODEL_TYPES.get(kind)
            if model_type is None:
                continue  # tokenizers, schedulers, feature extractors: no weights of their own
            if classes.get(kind.value) == "T5EncoderModel":
                model_type = ModelType.T5Encoder
            subs[kind] = {"path_or_prefix": rel, "model_type": model_type}
        out["submodels"] = subs
    if "architecture" in fields and ident.extra.get("architecture"):
        out["architecture"] = ident.extra["architecture"]
    if "image_encoder_model_id" in fields and ident.extra.get("image_encoder_model_id"):
        out["image_encoder_model_id"] = ident.extra["image_encoder_model_id"]
    if "upcast_attention" in fields and isinstance(ident.extra.get("upcast_attention"), bool):
        # Written when a config says so either way: ONNX SD-2 records default to True.
        out["upcast_attention"] = ident.extra["upcast_attention"]
    if "config_path" in fields and ident.extra.get("config_path"):
        out["config_path"] = ident.extra["config_path"]
    size = ident.extra.get("default_resolution")
    if "default_width" in fields and isinstance(size, int):
        out["default_width"] = out["default_height"] = size
    return out
