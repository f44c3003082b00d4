"""Main models in diffusers folder layout: one submodel at a time, by the class ``model_index.json`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.errors import ModelNotFoundException
from modeldepot.load._errors import InvalidSubmodelError, SubmodelRequiredError
from modeldepot.load.loaders._common import from_pretrained, read_json, resolve_class
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType


@ModelLoaderRegistry.register(base=BaseModelType.Any, type=ModelType.Main, format=ModelFormat.Diffusers)
class DiffusersPipelineLoader(ModelLoader):
    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        assert self.config is not None
        name = self.config.name
        if submodel_type is None:
            raise SubmodelRequiredError(f"model {name!r} is a pipeline: name the submodel to load", self.config.key)
        index_path = path / "model_index.json"
        if not index_path.is_file():
            raise ModelNotFoundException(f"model {name!r}: {index_path} is missing", index_path)
        index = read_json(index_path)
        entry = index.get(submodel_type.value)
        available = sorted(k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0] is not None)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] is not None):
            raise InvalidSubmodelError(
                f"model {name!r} has no submodel {submodel_type.value!r}; it has: {', '.join(available)}",
                key=self.config.key,
                submodel=submodel_type.value,
            )
        folder = path / submodel_type.value
        defs = getattr(self.config, "submodels", None) or {}
        if submodel_type in defs:
            # A normalized store may keep a shared component elsewhere; the record says where.
            folder = (path / defs[submodel_type].path_or_prefix).resolve()
        if not folder.is_dir():
            raise ModelNotFoundException(f"model {name!r}: submodel folder {folder} is missing", folder)
        cls = resolve_class(entry[0], entry[1], index_path)
        return from_pretrained(cls, folder, self.torch_dtype, variant, partial=self.partial)


__all__ = ["DiffusersPipelineLoader"]
