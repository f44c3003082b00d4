"""CLIP services: ``ClipEmbedder`` (image and text embeddings, similarity) and ``ClipInterrogator``
(zero-shot ranking of labels for an image, document 001's interrogation).

Both run a full two-tower ``transformers.CLIPModel`` with its ``CLIPProcessor``: OpenAI CLIP and the
OpenCLIP models published in the Hugging Face layout (``laion/CLIP-ViT-*``) both load as one. A
full CLIP folder is recorded as ``clip_vision`` (a ``clip_embed`` record can hold one too when the
user says so); a one-tower encoder (an IP-Adapter's image encoder, a pipeline's text encoder) cannot
put images and texts in one space and is refused. OpenCLIP-only checkpoints and CoCa need the
``open_clip_torch`` package, which this project does not run.

This module also holds what the BLIP and safety-checker services share with it: finding the model's
processor (:func:`processor_for`) and loading model and processor by key (:func:`load_with_processor`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, overload

import numpy as np
import torch

from modeldepot.errors import ServiceInputError, WrongModelTypeError
from modeldepot.services._images import check_image, module_device, module_dtype
from modeldepot.services.base import BoundModel, Service
from modeldepot.taxonomy import ModelType, SubModelType

if TYPE_CHECKING:
    from PIL import Image

    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager

Ranked = list[tuple[str, float]]


# Shared with blip.py and safety.py -----------------------------------------------------------------
def processor_for(service: Service, given: Any, class_name: str, *, needs: Sequence[str] = ()) -> Any:
    """The processor ``service`` runs its model with: ``given``, else the one a manager loaded beside the
    model (``extras["processor"]``), else the one in the record's folder (read offline as
    ``class_name``, as the managers do). ``needs`` names attributes it must have (``tokenizer``...).

    Raises:
        ServiceInputError: a bare model without ``processor=``, or a processor lacking a part.
    """
    name = type(service).__name__
    bound = service.bound
    processor = given if given is not None else bound.extras.get("processor")
    if processor is None and bound.config is not None:
        from modeldepot.load.loaders.captioners import load_processor

        processor = load_processor(bound.config, Path(bound.config.path), SubModelType.FeatureExtractor, class_name)
    if processor is None:
        raise ServiceInputError(
            f"{name} was given a bare {type(bound.model).__name__} without its processor: pass processor= "
            f"(a {class_name}), or build the service from the depot (from_key) so it is read from the model's folder"
        )
    missing = [n for n in needs if getattr(processor, n, None) is None]
    if missing or not callable(processor):
        raise ServiceInputError(
            f"{name}: the processor {type(processor).__name__} cannot prepare the model's inputs "
            f"(it has no {', '.join(missing) or '__call__'}); {name} needs a {class_name}"
        )
    return processor


def load_with_processor(
    cls: type[Service], depot: ModelManager, key: str, options: dict[str, Any], *, option: str = "processor"
) -> BoundModel:
    """The model registered under ``key`` and its processor, both through the depot's cache, bound for
    ``cls``; the processor is left alone when the caller passed ``options[option]``. The model is
    checked (``cls.check_model``) before the processor is read, so a one-tower CLIP folder is refused
    for what it is rather than for its missing processor files."""
    config = depot.store.resolve(key)
    cls.check_config(config)
    loaded = depot.load_model_by_config(config)
    check = getattr(cls, "check_model", None)
    if check is not None:
        check(loaded.model, config)
    extras: dict[str, Any] = {}
    if options.get(option) is None:
        extras["processor"] = depot.load_model_by_config(config, SubModelType.FeatureExtractor).model
    return BoundModel(loaded.model, config, (loaded,), extras)


def _pooled(output: Any) -> torch.Tensor:
    """The projected embeddings: transformers 4 returns them as a tensor, 5 as ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalise(x: torch.Tensor) -> torch.Tensor:
    # float32 before normalising: a float16 model's embeddings would lose the unit norm in the rounding.
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu()


def _image_list(images: Any) -> list[Image.Image]:
    from PIL import Image

    if isinstance(images, Image.Image):
        return [check_image(images)]
    if not isinstance(images, Sequence) or isinstance(images, str | bytes):
        return [check_image(images)]  # names what it got
    return [check_image(im, what=f"image {i}") for i, im in enumerate(images)]


