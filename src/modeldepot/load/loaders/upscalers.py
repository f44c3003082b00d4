"""Image-to-image models (``spandrel_image_to_image`` records): upscalers and face restorers.

spandrel would cover dozens of architectures, but it needs torchvision, and no CPU torchvision
build imports cleanly next to this torch. The architectures users of Nataili / A1111 need are built
here instead, chosen by the keys of the file: GFPGAN and CodeFormer (face restorers, which take an
aligned face and return it restored at the same size) and the ESRGAN family (RRDBNet: ESRGAN,
Real-ESRGAN, most community 4x models). Other architectures raise a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_weights
from modeldepot.load.loaders._rrdbnet import build_rrdbnet
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

_Builder = Callable[..., Any]


def _face_restorers() -> list[tuple[str, Callable[[list[str]], bool], _Builder]]:
    """(name, key test, builder) of each face-restorer architecture.

    Imported here, not at module level: the builders import torch, which listing models must not.
    """
    from modeldepot.load.loaders._codeformer import build_codeformer, looks_like_codeformer
    from modeldepot.load.loaders._gfpgan import build_gfpgan, looks_like_gfpgan

    return [("GFPGAN", looks_like_gfpgan, build_gfpgan), ("CodeFormer", looks_like_codeformer, build_codeformer)]


def build_image_to_image(sd: dict[str, Any], name: str, *, partial: bool = False) -> Any:
    """The upscaler or face restorer ``sd`` holds, picked by its keys (RRDBNet when no other fits)."""
    keys = list(sd)
    restorers = _face_restorers()
    for _, looks_like, build in restorers:
        if looks_like(keys):
            return build(sd, name, partial=partial)
    try:
        return build_rrdbnet(sd, name, partial=partial)
    except (ValueError, KeyError) as exc:
        supported = ", ".join(["ESRGAN/RRDBNet", *(arch for arch, _, _ in restorers)])
        raise ModelLoadError(
            f"{name}: unsupported image-to-image architecture (built in: {supported}): {exc}", path=name
        ) from exc


@ModelLoaderRegistry.register(
    base=BaseModelType.Any, type=ModelType.SpandrelImageToImage, format=ModelFormat.Checkpoint
)
class UpscalerLoader(PickleConversionMixin, ModelLoader):
    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        model = build_image_to_image(load_weights(path), str(path), partial=self.partial)
        # Upscalers and face restorers keep float32 on CPU; half precision only where the device runs it.
        if self.precision != "float32":
            model = model.to(self.torch_dtype)
        model.eval()
        model.requires_grad_(False)
        return model


__all__ = ["UpscalerLoader", "build_image_to_image"]
