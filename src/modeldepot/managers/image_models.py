"""Managers whose model is one network: ESRGAN upscalers, GFPGAN and CodeFormer face restorers,
ControlNets (document 001's ``esrgan.py``, ``gfpgan.py``, ``codeformer.py``, ``controlnet.py``)."""

from __future__ import annotations

from modeldepot.managers.base import BaseModelManager


class EsrganModelManager(BaseModelManager):
    """ESRGAN-family upscalers (RRDBNet); ``loaded["model"].scale`` is the upscale factor."""

    service = "esrgan"


class GfpganModelManager(BaseModelManager):
    """GFPGAN face restorers. The entry's face-detection and parsing helpers are downloaded and
    recorded as models of their own; ``loaded["model"]`` is GFPGAN itself."""

    service = "gfpgan"


class CodeFormerModelManager(BaseModelManager):
    """CodeFormer face restorers; ``loaded["model"](face, w=0.5)`` as in the original."""

    service = "codeformer"


class ControlNetModelManager(BaseModelManager):
    """ControlNets (diffusers ``ControlNetModel`` from checkpoint files or folders)."""

    service = "controlnet"


__all__ = ["CodeFormerModelManager", "ControlNetModelManager", "EsrganModelManager", "GfpganModelManager"]
