"""Single-file SDXL-refiner checkpoints (``sd_xl_refiner_1.0.safetensors``) into diffusers classes.

Same flow as :class:`SingleFileCheckpointLoader` (shipped config in ``configs/sdxl-refiner/``, each
submodel reads only its own tensors) with the refiner's differences: there is no first text encoder;
the OpenCLIP bigG encoder with projection sits at ``conditioner.embedders.0.model.`` and is
``text_encoder_2``; its tokenizer pads with ``!`` (OpenCLIP); the UNet takes 1280-wide context and
5 time ids (aesthetic score instead of the target size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError
from modeldepot.load.loaders._common import load_safetensors, prefixed
from modeldepot.load.loaders.single_file import SingleFileCheckpointLoader, ldm_text_encoder, write_clip_vocab
from modeldepot.load.registry import ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType
from modeldepot.taxonomy import SubModelType as S

REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."


@ModelLoaderRegistry.register(
    base=BaseModelType.StableDiffusionXLRefiner, type=ModelType.Main, format=ModelFormat.Checkpoint
)
class SDXLRefinerCheckpointLoader(SingleFileCheckpointLoader):
    def _text_encoder(self, path: Path, folder: Path, sub: S, class_name: str) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        if sub != S.TextEncoder2:
            raise InvalidSubmodelError(
                f"model {cfg.name!r} (sdxl-refiner) has no {sub.value}: its only text encoder is text_encoder_2",
                key=cfg.key,
                submodel=sub.value,
            )
        sd = load_safetensors(path, prefixed([REFINER_TEXT_PREFIX]))
        if REFINER_TEXT_PREFIX + "text_projection" not in sd:
            raise ModelLoadError(
                f"{path}: no refiner text encoder ({REFINER_TEXT_PREFIX}text_projection) in this checkpoint",
                key=cfg.key,
                path=str(path),
            )
        cls = getattr(transformers, class_name)
        return ldm_text_encoder(
            cls, folder, sub.value, sd, REFINER_TEXT_PREFIX, self.torch_dtype, path, partial=self.partial
        )

    def _tokenizer(self, folder: Path, sub: S) -> Any:
        from transformers import CLIPTokenizer

        local = folder / sub.value
        if (local / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(str(local), local_files_only=True)
        vocab_dir = self.convert_cache.get("clip-bpe-49408")
        if vocab_dir is None or not (vocab_dir / "merges.txt").is_file():
            vocab_dir = self.convert_cache.put("clip-bpe-49408", write_clip_vocab)
        return CLIPTokenizer.from_pretrained(str(vocab_dir), local_files_only=True, pad_token="!", model_max_length=77)


__all__ = ["REFINER_TEXT_PREFIX", "SDXLRefinerCheckpointLoader"]
