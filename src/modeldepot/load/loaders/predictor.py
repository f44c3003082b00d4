"""CLIP+MLP score predictors (``clip_predictor`` records): a :class:`PredictorMLP` sized from the file.

Released LAION predictors are pickles (``.pth``); like every pickle, they are scanned and converted
to safetensors once (the conversion cache) through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_weights
from modeldepot.load.loaders._strict import assign_exact
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

_FIRST = "layers.0.weight"


def _unwrapped(sd: dict[str, Any]) -> dict[str, Any]:
    """``sd`` without a prefix that encloses every key (``module.`` of a DataParallel save...)."""
    if _FIRST in sd:
        return sd
    prefix = next((k[: -len(_FIRST)] for k in sd if k.endswith("." + _FIRST)), None)
    if prefix and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


@ModelLoaderRegistry.register(base=BaseModelType.Any, type=ModelType.ClipPredictor, format=ModelFormat.Checkpoint)
class ClipPredictorLoader(PickleConversionMixin, ModelLoader):
    """A :class:`~modeldepot.train.predictor.PredictorMLP` whose input width is read from the file."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        from modeldepot.train.predictor.mlp import PredictorMLP

        sd = _unwrapped(load_weights(path))
        try:
            width = PredictorMLP.input_size_of(sd)
        except KeyError:
            raise ModelLoadError(
                f"{path}: not a CLIP+MLP predictor: no 2-D {_FIRST} (keys: {', '.join(sorted(sd)[:5]) or 'none'})",
                path=str(path),
            ) from None
        return assign_exact(
            lambda: PredictorMLP(width),
            sd,
            f"a CLIP+MLP predictor over {width}-wide embeddings",
            path,
            dtype=self.torch_dtype,
            partial=self.partial,
        )


__all__ = ["ClipPredictorLoader"]
