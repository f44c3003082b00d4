"""Service classes that use the models (documents 000/001): load a model, hand it to a service, call it.

    >>> up = Upscaler.from_key(depot, "RealESRGAN_x4plus")
    >>> big = up(image, tile=512)
    >>> txt2img = Txt2Img.from_key(depot, "stable-diffusion-v1-5")
    >>> picture = txt2img("a lighthouse", steps=20, seed=1, loras=[("pixel-art", 0.8)])

Images are PIL images in and out. Services import torch; nothing outside this package imports them
at start-up (``modeldepot list`` stays light).
"""

from modeldepot.services._parameters import GenerationParameters, save_png
from modeldepot.services._schedulers import SCHEDULER_NAMES
from modeldepot.services.base import BoundModel, Service
from modeldepot.services.blip import BlipCaptioner
from modeldepot.services.clip import ClipEmbedder, ClipInterrogator
from modeldepot.services.diffusion import Depth2Img, Img2Img, Inpaint, Txt2Img
from modeldepot.services.face import FaceRestorer
from modeldepot.services.safety import SafetyChecker
from modeldepot.services.upscale import Upscaler

__all__ = [
    "SCHEDULER_NAMES",
    "BlipCaptioner",
    "BoundModel",
    "ClipEmbedder",
    "ClipInterrogator",
    "Depth2Img",
    "FaceRestorer",
    "GenerationParameters",
    "Img2Img",
    "Inpaint",
    "SafetyChecker",
    "Service",
    "Txt2Img",
    "Upscaler",
    "save_png",
]
