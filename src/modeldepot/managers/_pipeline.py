"""Stable Diffusion pipelines assembled from the cache's submodels (no second copy of any weight)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import LoaderNotFoundError
from modeldepot.taxonomy import SubModelType

if TYPE_CHECKING:
    from collections.abc import Callable

    from modeldepot.configs import ModelConfigBase
    from modeldepot.load import LoadedModel

#: Parts a generation pipeline can run without; left out (None) rather than loaded.
OPTIONAL_PARTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})
_SUBMODELS = frozenset(s.value for s in SubModelType)
_CLASSES = {
    ("sd-1", "normal"): "StableDiffusionPipeline",
    ("sd-2", "normal"): "StableDiffusionPipeline",
    ("sd-1", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd-2", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd-2", "depth"): "StableDiffusionDepth2ImgPipeline",
    ("sdxl", "normal"): "StableDiffusionXLPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sdxl-refiner", "normal"): "StableDiffusionXLImg2ImgPipeline",
}


def pipeline_class_name(record: ModelConfigBase) -> str:
    """The diffusers pipeline class for a main model: by base and variant, else its ``model_index.json``."""
    base = record.base.value
    variant = getattr(getattr(record, "variant", None), "value", None) or "normal"
    name = _CLASSES.get((base, variant))
    if name is not None:
        return name
    index = Path(record.path) / "model_index.json"
    if index.is_file():
        try:
            found = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        except (OSError, ValueError):
            found = None
        if isinstance(found, str):
            return found
    raise LoaderNotFoundError(f"model {record.name!r}: no pipeline class for base {base} / variant {variant}")


def assemble_pipeline(
    record: ModelConfigBase, submodels: list[str], load_part: Callable[[str], LoadedModel]
) -> tuple[Any, dict[str, LoadedModel]]:
    """A diffusers pipeline whose modules are the cached parts of ``record``; returns (pipeline, parts)."""
    import diffusers

    cls = getattr(diffusers, pipeline_class_name(record))
    params = inspect.signature(cls.__init__).parameters
    parts = {
        name: load_part(name)
        for name in submodels
        if name in params and name in _SUBMODELS and name not in OPTIONAL_PARTS
    }
    return pipeline_from_modules(cls, {name: part.model for name, part in parts.items()}), parts


def pipeline_from_modules(cls: type[Any], modules: dict[str, Any]) -> Any:
    """An instance of the diffusers pipeline class ``cls`` over ``modules`` (no copies): parts it does not
    take are left out, required ones it has no module for are None (e.g. depth2img's depth_estimator:
    the caller gives the depth map), and no safety checker is required."""
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    for name, p in params.items():
        if name == "self" or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        if name in modules:
            kwargs[name] = modules[name]
        elif p.default is inspect.Parameter.empty:
            kwargs[name] = None
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    return cls(**kwargs)


__all__ = ["OPTIONAL_PARTS", "assemble_pipeline", "pipeline_class_name", "pipeline_from_modules"]