def _text_list(texts: Any, what: str = "text") -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise ServiceInputError(f"{what} must be a string or a list of strings, not {type(texts).__name__}")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ServiceInputError(f"every {what} must be a string, not {type(bad).__name__} ({bad!r})")
    return list(texts)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClipEmbedder(Service):
    """L2-normalised CLIP embeddings of images and texts, and their cosine similarities.

    Args:
        model: a ``ManagedModel`` from ``ClipModelManager``, a ``LoadedModel`` of a full CLIP record,
            or a bare ``CLIPModel`` (then ``processor`` is required).
        processor: the ``CLIPProcessor`` (default: the manager's, else the one in the record's folder).
        batch_size: images or texts encoded per forward pass, which bounds memory for long lists.
    """

    model_types = (ModelType.CLIPVision, ModelType.CLIPEmbed)

    def __init__(self, model: Any, processor: Any = None, *, batch_size: int = 32) -> None:
        super().__init__(model)
        self.check_model(self.bound.model, self.bound.config)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ServiceInputError(f"batch_size must be an integer ≥ 1, not {batch_size!r}")
        self.batch_size = batch_size
        self.processor = processor_for(self, processor, "CLIPProcessor", needs=("tokenizer", "image_processor"))

    @classmethod
    def check_model(cls, model: Any, config: ModelConfigBase | None = None) -> None:
        """Refuse anything but a two-tower CLIP model, saying what it is and what would work."""
        if all(hasattr(model, a) for a in ("get_image_features", "get_text_features", "logit_scale")):
            return
        name = repr(config.name) if config is not None else "given"
        kind = type(model).__name__
        key = config.key if config is not None else None
        if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
            why = (
                f"model {name} is an open_clip {kind}; {cls.__name__} runs transformers' CLIPModel: use the "
                "model's Hugging Face layout (config.json + model.safetensors, as "
                "laion/CLIP-ViT-H-14-laion2B-s32B-b79K ships it); CoCa has no such layout and needs the "
                "open_clip_torch package (and torchvision)"
            )
        else:
            why = (
                f"model {name} is a {kind}, not a full CLIP model: {cls.__name__} needs a CLIPModel (text and "
                "vision towers with their projections) to put images and texts in one space, "
                "e.g. openai/clip-vit-large-patch14"
            )
        raise WrongModelTypeError(why, key=key, expected=("CLIPModel",))

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, **options: Any) -> Self:
        """The service over the CLIP model registered under ``key``, its ``CLIPProcessor`` read from the
        model's folder; both through the depot's cache."""
        return cls(load_with_processor(cls, depot, key, options), **options)

    @property
    def dim(self) -> int:
        """The width of the joint embedding space."""
        return int(self.bound.model.config.projection_dim)

    def image(self, images: Image.Image | Sequence[Image.Image]) -> np.ndarray:
        """Unit-length image embeddings, ``float32 [n, dim]`` (a single image gives ``[1, dim]``)."""
        items = _image_list(images)
        with self.bound.running() as model, torch.inference_mode():
            return self._images(model, items).numpy()

    def text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings, ``float32 [n, dim]``; texts past the model's 77 tokens are cut."""
        items = _text_list(texts)
        with self.bound.running() as model, torch.inference_mode():
            return self._texts(model, items).numpy()

    def similarity(self, images: Image.Image | Sequence[Image.Image], texts: str | Sequence[str]) -> np.ndarray:
        """Cosine similarities, ``float32 [n_images, n_texts]`` (the dot products of the unit embeddings)."""
        image_items, text_items = _image_list(images), _text_list(texts)
        with self.bound.running() as model, torch.inference_mode():
            return (self._images(model, image_items) @ self._texts(model, text_items).T).numpy()

    def _images(self, model: Any, images: list[Image.Image]) -> torch.Tensor:
        device, dtype = module_device(model), module_dtype(model)
        out = [torch.zeros(0, self.dim)]
        for chunk in _chunks(images, self.batch_size):
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
            out.append(_normalise(_pooled(model.get_image_features(pixel_values=pixels.to(device, dtype)))))
        return torch.cat(out)

    def _texts(self, model: Any, texts: list[str]) -> torch.Tensor:
        device = module_device(model)
        out = [torch.zeros(0, self.dim)]
        for chunk in _chunks(texts, self.batch_size):
            batch = self.processor(text=chunk, return_tensors="pt", padding=True, truncation=True)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            out.append(_normalise(_pooled(model.get_text_features(input_ids=ids, attention_mask=mask))))
        return torch.cat(out)


