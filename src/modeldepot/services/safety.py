"""``SafetyChecker``: Stable Diffusion's NSFW filter as a service (document 001's ``safety_checker``).

The model is diffusers' ``StableDiffusionSafetyChecker``: a CLIP image tower whose projected embedding
is compared with 17 concept embeddings (and 3 "special care" ones) against per-concept thresholds.
Its own ``forward`` decides and blacks out, exactly as the diffusers pipelines call it; this service
feeds it ``clip_input`` from the model's ``CLIPImageProcessor`` and the images as numpy arrays in
[0, 1], and turns what it returns back into PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from modeldepot.errors import ServiceInputError
from modeldepot.services._images import check_image, module_device, module_dtype
from modeldepot.services.base import Service
from modeldepot.services.clip import load_with_processor, processor_for
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from PIL import Image

    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager


class SafetyChecker(Service):
    """Flags NSFW images and replaces them with black images of the same size.

    Args:
        model: a ``ManagedModel`` from ``SafetyCheckerModelManager``, a ``LoadedModel`` of a
            ``safety_checker`` record, or a bare ``StableDiffusionSafetyChecker`` (then
            ``feature_extractor`` is required).
        feature_extractor: its ``CLIPImageProcessor`` (default: the manager's, else the record folder's).
        batch_size: images judged per forward pass.
    """

    model_types = (ModelType.SafetyChecker,)

    def __init__(self, model: Any, feature_extractor: Any = None, *, batch_size: int = 8) -> None:
        super().__init__(model)
        self.check_model(self.bound.model, self.bound.config)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ServiceInputError(f"batch_size must be an integer ≥ 1, not {batch_size!r}")
        self.batch_size = batch_size
        self.feature_extractor = processor_for(self, feature_extractor, "CLIPImageProcessor")

    @classmethod
    def check_model(cls, model: Any, config: ModelConfigBase | None = None) -> None:
        """Refuse anything but a safety checker (its concept embeddings and thresholds)."""
        if all(hasattr(model, a) for a in ("vision_model", "concept_embeds", "concept_embeds_weights")):
            return
        needs = "a StableDiffusionSafetyChecker (e.g. CompVis/stable-diffusion-safety-checker)"
        raise cls.refuse(model, config, needs, "StableDiffusionSafetyChecker")

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, **options: Any) -> Self:
        """The checker registered under ``key`` with the ``CLIPImageProcessor`` of its folder, through the cache."""
        return cls(load_with_processor(cls, depot, key, options, option="feature_extractor"), **options)

    def __call__(self, images: Image.Image | Sequence[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        """``(images, flags)``: each image as given (as RGB) or, when flagged NSFW, black; a flag per image.
        A single image is judged as a list of one."""
        from PIL import Image

        items = (
            [check_image(images)]
            if isinstance(images, Image.Image) or not isinstance(images, Sequence)
            else [check_image(im, what=f"image {i}") for i, im in enumerate(images)]
        )
        out: list[Image.Image] = []
        flags: list[bool] = []
        with self.bound.running() as model, torch.inference_mode():
            device, dtype = module_device(model), module_dtype(model)
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                pixels = self.feature_extractor(images=chunk, return_tensors="pt")["pixel_values"]
                # A list, not one stacked array: the images may differ in size; the checker blacks
                # out by index either way.
                arrays = [np.asarray(im, dtype=np.float32) / 255.0 for im in chunk]
                checked, nsfw = model(clip_input=pixels.to(device, dtype), images=arrays)
                flags += [bool(f) for f in nsfw]
                out += [_to_image(a) for a in checked]
        return out, flags


def _to_image(array: Any) -> Image.Image:
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(array, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


__all__ = ["SafetyChecker"]
