"""Stable Diffusion managers: CompVis-style checkpoints and diffusers folders (document 001's
``compvis.py`` and ``diffusers.py``). The loaded model is a diffusers pipeline made of the cache's
parts; ``loaded["parts"]`` holds each part's cache entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldepot.errors import LoaderNotFoundError
from modeldepot.managers._pipeline import assemble_pipeline
from modeldepot.managers.base import BaseModelManager, ManagedModel
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.reference import ReferenceEntry


class _PipelineManager(BaseModelManager):
    def load_model(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        if record.type != ModelType.Main:
            raise LoaderNotFoundError(
                f"model {key!r}: its file was identified as {record.type.value}, not a main model "
                f"(see `modeldepot identify {record.path} --explain`)"
            )
        submodels = self.depot.load.submodels(record) or []
        pipeline, parts = assemble_pipeline(record, submodels, lambda sub: self.load_part(record, sub, device, dtype))
        return ManagedModel(
            key, self.service, pipeline, device, dtype, record, dict(parts), {"parts": parts, "pipeline": pipeline}
        )


class CompVisModelManager(_PipelineManager):
    """Single-file Stable Diffusion checkpoints (``stable_diffusion.json``: SD 1/2/XL, inpainting)."""

    service = "compvis"


class DiffusersModelManager(_PipelineManager):
    """Diffusers-format pipelines (``diffusers.json``: SD inpainting, SD 2 depth2img)."""

    service = "diffusers"


__all__ = ["CompVisModelManager", "DiffusersModelManager"]
