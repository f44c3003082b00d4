"""Declared metadata: what a file says about itself (ModelSpec, kohya ``ss_*``), read before any shapes.

ModelSpec (``modelspec.architecture``) looks like ``stable-diffusion-xl-v1-base/lora``: an
architecture id, then ``/component`` for adapters. Kohya's ``ss_base_model_version`` is free text
written by the trainer; the values below are the ones seen in the wild. Anything unrecognised is
reported as a note, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from modeldepot.taxonomy import (
    BaseModelType,
    FluxVariantType,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
)

B = BaseModelType


@dataclass
class Declared:
    type: ModelType | None = None
    base: BaseModelType | None = None
    variant: str | None = None
    prediction_type: SchedulerPredictionType | None = None
    why: dict[str, str] = field(default_factory=dict)  # field -> "modelspec.architecture = '...'"
    notes: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.type, self.base, self.variant, self.prediction_type))


_ARCH_RULES: list[tuple[str, BaseModelType, str | None, SchedulerPredictionType | None]] = [
    # (regex on the architecture id, base, variant, prediction type)
    (r"^stable-diffusion-v1(-.*)?-inpaint", B.StableDiffusion1, ModelVariantType.Inpaint.value, None),
    (r"^stable-diffusion-v1\b", B.StableDiffusion1, None, None),
    (r"^stable-diffusion-v2-768-v", B.StableDiffusion2, None, SchedulerPredictionType.VPrediction),
    (r"^stable-diffusion-v2-512", B.StableDiffusion2, None, SchedulerPredictionType.Epsilon),
    (r"^stable-diffusion-v2-depth", B.StableDiffusion2, ModelVariantType.Depth.value, None),
    (r"^stable-diffusion-v2-inpaint", B.StableDiffusion2, ModelVariantType.Inpaint.value, None),
    (r"^stable-diffusion-v2\b", B.StableDiffusion2, None, None),
    (r"^stable-diffusion-xl-v1-refiner", B.StableDiffusionXLRefiner, None, None),
    (r"^stable-diffusion-xl(-v1)?(-base)?(-inpaint)", B.StableDiffusionXL, ModelVariantType.Inpaint.value, None),
    (r"^stable-diffusion-xl", B.StableDiffusionXL, None, None),
    (r"^(stable-diffusion-v3|sd3)", B.StableDiffusion3, None, None),
    (r"^flux[.-]?1[.-]?dev[.-]?fill", B.Flux, FluxVariantType.DevFill.value, None),
    (r"^flux[.-]?1[.-]?dev", B.Flux, FluxVariantType.Dev.value, None),
    (r"^flux[.-]?1[.-]?schnell", B.Flux, FluxVariantType.Schnell.value, None),
    (r"^flux[.-]?1?$", B.Flux, None, None),
]

_COMPONENTS: dict[str, ModelType] = {
    "lora": ModelType.LoRA,
    "lycoris": ModelType.LoRA,
    "textual-inversion": ModelType.TextualInversion,
    "controlnet": ModelType.ControlNet,
    "control-lora": ModelType.ControlLoRA,
    "vae": ModelType.VAE,
    "ip-adapter": ModelType.IPAdapter,
    "t2i-adapter": ModelType.T2IAdapter,
}

_KOHYA_BASES: list[tuple[str, BaseModelType, SchedulerPredictionType | None]] = [
    (r"^sd_v1", B.StableDiffusion1, None),
    (r"^sd_v2_768_v", B.StableDiffusion2, SchedulerPredictionType.VPrediction),
    (r"^sd_v2_512", B.StableDiffusion2, SchedulerPredictionType.Epsilon),
    (r"^sd_v2", B.StableDiffusion2, None),
    (r"^sdxl", B.StableDiffusionXL, None),
    (r"^(sd3|stable_diffusion_3)", B.StableDiffusion3, None),
    (r"^flux", B.Flux, None),
]

_KOHYA_MODULES: dict[str, tuple[ModelType, BaseModelType | None]] = {
    "networks.lora": (ModelType.LoRA, None),
    "networks.dylora": (ModelType.LoRA, None),
    "networks.oft": (ModelType.LoRA, None),
    "lycoris.kohya": (ModelType.LoRA, None),
    "networks.lora_flux": (ModelType.LoRA, B.Flux),
    "networks.oft_flux": (ModelType.LoRA, B.Flux),
    "networks.lora_sd3": (ModelType.LoRA, B.StableDiffusion3),
}

_PREDICTION: dict[str, SchedulerPredictionType] = {
    "epsilon": SchedulerPredictionType.Epsilon,
    "eps": SchedulerPredictionType.Epsilon,
    "v": SchedulerPredictionType.VPrediction,
    "v_prediction": SchedulerPredictionType.VPrediction,
    "v-prediction": SchedulerPredictionType.VPrediction,
    "sample": SchedulerPredictionType.Sample,
}


def _architecture(declared: Declared, raw: str) -> None:
    arch, _, component = raw.strip().lower().partition("/")
    src = f"modelspec.architecture = {raw!r}"
    for pattern, base, variant, prediction in _ARCH_RULES:
        if re.search(pattern, arch):
            declared.base = base
            declared.why["base"] = src
            if variant is not None:
                declared.variant, declared.why["variant"] = variant, src
            if prediction is not None:
                declared.prediction_type, declared.why["prediction_type"] = prediction, src
            break
    else:
        declared.notes.append(f"{src}: architecture not recognised, ignored")
    if component:
        kind = _COMPONENTS.get(component)
        if kind is None:
            declared.notes.append(f"{src}: component {component!r} not recognised, ignored")
        else:
            declared.type, declared.why["type"] = kind, src
    elif declared.base is not None:
        declared.type, declared.why["type"] = ModelType.Main, src


def read_declared(metadata: dict[str, str]) -> Declared:
    """Interpret ModelSpec and kohya metadata. Empty when the file declares nothing."""
    declared = Declared()
    arch = metadata.get("modelspec.architecture")
    if arch:
        _architecture(declared, arch)
    pred = metadata.get("modelspec.prediction_type")
    if pred:
        value = _PREDICTION.get(pred.strip().lower())
        if value is None:
            declared.notes.append(f"modelspec.prediction_type = {pred!r} not recognised, ignored")
        else:
            declared.prediction_type = value
            declared.why["prediction_type"] = f"modelspec.prediction_type = {pred!r}"
    module = metadata.get("ss_network_module")
    if module:
        kind, module_base = _KOHYA_MODULES.get(module.strip(), (ModelType.LoRA, None))
        if declared.type is None:
            declared.type, declared.why["type"] = kind, f"ss_network_module = {module!r}"
        if module_base is not None and declared.base is None:
            declared.base, declared.why["base"] = module_base, f"ss_network_module = {module!r}"
    version = metadata.get("ss_base_model_version")
    if version and declared.base is None:
        for pattern, base, prediction in _KOHYA_BASES:
            if re.search(pattern, version.strip().lower()):
                declared.base, declared.why["base"] = base, f"ss_base_model_version = {version!r}"
                if prediction is not None and declared.prediction_type is None:
                    declared.prediction_type = prediction
                    declared.why["prediction_type"] = f"ss_base_model_version = {version!r}"
                break
        else:
            declared.notes.append(f"ss_base_model_version = {version!r} not recognised, ignored")
    return declared