class ClipInterrogator(ClipEmbedder):
    """Rank labels for an image as CLIP zero-shot classification does.

    A label's score is its probability among the labels given: the softmax, over the labels, of
    ``exp(logit_scale) * cosine(image, label)`` — the model's own ``logits_per_image`` — so the scores
    of one label set sum to 1 and are not comparable across label sets of different sizes.
    Text embeddings of each label set are kept (the ``cache_size`` most recent sets), so asking again
    with the same labels (an interrogator's "flavors", "mediums") only encodes the image.
    """

    def __init__(self, model: Any, processor: Any = None, *, batch_size: int = 32, cache_size: int = 16) -> None:
        super().__init__(model, processor, batch_size=batch_size)
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ServiceInputError(f"cache_size must be an integer ≥ 0, not {cache_size!r}")
        self.cache_size = cache_size
        self._labels: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @overload
    def __call__(
        self, image: Image.Image, labels: Mapping[str, Sequence[str]], top_k: int = 5
    ) -> dict[str, Ranked]: ...

    @overload
    def __call__(self, image: Image.Image, labels: Sequence[str], top_k: int = 5) -> Ranked: ...

    def __call__(
        self, image: Image.Image, labels: Sequence[str] | Mapping[str, Sequence[str]], top_k: int = 5
    ) -> Ranked | dict[str, Ranked]:
        """The ``top_k`` best labels for ``image`` as ``(label, score)``, best first; for a mapping
        ``category -> labels``, that ranking per category (each category's scores sum to 1 over its
        labels)."""
        picture = check_image(image)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ServiceInputError(f"top_k must be an integer ≥ 1, not {top_k!r}")
        sets = (
            {str(c): self._label_tuple(v, f"labels[{c!r}]") for c, v in labels.items()}
            if isinstance(labels, Mapping)
            else {"": self._label_tuple(labels, "labels")}
        )
        with self.bound.running() as model, torch.inference_mode():
            embedding = self._images(model, [picture])[0]
            scale = float(model.logit_scale.exp().item())
            ranked = {c: self._rank(model, embedding, scale, s, top_k) for c, s in sets.items()}
        return ranked if isinstance(labels, Mapping) else ranked[""]

    def label_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        """The unit text embeddings of ``labels`` (``[n, dim]``), from the cache when this set was seen."""
        key = self._label_tuple(labels, "labels")
        with self.bound.running() as model, torch.inference_mode():
            return self._cached(model, key).numpy()

    def clear_cache(self) -> None:
        """Forget the cached label embeddings."""
        with self._lock:
            self._labels.clear()

    def _label_tuple(self, labels: Any, what: str) -> tuple[str, ...]:
        if isinstance(labels, str):
            raise ServiceInputError(f"{what} must be a list of labels, not one string ({labels!r})")
        items = tuple(_text_list(labels, "label"))
        if not items:
            raise ServiceInputError(f"{what} is empty: give at least one label to rank")
        return items

    def _rank(self, model: Any, image: torch.Tensor, scale: float, labels: tuple[str, ...], top_k: int) -> Ranked:
        probs = torch.softmax(self._cached(model, labels) @ image * scale, dim=0)
        order = torch.argsort(probs, descending=True, stable=True)[:top_k]
        return [(labels[i], float(probs[i])) for i in order.tolist()]

    def _cached(self, model: Any, labels: tuple[str, ...]) -> torch.Tensor:
        with self._lock:
            hit = self._labels.get(labels)
            if hit is not None:
                self._labels.move_to_end(labels)
                return hit
        embeds = self._texts(model, list(labels))
        if self.cache_size:
            with self._lock:
                self._labels[labels] = embeds
                while len(self._labels) > self.cache_size:
                    self._labels.popitem(last=False)
        return embeds


__all__ = ["ClipEmbedder", "ClipInterrogator", "load_with_processor", "processor_for"]
