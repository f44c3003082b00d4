"""LoRA / LyCORIS and textual-inversion models, returned as state dicts (``name -> tensor``).

Patching them into a model is the caller's business (``LoadedModel.model_on_device()`` yields the
RAM copy to restore from). Floating tensors are cast to the configured precision; ``alpha`` scalars
stay as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.errors import ModelNotFoundException
from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_weights
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import WEIGHT_SUFFIXES, BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

_Any = BaseModelType.Any
_LORA_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
_TI_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")


def _first_file(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    weights = sorted(p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES - {".gguf", ".onnx"})
    if len(weights) == 1:
        return weights[0]
    raise ModelNotFoundException(f"{folder}: none of {', '.join(names)} found", folder)


class _StateDictLoader(PickleConversionMixin, ModelLoader):
    _folder_files: tuple[str, ...] = ()

    def _weights_path(self, path: Path) -> Path:
        if not path.is_dir():
            return path
        found = _first_file(path, self._folder_files)
        assert self.config is not None
        return self._converted_path(self.config, found) if self._needs_conversion(self.config, found) else found

    def _keep_dtype(self, name: str) -> bool:
        return False

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        path = self._weights_path(path)
        sd = load_weights(path, dtype=self.torch_dtype, keep_dtype=self._keep_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: holds no tensors", path=str(path))
        return sd


@ModelLoaderRegistry.register(base=_Any, type=ModelType.LoRA, format=ModelFormat.LyCORIS)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.LoRA, format=ModelFormat.Diffusers)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.ControlLoRA, format=ModelFormat.LyCORIS)
class LoRALoader(_StateDictLoader):
    """kohya LoRA, LyCORIS (LoHa / LoKr / full diff) and PEFT/diffusers LoRA files or folders."""

    _folder_files = _LORA_FILES

    def _keep_dtype(self, name: str) -> bool:
        return name.endswith(".alpha")  # a scale factor: keep it exact


@ModelLoaderRegistry.register(base=_Any, type=ModelType.TextualInversion, format=ModelFormat.EmbeddingFile)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.TextualInversion, format=ModelFormat.EmbeddingFolder)
class TextualInversionLoader(_StateDictLoader):
    """Embeddings normalized to ``{"emb_params": [n_vectors, dim]}``, or ``{"clip_l", "clip_g"}`` for SDXL.

    A1111 ``.pt`` files (``string_to_param.*``) and diffusers ``learned_embeds`` (``{token: vector}``)
    are recognised; the token name of the latter is kept under ``"token"``-free key ``emb_params``.
    """

    _folder_files = _TI_FILES

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        sd = super()._load_model(path, variant, submodel_type)
        if "clip_l" in sd or "clip_g" in sd or "emb_params" in sd:
            return {k: v for k, v in sd.items() if k in ("clip_l", "clip_g", "emb_params")}
        a1111 = [k for k in sd if k.startswith("string_to_param.")]
        if a1111:
            return {"emb_params": sd[a1111[0]]}
        if len(sd) == 1:  # diffusers learned_embeds: {"<token>": vector}
            (t,) = sd.values()
            return {"emb_params": t if t.dim() == 2 else t.unsqueeze(0)}
        raise ModelLoadError(f"{path}: not a textual-inversion embedding (keys: {', '.join(sorted(sd)[:5])})")


__all__ = ["LoRALoader", "TextualInversionLoader"]
