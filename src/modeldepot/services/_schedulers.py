"""Scheduler names, as InvokeAI spells them (``euler_a``, ``dpmpp_2m_k``), to fresh diffusers schedulers.

A cached pipeline's scheduler is never used directly: ``set_timesteps`` mutates it, and two calls may run
at once. Each call gets a new scheduler built from the model's own scheduler config, so the model's
training settings (betas, prediction type, timestep spacing) carry over. A ``_k`` suffix turns on Karras
sigmas where the scheduler has them. A diffusers class name (``EulerDiscreteScheduler``) works too.
"""

from __future__ import annotations

from typing import Any

from modeldepot.errors import ServiceInputError

#: name -> (diffusers class, config overrides, A1111 sampler label for the PNG "parameters" text)
_SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "ddpm": ("DDPMScheduler", {}, "DDPM"),
    "deis": ("DEISMultistepScheduler", {}, "DEIS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "kdpm_2": ("KDPM2DiscreteScheduler", {}, "DPM2"),
    "kdpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}, "DPM2 a"),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", {}, "DPM++ 2S"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM++ 2M"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "DPM++ 2M SDE"),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}, "DPM++ 3M"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": ("LCMScheduler", {}, "LCM"),
}
_KARRAS = frozenset({"lms", "heun", "euler", "kdpm_2", "kdpm_2_a", "dpmpp_2s", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m"})
#: names a user can pass: the table above, plus ``<name>_k`` (Karras sigmas) where that exists
SCHEDULER_NAMES: tuple[str, ...] = tuple(sorted([*_SCHEDULERS, *(f"{n}_k" for n in _KARRAS)]))


def _parse(name: str) -> tuple[str, dict[str, Any], str]:
    import diffusers

    if name in _SCHEDULERS:
        return _SCHEDULERS[name]
    if name.endswith("_k") and name[:-2] in _KARRAS:
        cls, overrides, label = _SCHEDULERS[name[:-2]]
        return cls, {**overrides, "use_karras_sigmas": True}, f"{label} Karras"
    if name.endswith("Scheduler") and hasattr(diffusers, name):
        return name, {}, name
    raise ServiceInputError(f"unknown scheduler {name!r}; schedulers are: {', '.join(SCHEDULER_NAMES)}")


def make_scheduler(name: str | None, model_scheduler: Any) -> tuple[Any, str]:
    """A new scheduler for one call, and its A1111 sampler label. ``name=None`` copies the model's own."""
    import diffusers

    if name is None:
        cls_name = type(model_scheduler).__name__
        label = next((lb for c, o, lb in _SCHEDULERS.values() if c == cls_name and not o), cls_name)
        return type(model_scheduler).from_config(model_scheduler.config), label
    cls_name, overrides, label = _parse(name)
    cls = getattr(diffusers, cls_name)
    return cls.from_config(model_scheduler.config, **overrides), label


__all__ = ["SCHEDULER_NAMES", "make_scheduler"]
