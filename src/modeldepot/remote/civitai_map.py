"""Civitai's vocabulary mapped onto ours: ``baseModel`` strings to bases, model types to ``ModelType``.

Civitai's ``baseModel`` mixes architecture and lineage ("Pony" and "Illustrious" are SDXL
fine-tune families that nothing in the weights tells apart), so the table gives both: the base we
store, and a ``lineage:<slug>`` tag that keeps what the weights cannot say. Unknown values map to
no base; the raw value is kept as a ``civitai_base:<value>`` tag so nothing is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from modeldepot.taxonomy import BaseModelType, FluxVariantType, ModelType, SchedulerPredictionType

_SD1 = BaseModelType.StableDiffusion1
_SD2 = BaseModelType.StableDiffusion2
_SDXL = BaseModelType.StableDiffusionXL
_SD3 = BaseModelType.StableDiffusion3
_FLUX = BaseModelType.Flux

#: normalised Civitai baseModel -> (base, lineage). Lineage None means "the plain base".
_BASES: dict[str, tuple[BaseModelType, str | None]] = {
    "sd 1.4": (_SD1, None),
    "sd 1.5": (_SD1, None),
    "sd 1.5 lcm": (_SD1, "lcm"),
    "sd 1.5 hyper": (_SD1, "hyper"),
    "sd 2.0": (_SD2, None),
    "sd 2.0 768": (_SD2, None),
    "sd 2.1": (_SD2, None),
    "sd 2.1 768": (_SD2, None),
    "sd 2.1 unclip": (_SD2, "unclip"),
    "sdxl 0.9": (_SDXL, None),
    "sdxl 1.0": (_SDXL, None),
    "sdxl 1.0 lcm": (_SDXL, "lcm"),
    "sdxl lcm": (_SDXL, "lcm"),
    "sdxl turbo": (_SDXL, "turbo"),
    "sdxl lightning": (_SDXL, "lightning"),
    "sdxl hyper": (_SDXL, "hyper"),
    "sdxl distilled": (_SDXL, "distilled"),
    "pony": (_SDXL, "pony"),
    "illustrious": (_SDXL, "illustrious"),
    "noobai": (_SDXL, "noobai"),
    "sd 3": (_SD3, None),
    "sd 3.5": (_SD3, None),
    "sd 3.5 medium": (_SD3, "sd3.5-medium"),
    "sd 3.5 large": (_SD3, "sd3.5-large"),
    "sd 3.5 large turbo": (_SD3, "sd3.5-large-turbo"),
    "flux.1 d": (_FLUX, None),
    "flux.1 s": (_FLUX, None),
    "flux.1 kontext": (_FLUX, "kontext"),
    "flux.1 krea": (_FLUX, "krea"),
}
_V_PREDICTION = frozenset({"sd 2.0 768", "sd 2.1 768"})
_FLUX_VARIANTS = {"flux.1 d": FluxVariantType.Dev, "flux.1 s": FluxVariantType.Schnell}
#: Families to try when an exact match fails (new sub-variants appear on Civitai often).
_PREFIXES: tuple[tuple[str, BaseModelType], ...] = (
    ("sdxl", _SDXL),
    ("sd 1.", _SD1),
    ("sd 2.", _SD2),
    ("sd 3", _SD3),
    ("flux.1", _FLUX),
)

_TYPES: dict[str, ModelType] = {
    "checkpoint": ModelType.Main,
    "lora": ModelType.LoRA,
    "locon": ModelType.LoRA,
    "lycoris": ModelType.LoRA,
    "dora": ModelType.LoRA,
    "textualinversion": ModelType.TextualInversion,
    "vae": ModelType.VAE,
    "controlnet": ModelType.ControlNet,
    "upscaler": ModelType.SpandrelImageToImage,
}


@dataclass(frozen=True)
class BaseMapping:
    """What a Civitai ``baseModel`` tells us."""

    raw: str | None
    base: BaseModelType | None
    lineage: str | None = None
    prediction_type: SchedulerPredictionType | None = None
    flux_variant: FluxVariantType | None = None
    tags: list[str] = field(default_factory=list)


def _norm(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip().lower())


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", value.lower()).strip("-")


def map_civitai_base(raw: str | None) -> BaseMapping:
    """Map a Civitai ``baseModel`` value (``"SDXL 1.0"``, ``"Pony"``...) onto our bases."""
    if not raw or not raw.strip():
        return BaseMapping(raw=raw, base=None)
    key = _norm(raw)
    if key in _BASES:
        base, lineage = _BASES[key]
    else:
        found = next((b for prefix, b in _PREFIXES if key.startswith(prefix)), None)
        if found is None:
            return BaseMapping(raw=raw, base=None, tags=[f"civitai_base:{raw.strip()}"])
        base, lineage = found, _slug(key)
    tags = [f"lineage:{lineage}"] if lineage else []
    return BaseMapping(
        raw=raw,
        base=base,
        lineage=lineage,
        prediction_type=SchedulerPredictionType.VPrediction if key in _V_PREDICTION else None,
        flux_variant=_FLUX_VARIANTS.get(key),
        tags=tags,
    )


def map_civitai_type(raw: str | None) -> ModelType | None:
    """Map a Civitai model type (``Checkpoint``, ``LORA``, ``TextualInversion``...) onto ``ModelType``.

    Types we do not manage (Hypernetwork, MotionModule, Poses, Wildcards, Workflows, Other) map to
    None and are left to identification.
    """
    if not raw:
        return None
    return _TYPES.get(re.sub(r"[\s_-]+", "", raw.lower()))


__all__ = ["BaseMapping", "map_civitai_base", "map_civitai_type"]
