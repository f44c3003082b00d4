"""Which diffusers pipeline class runs a task for a model family, and how it is built from cached parts.

The parts are the cache's modules themselves: a pipeline object is a cheap bundle of references, so
one is built per call (a call may swap the VAE or the tokenizers, and schedulers are stateful), and
no weight is ever copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeldepot.errors import WrongModelTypeError
from modeldepot.managers._pipeline import pipeline_from_modules

#: family -> task -> diffusers pipeline class name
_CLASSES: dict[str, dict[str, str]] = {
    "sd": {
        "txt2img": "StableDiffusionPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "depth2img": "StableDiffusionDepth2ImgPipeline",
    },
    "sdxl": {
        "txt2img": "StableDiffusionXLPipeline",
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
    },
    "sdxl-refiner": {"img2img": "StableDiffusionXLImg2ImgPipeline", "inpaint": "StableDiffusionXLInpaintPipeline"},
    "sd-3": {
        "txt2img": "StableDiffusion3Pipeline",
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
    },
    "flux": {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"},
}
#: UNet input channels -> variant: 4 latent channels; + mask and masked image (inpaint); + depth
_VARIANTS = {4: "normal", 9: "inpaint", 5: "depth"}
#: what each task needs the denoiser's variant to be
_TASK_VARIANTS = {
    "txt2img": ("normal",),
    "img2img": ("normal",),
    "inpaint": ("normal", "inpaint"),
    "depth2img": ("depth",),
}
_TASK_SERVICE = {"txt2img": "Txt2Img", "img2img": "Img2Img", "inpaint": "Inpaint", "depth2img": "Depth2Img"}


def family(modules: Mapping[str, Any], base: str | None) -> str:
    """The pipeline family of a set of parts: from the record's base when known, else from the parts."""
    if base in ("sd-1", "sd-2"):
        return "sd"
    if base in _CLASSES:
        return base
    if "transformer" in modules:
        return "sd-3" if "text_encoder_3" in modules else "flux"
    if "text_encoder_2" in modules:
        return "sdxl" if "text_encoder" in modules else "sdxl-refiner"
    return "sd"


def variant(modules: Mapping[str, Any]) -> str:
    """``normal``, ``inpaint`` or ``depth``, from the denoiser's input channels."""
    denoiser = modules.get("unet") or modules.get("transformer")
    channels = getattr(getattr(denoiser, "config", None), "in_channels", 4)
    if "unet" not in modules:
        return "normal"  # DiT families keep 16/64 latent channels; their fill variants are separate classes
    return _VARIANTS.get(int(channels), "normal")


def pipeline_class(task: str, modules: Mapping[str, Any], base: str | None, label: str) -> type[Any]:
    """The diffusers class for ``task`` on these parts; WrongModelTypeError when the model cannot do it."""
    import diffusers

    fam, var = family(modules, base), variant(modules)
    service = _TASK_SERVICE[task]
    if var not in _TASK_VARIANTS[task]:
        hint = {"inpaint": "use Inpaint", "depth": "use Depth2Img"}.get(var, "use Txt2Img, Img2Img or Inpaint")
        raise WrongModelTypeError(
            f"{service} cannot use model {label}: it is a {var} model ({hint})", expected=_TASK_VARIANTS[task]
        )
    name = _CLASSES[fam].get(task)
    if name is None:
        raise WrongModelTypeError(f"{service} cannot use model {label}: no {task} pipeline for {fam} models")
    cls: type[Any] = getattr(diffusers, name)
    return cls


def build_pipeline(cls: type[Any], modules: Mapping[str, Any]) -> Any:
    """An instance of ``cls`` over ``modules`` (the managers' builder: no copies, no safety checker
    required; the SafetyChecker service is a separate step), its progress bar off."""
    pipe = pipeline_from_modules(cls, dict(modules))
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = ["build_pipeline", "family", "pipeline_class", "variant"]
