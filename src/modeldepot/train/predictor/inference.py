"""``ClipPredictor``: a score for an image from a CLIP+MLP predictor (document 001's ``clip/predictor``).

The image goes through the CLIP model the predictor was trained on (its L2-normalised image
embedding), then through the MLP. A predictor trained here names that CLIP in its metadata (key,
name and content hash); a released LAION file names nothing, so ``clip=`` must say which CLIP
(OpenAI ViT-L/14 for ``sac+logos+ava1-l14-linearMSE.pth``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch

from modeldepot.errors import ServiceInputError, UnknownModelException, WrongModelTypeError
from modeldepot.services._images import check_image, module_device, module_dtype
from modeldepot.services.base import Service
from modeldepot.services.clip import ClipEmbedder
from modeldepot.taxonomy import ModelType
from modeldepot.train.predictor import _files
from modeldepot.train.predictor.mlp import PredictorMLP

if TYPE_CHECKING:
    from PIL import Image

    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager

_CLIP_TYPES = (ModelType.CLIPVision, ModelType.CLIPEmbed)


def _clip_record(depot: ModelManager, config: ModelConfigBase, clip: str | None) -> ModelConfigBase:
    """The CLIP record to embed images with: ``clip`` when given, else the one the predictor's
    metadata names (by key, else by content hash: the same CLIP installed under another key)."""
    if clip is not None:
        return depot.store.resolve(clip)
    meta = _files.read_metadata(Path(config.path))
    key, name, content = meta.get(_files.CLIP_KEY), meta.get(_files.CLIP_NAME), meta.get(_files.CLIP_HASH)
    if not key:
        raise ServiceInputError(
            f"predictor {config.name!r} ({config.key}) does not say which CLIP model it was trained on "
            "(a released LAION predictor names none): pass clip= with the key or name of that CLIP model, "
            "e.g. openai/clip-vit-large-patch14 for a ViT-L/14 predictor"
        )
    if depot.store.exists(key):
        return depot.store.get_model(key)
    same = [m for m in depot.store.search_by_hash(content) if m.type in _CLIP_TYPES] if content else []
    if same:
        return same[0]
    raise UnknownModelException(
        f"predictor {config.name!r} ({config.key}) was trained on CLIP model {name!r} (key {key}), which is "
        "not in this depot: install that CLIP model, or pass clip= with the key of a CLIP with the same weights",
        key=key,
    )


class ClipPredictor(Service):
    """Scores images with a CLIP+MLP predictor (LAION's aesthetic predictor layout).

    Args:
        model: a ``LoadedModel`` of a ``clip_predictor`` record, or a bare :class:`PredictorMLP`.
        embedder: the :class:`~modeldepot.services.clip.ClipEmbedder` of the CLIP model the
            predictor was trained on; its embedding width must be the predictor's input width.
    """

    model_types = (ModelType.ClipPredictor,)

    def __init__(self, model: Any, embedder: ClipEmbedder) -> None:
        super().__init__(model)
        self.check_model(self.bound.model, self.bound.config)
        if not isinstance(embedder, ClipEmbedder):
            raise ServiceInputError(f"embedder must be a ClipEmbedder, not {type(embedder).__name__}")
        self.embedder = embedder
        width = int(self.bound.model.input_size)
        if embedder.dim != width:
            clip = embedder.bound.config
            clip_label = f"{clip.name!r} ({clip.key})" if clip is not None else embedder.bound.label
            raise WrongModelTypeError(
                f"predictor {self.bound.label} scores {width}-wide CLIP embeddings, but CLIP model {clip_label} "
                f"makes {embedder.dim}-wide ones: use the CLIP model the predictor was trained on",
                key=clip.key if clip is not None else None,
                expected=(f"CLIP with {width}-wide embeddings",),
            )

    @classmethod
    def check_model(cls, model: Any, config: ModelConfigBase | None = None) -> None:
        """Refuse anything but a :class:`PredictorMLP`."""
        if not isinstance(model, PredictorMLP):
            raise cls.refuse(model, config, "a CLIP+MLP predictor (PredictorMLP)", "PredictorMLP")

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, clip: str | None = None, **options: Any) -> Self:
        """The predictor registered under ``key`` with the CLIP model it was trained on, both loaded
        through the depot's cache.

        Args:
            depot: the depot holding both models.
            key: the predictor's key, key prefix or name.
            clip: the CLIP model to use instead of the one the predictor's metadata names (required
                for a file without that metadata, such as LAION's released ones).
            options: passed to the ``ClipEmbedder`` (``batch_size``).

        Raises:
            WrongModelTypeError: ``key`` is not a predictor, or the CLIP's embedding width differs.
            UnknownModelException: the CLIP the predictor names is not in the depot.
            ServiceInputError: the predictor names no CLIP and ``clip`` is not given.
        """
        config = depot.store.resolve(key)
        cls.check_config(config)
        clip_config = _clip_record(depot, config, clip)
        embedder = ClipEmbedder.from_key(depot, clip_config.key, **options)
        return cls(depot.load_model_by_config(config), embedder)

    def __call__(self, image: Image.Image) -> float:
        """The predicted score of one image."""
        return self.predict([check_image(image)])[0]

    def predict(self, images: Sequence[Image.Image]) -> list[float]:
        """The predicted score of each image, in order."""
        from PIL import Image

        if isinstance(images, Image.Image) or not isinstance(images, Sequence) or isinstance(images, str | bytes):
            raise ServiceInputError(f"images must be a list of PIL images, not {type(images).__name__}")
        if not images:
            return []
        embeddings = torch.from_numpy(self.embedder.image(images))
        with self.bound.running() as model, torch.inference_mode():
            out = model(embeddings.to(module_device(model), module_dtype(model)))
        return [float(v) for v in out.float().reshape(-1).tolist()]


def predict(depot: ModelManager, key: str, image: Image.Image, *, clip: str | None = None) -> float:
    """The score the predictor ``key`` gives ``image`` (its CLIP from its metadata, or ``clip``)."""
    return ClipPredictor.from_key(depot, key, clip=clip)(image)


__all__ = ["ClipPredictor", "predict"]
