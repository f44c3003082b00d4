"""Single-file SD-1 / SD-2 / SDXL checkpoints (original LDM key layout) into diffusers classes.

No network: the diffusers configs of each family ship in ``modeldepot/load/configs/<base>/`` (or a
record's ``config_path`` names a diffusers-layout config folder). Each submodel reads only its own
tensors (by LDM key prefix), so asking for the VAE of a 7 GB SDXL checkpoint reads ~160 MB. The CLIP
tokenizer is rebuilt from the shipped CLIP BPE merges (``configs/clip-bpe``) into the conversion
cache once. Pickle ``.ckpt`` files are scanned, converted once to safetensors, then read from there.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError, SubmodelRequiredError
from modeldepot.load.loaders._common import PickleConversionMixin, load_safetensors, prefixed, read_json
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType
from modeldepot.taxonomy import SubModelType as S

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.",)
_TEXT_PREFIXES: dict[tuple[BaseModelType, S], tuple[str, ...]] = {
    (BaseModelType.StableDiffusion1, S.TextEncoder): ("cond_stage_model.transformer.",),
    (BaseModelType.StableDiffusion2, S.TextEncoder): ("cond_stage_model.model.",),
    (BaseModelType.StableDiffusionXL, S.TextEncoder): ("conditioner.embedders.0.transformer.",),
    (BaseModelType.StableDiffusionXL, S.TextEncoder2): ("conditioner.embedders.1.model.",),
}
#: tokenizer pad token per family: OpenCLIP-trained encoders pad with "!" (id 0), OpenAI CLIP with EOS.
_PAD_TOKENS = {
    (BaseModelType.StableDiffusion1, S.Tokenizer): "<|endoftext|>",
    (BaseModelType.StableDiffusion2, S.Tokenizer): "!",
    (BaseModelType.StableDiffusionXL, S.Tokenizer): "<|endoftext|>",
    (BaseModelType.StableDiffusionXL, S.Tokenizer2): "!",
}


def shipped_config_dir(base: BaseModelType) -> Path:
    """The shipped diffusers config folder of a family (``sd-1``, ``sd-2``, ``sdxl``)."""
    return Path(str(resources.files("modeldepot.load") / "configs" / base.value))


def _bytes_to_unicode() -> dict[int, str]:
    # The GPT-2/CLIP reversible byte -> printable character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_vocab(dest: Path) -> None:
    """Write HF-format ``vocab.json`` + ``merges.txt`` (49408 tokens) from the shipped CLIP BPE merges."""
    src = Path(str(resources.files("modeldepot.load") / "configs" / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"))
    lines = gzip.decompress(src.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


_SUPPORTED = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2, BaseModelType.StableDiffusionXL)


class SingleFileCheckpointLoader(PickleConversionMixin, ModelLoader):
    def _config_dir(self) -> Path:
        assert self.config is not None
        custom = getattr(self.config, "config_path", None)
        if custom:
            p = Path(custom)
            if p.is_dir() and (p / "model_index.json").is_file():
                return p
            if p.suffix in (".yaml", ".yml"):
                pass  # an original LDM yaml: ignored, the shipped diffusers configs describe the same nets
            else:
                raise ModelLoadError(f"config_path {p} is not a diffusers config folder (no model_index.json)")
        return shipped_config_dir(self.config.base)

    def _load_model(self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: S | None = None) -> Any:
        cfg = self.config
        assert cfg is not None
        if submodel_type is None:
            raise SubmodelRequiredError(f"model {cfg.name!r} is a pipeline: name the submodel to load", cfg.key)
        folder = self._config_dir()
        index = read_json(folder / "model_index.json")
        if not isinstance(index.get(submodel_type.value), list) or index[submodel_type.value][0] is None:
            parts = sorted(k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None)
            raise InvalidSubmodelError(
                f"model {cfg.name!r} ({cfg.base.value}) has no submodel {submodel_type.value!r};"
                f" it has: {', '.join(parts)}",
                key=cfg.key,
                submodel=submodel_type.value,
            )
        if submodel_type == S.UNet:
            return self._unet(path, folder)
        if submodel_type == S.VAE:
            return self._vae(path, folder)
        if submodel_type in (S.TextEncoder, S.TextEncoder2):
            return self._text_encoder(path, folder, submodel_type, index[submodel_type.value][1])
        if submodel_type in (S.Tokenizer, S.Tokenizer2):
            return self._tokenizer(folder, submodel_type)
        if submodel_type == S.Scheduler:
            return self._scheduler(folder)
        raise InvalidSubmodelError(f"cannot load {submodel_type.value!r} from a single-file checkpoint", key=cfg.key)

    def _unet(self, path: Path, folder: Path) -> Any:
        from diffusers import UNet2DConditionModel

        cfg = self.config
        assert cfg is not None
        sd = load_safetensors(path, prefixed([UNET_PREFIX]))
        if not sd:
            raise ModelLoadError(f"{path}: no UNet weights ({UNET_PREFIX}*) in this checkpoint", path=str(path))
        kwargs: dict[str, Any] = {}
        first = sd.get(UNET_PREFIX + "input_blocks.0.0.weight")
        if first is not None:
            kwargs["in_channels"] = int(first.shape[1])  # 9 for inpainting, 5 for depth
        upcast = getattr(cfg, "upcast_attention", False) or (
            cfg.base == BaseModelType.StableDiffusion2
            and getattr(cfg, "prediction_type", None) == SchedulerPredictionType.VPrediction
        )
        if upcast:
            kwargs["upcast_attention"] = True
        model = UNet2DConditionModel.from_single_file(
            sd, config=str(folder), subfolder="unet", local_files_only=True, torch_dtype=self.torch_dtype, **kwargs
        )
        return _ready(model)

    def _vae(self, path: Path, folder: Path) -> Any:
        from diffusers import AutoencoderKL

        sd = load_safetensors(path, prefixed(VAE_PREFIXES))
        if not sd:
            raise ModelLoadError(f"{path}: no VAE weights (first_stage_model.*) in this checkpoint", path=str(path))
        model = AutoencoderKL.from_single_file(
            sd, config=str(folder), subfolder="vae", local_files_only=True, torch_dtype=self.torch_dtype
        )
        return _ready(model)

    def _text_encoder(self, path: Path, folder: Path, sub: S, class_name: str) -> Any:
        import transformers
        from diffusers.loaders import single_file_utils

        # Internal to diffusers (no typed public API converts LDM/OpenCLIP text encoders).
        create_diffusers_clip_model_from_ldm: Any = single_file_utils.create_diffusers_clip_model_from_ldm

        cfg = self.config
        assert cfg is not None
        prefixes = _TEXT_PREFIXES.get((cfg.base, sub))
        if prefixes is None:
            raise InvalidSubmodelError(f"no {sub.value} in a {cfg.base.value} checkpoint", key=cfg.key)
        sd = load_safetensors(path, prefixed(prefixes))
        if not sd:
            raise ModelLoadError(f"{path}: no {sub.value} weights ({prefixes[0]}*) in this checkpoint", path=str(path))
        cls = getattr(transformers, class_name)
        model = create_diffusers_clip_model_from_ldm(
            cls,
            sd,
            subfolder=sub.value,
            config=str(folder),
            torch_dtype=self.torch_dtype,
            local_files_only=True,
        )
        return _ready(model)

    def _tokenizer(self, folder: Path, sub: S) -> Any:
        from transformers import CLIPTokenizer

        cfg = self.config
        assert cfg is not None
        local = folder / sub.value
        if (local / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(str(local), local_files_only=True)
        vocab_dir = self.convert_cache.get("clip-bpe-49408")
        if vocab_dir is None or not (vocab_dir / "merges.txt").is_file():
            vocab_dir = self.convert_cache.put("clip-bpe-49408", write_clip_vocab)
        return CLIPTokenizer.from_pretrained(
            str(vocab_dir),
            local_files_only=True,
            pad_token=_PAD_TOKENS.get((cfg.base, sub), "<|endoftext|>"),
            model_max_length=77,
        )

    def _scheduler(self, folder: Path) -> Any:
        import diffusers

        cfg = self.config
        assert cfg is not None
        sched_cfg = read_json(folder / "scheduler" / "scheduler_config.json")
        cls = getattr(diffusers, str(sched_cfg.get("_class_name", "")), None)
        if cls is None:
            raise ModelLoadError(f"{folder}: unknown scheduler class {sched_cfg.get('_class_name')!r}")
        kwargs: dict[str, Any] = {}
        pred = getattr(cfg, "prediction_type", None)
        if pred is not None:
            kwargs["prediction_type"] = pred.value
        return cls.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True, **kwargs)


for _base in _SUPPORTED:
    ModelLoaderRegistry.register(base=_base, type=ModelType.Main, format=ModelFormat.Checkpoint)(
        SingleFileCheckpointLoader
    )


def _ready(model: Any) -> Any:
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = ["SingleFileCheckpointLoader", "shipped_config_dir", "write_clip_vocab"]
