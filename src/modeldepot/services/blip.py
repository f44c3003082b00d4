"""``BlipCaptioner``: a caption for an image from a BLIP captioner (document 001's ``blip``).

The model is a ``BlipForConditionalGeneration`` (a ``captioner`` record, or ``BlipModelManager``'s
model) run with its ``BlipProcessor``. Captions are greedy or beam-searched, hence the same for the
same image every time; ``sample=True`` draws tokens instead (nucleus sampling), and then ``seed``
makes the draw repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self, overload

import torch

from modeldepot.errors import ServiceInputError
from modeldepot.services._images import check_image, generator, module_device, module_dtype
from modeldepot.services.base import Service
from modeldepot.services.clip import load_with_processor, processor_for
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ServiceInputError(f"{name} must be an integer ≥ {minimum}, not {value!r}")
    return value


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the global generators ``generate`` draws from, restoring them afterwards so a caption
    does not disturb (or depend on) anyone else's random numbers."""
    if seed is None:
        yield
        return
    generator(seed)  # validates the seed as every service does
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class BlipCaptioner(Service):
    """Captions images with a BLIP captioner.

    Args:
        model: a ``ManagedModel`` from ``BlipModelManager``, a ``LoadedModel`` of a captioner record,
            or a bare ``BlipForConditionalGeneration`` (then ``processor`` is required).
        processor: the ``BlipProcessor`` (default: the manager's, else the one in the record's folder).
        batch_size: images captioned per ``generate`` call when given a list.
    """

    model_types = (ModelType.Captioner,)

    def __init__(self, model: Any, processor: Any = None, *, batch_size: int = 8) -> None:
        super().__init__(model)
        self.check_model(self.bound.model, self.bound.config)
        self.batch_size = _positive("batch_size", batch_size)
        self.processor = processor_for(self, processor, "BlipProcessor", needs=("tokenizer", "image_processor"))

    @classmethod
    def check_model(cls, model: Any, config: ModelConfigBase | None = None) -> None:
        """Refuse a model that cannot generate text from an image."""
        if callable(getattr(model, "generate", None)) and hasattr(model, "vision_model"):
            return
        needs = "an image captioner such as BlipForConditionalGeneration (e.g. Salesforce/blip-image-captioning-base)"
        raise cls.refuse(model, config, needs, "BlipForConditionalGeneration")

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, **options: Any) -> Self:
        """The captioner registered under ``key`` with the ``BlipProcessor`` of its folder, through the cache."""
        return cls(load_with_processor(cls, depot, key, options), **options)

    @overload
    def __call__(
        self,
        image: Image.Image,
        *,
        max_length: int = 30,
        num_beams: int = 1,
        min_length: int = 5,
        prompt: str | None = None,
        seed: int | None = None,
        sample: bool = False,
        top_p: float = 0.9,
    ) -> str: ...

    @overload
    def __call__(
        self,
        image: Sequence[Image.Image],
        *,
        max_length: int = 30,
        num_beams: int = 1,
        min_length: int = 5,
        prompt: str | None = None,
        seed: int | None = None,
        sample: bool = False,
        top_p: float = 0.9,
    ) -> list[str]: ...

    def __call__(
        self,
        image: Image.Image | Sequence[Image.Image],
        *,
        max_length: int = 30,
        num_beams: int = 1,
        min_length: int = 5,
        prompt: str | None = None,
        seed: int | None = None,
        sample: bool = False,
        top_p: float = 0.9,
    ) -> str | list[str]:
        """The caption of ``image`` (a list of images gives a list of captions, in order).

        Args:
            max_length: most tokens in a caption, counting the start token and the prompt's tokens
                (``generate``'s ``max_length``).
            min_length: fewest tokens, counted the same way; the end token is held back until then.
            num_beams: 1 is greedy decoding; more is beam search (slower, often better).
            prompt: text the caption must start with ("a picture of"); it is part of the caption.
            seed: makes ``sample=True`` repeatable; without sampling the caption is already deterministic.
            sample: draw each token from the top-``top_p`` probability mass instead of taking the best.
        """
        from PIL import Image

        single = isinstance(image, Image.Image)
        images = (
            [check_image(image)]
            if single or not isinstance(image, Sequence)
            else [check_image(im, what=f"image {i}") for i, im in enumerate(image)]
        )
        _positive("max_length", max_length)
        _positive("num_beams", num_beams)
        _positive("min_length", min_length, 0)
        if min_length > max_length:
            raise ServiceInputError(f"min_length ({min_length}) is more than max_length ({max_length})")
        if prompt is not None and not isinstance(prompt, str):
            raise ServiceInputError(f"prompt must be a string, not {type(prompt).__name__}")
        if sample and not 0.0 < top_p <= 1.0:
            raise ServiceInputError(f"top_p must be in (0, 1], not {top_p!r}")
        options: dict[str, Any] = {"max_length": max_length, "min_length": min_length, "num_beams": num_beams}
        options.update({"do_sample": True, "top_p": top_p} if sample else {"do_sample": False})
        captions: list[str] = []
        with self.bound.running() as model, torch.inference_mode():
            device, dtype = module_device(model), module_dtype(model)
            with _seeded(seed if sample else None, device):
                for start in range(0, len(images), self.batch_size):
                    chunk = images[start : start + self.batch_size]
                    captions += self._caption(model, chunk, prompt, device, dtype, options)
        return captions[0] if single else captions

    def _caption(
        self,
        model: Any,
        images: list[Image.Image],
        prompt: str | None,
        device: torch.device,
        dtype: torch.dtype,
        options: dict[str, Any],
    ) -> list[str]:
        text = [prompt] * len(images) if prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt")
        kwargs = {k: v.to(device) for k, v in inputs.items()}
        kwargs["pixel_values"] = kwargs["pixel_values"].to(dtype)
        ids = model.generate(**kwargs, **options)
        return [str(c).strip() for c in self.processor.batch_decode(ids, skip_special_tokens=True)]


__all__ = ["BlipCaptioner"]
