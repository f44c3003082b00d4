"""Image-to-image upscalers (``spandrel_image_to_image`` records).

spandrel would cover dozens of architectures, but it needs torchvision, and no CPU torchvision
build imports cleanly next to this torch. The ESRGAN family (RRDBNet: ESRGAN, Real-ESRGAN, most
community 4x models) is built here instead; other architectures raise a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_weights
from modeldepot.load.loaders._rrdbnet import build_rrdbnet
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType


@ModelLoaderRegistry.register(
    base=BaseModelType.Any, type=ModelType.SpandrelImageToImage, format=ModelFormat.Checkpoint
)
class UpscalerLoader(PickleConversionMixin, ModelLoader):
    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        sd = load_weights(path)
        try:
            model = build_rrdbnet(sd, str(path), partial=self.partial)
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"{path}: unsupported upscaler architecture (only ESRGAN/RRDBNet is built in): {exc}", path=str(path)
            ) from exc
        # Upscalers keep float32 on CPU; half precision only where the device runs it.
        if self.precision != "float32":
            model = model.to(self.torch_dtype)
        model.eval()
        model.requires_grad_(False)
        return model


__all__ = ["UpscalerLoader"]
