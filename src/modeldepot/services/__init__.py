"""Service classes that use the models (documents 000/001): load a model, hand it to a service, call it.

    >>> up = Upscaler.from_key(depot, "RealESRGAN_x4plus")
    >>> big = up(image, tile=512)
    >>> txt2img = Txt2Img.from_key(depot, "stable-diffusion-v1-5")
    >>> picture = txt2img("a lighthouse", steps=20, seed=1, loras=[("pixel-art", 0.8)])

Images are PIL images in and out. The service modules import torch; this package imports each one
on first use of its name, so ``import modeldepot.services`` (and the CLI's option lists built from
``SCHEDULER_NAMES``) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot._lazy import lazy_attributes
from modeldepot.services._schedulers import SCHEDULER_NAMES

if TYPE_CHECKING:
    from modeldepot.services._parameters import GenerationParameters, save_png
    from modeldepot.services.base import BoundModel, Service
    from modeldepot.services.blip import BlipCaptioner
    from modeldepot.services.clip import ClipEmbedder, ClipInterrogator
    from modeldepot.services.diffusion import Depth2Img, GenerationOptions, Img2Img, Inpaint, Txt2Img
    from modeldepot.services.face import FaceRestorer
    from modeldepot.services.safety import SafetyChecker
    from modeldepot.services.upscale import Upscaler

_WHERE = {
    "GenerationParameters": "_parameters",
    "save_png": "_parameters",
    "BoundModel": "base",
    "Service": "base",
    "BlipCaptioner": "blip",
    "ClipEmbedder": "clip",
    "ClipInterrogator": "clip",
    "Depth2Img": "diffusion",
    "GenerationOptions": "diffusion",
    "Img2Img": "diffusion",
    "Inpaint": "diffusion",
    "Txt2Img": "diffusion",
    "FaceRestorer": "face",
    "SafetyChecker": "safety",
    "Upscaler": "upscale",
}


__getattr__ = lazy_attributes(__name__, _WHERE, globals())


__all__ = [
    "SCHEDULER_NAMES",
    "BlipCaptioner",
    "BoundModel",
    "ClipEmbedder",
    "ClipInterrogator",
    "Depth2Img",
    "FaceRestorer",
    "GenerationOptions",
    "GenerationParameters",
    "Img2Img",
    "Inpaint",
    "SafetyChecker",
    "Service",
    "Txt2Img",
    "Upscaler",
    "save_png",
]
