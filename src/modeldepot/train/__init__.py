"""Training (document 001's ``train/`` and ``clip/predictor``): results come back as depot models.

    >>> record = train_lora(depot, base="stable-diffusion-v1-5", data="photos/", steps=500, output_name="my-style")
    >>> Txt2Img.from_key(depot, "stable-diffusion-v1-5")("a cat", loras=[(record.key, 0.8)])

``CaptionedImageDataset`` reads a folder of images with same-named caption files (EveryDream /
kohya). ``train_lora`` and ``train_dreambooth_lora`` train LoRA adapters with PEFT and install the
result, a kohya-layout ``.safetensors`` with ``ss_*`` and ``modelspec.*`` metadata, into the depot.
``modeldepot.train.predictor`` (``prepare``, ``train_predictor``, ``predict``) prepares CLIP
embeddings of scored images, fits the CLIP+MLP predictor and predicts a score for an image.

The training modules import torch; this package imports each one on first use of its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot._lazy import lazy_attributes

if TYPE_CHECKING:
    from modeldepot.train._plan import MemoryEstimate, TrainingPlan
    from modeldepot.train.dataset import Batch, CaptionedImageDataset, DatasetItem
    from modeldepot.train.dreambooth import plan_dreambooth_lora, train_dreambooth_lora
    from modeldepot.train.lora import plan_lora, train_lora

_WHERE = {
    "Batch": "dataset",
    "CaptionedImageDataset": "dataset",
    "DatasetItem": "dataset",
    "MemoryEstimate": "_plan",
    "TrainingPlan": "_plan",
    "plan_dreambooth_lora": "dreambooth",
    "plan_lora": "lora",
    "train_dreambooth_lora": "dreambooth",
    "train_lora": "lora",
}


__getattr__ = lazy_attributes(__name__, _WHERE, globals())


__all__ = [
    "Batch",
    "CaptionedImageDataset",
    "DatasetItem",
    "MemoryEstimate",
    "TrainingPlan",
    "plan_dreambooth_lora",
    "plan_lora",
    "train_dreambooth_lora",
    "train_lora",
]
