"""Single-file SD-1 / SD-2 / SDXL checkpoints (original LDM key layout) into diffusers classes.

No network: the diffusers configs of each family ship in ``modeldepot/load/configs/<base>/`` (or a
record's ``config_path`` names a diffusers-layout config folder). Each submodel reads only its own
tensors (by LDM key prefix), so asking for the VAE of a 7 GB SDXL checkpoint reads ~160 MB. The CLIP
tokenizer is rebuilt from the shipped CLIP BPE merges (``configs/clip-bpe``) into the conversion
cache once. Pickle ``.ckpt`` files are scanned, converted once to safetensors, then read from there.
A record's path may also be a split checkpoint folder (one safetensors file per component plus
``split.json``, :mod:`modeldepot.storage._split`): each submodel then reads its own component file.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError, SubmodelRequiredError
from modeldepot.load.loaders._common import PickleConversionMixin, load_safetensors, prefixed, read_json
from modeldepot.load.loaders._ldm_config import (
    last_openclip_block,
    openai_clip_text_config,
    openclip_text_config,
    unet_config_from_ldm,
)
from modeldepot.load.loaders._strict import AccessTracker, assign_exact, unused_sources
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.storage._split import (
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_TEXT_2_PREFIX,
    SDXL_TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType
from modeldepot.taxonomy import SubModelType as S

VAE_PREFIXES = (VAE_PREFIX,)
_TEXT_PREFIXES: dict[tuple[BaseModelType, S], tuple[str, ...]] = {
    (BaseModelType.StableDiffusion1, S.TextEncoder): (SD1_TEXT_PREFIX,),
    (BaseModelType.StableDiffusion2, S.TextEncoder): (SD2_TEXT_PREFIX,),
    (BaseModelType.StableDiffusionXL, S.TextEncoder): (SDXL_TEXT_PREFIX,),
    (BaseModelType.StableDiffusionXL, S.TextEncoder2): (SDXL_TEXT_2_PREFIX,),
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


#: Tensors real checkpoints carry that no diffusers/transformers module wants: CLIP's old persistent
#: position ids, OpenCLIP's logit scale and causal mask, training leftovers of standalone VAE files.
_BENIGN_SUFFIXES = ("position_ids", "logit_scale", "attn_mask")
_BENIGN_PREFIXES = ("loss.", "model_ema.")


def _benign(key: str) -> bool:
    return key.endswith(_BENIGN_SUFFIXES) or key.startswith(_BENIGN_PREFIXES)


def vae_config_from_shapes(config: dict[str, Any], sd: dict[str, Any]) -> dict[str, Any]:
    """The family's VAE config with the widths, depth and latent channels the file's LDM tensors
    show (identical for real files; exact for fine-tunes and tiny test VAEs)."""
    p = next((pre for pre in (*VAE_PREFIXES, "vae.", "") if pre + "encoder.conv_in.weight" in sd), None)
    if p is None:
        return config
    down_stem, block_stem = p + "encoder.down.", p + "encoder.down.0.block."
    down = sorted({int(k[len(down_stem) :].split(".")[0]) for k in sd if k.startswith(down_stem)})
    widths = [sd.get(f"{down_stem}{i}.block.0.conv1.weight") for i in down]
    if not down or any(w is None for w in widths):
        return config
    blocks = {k[len(block_stem) :].split(".")[0] for k in sd if k.startswith(block_stem)}
    out = dict(config)
    n = len(down)
    out.update(
        block_out_channels=[int(w.shape[0]) for w in widths if w is not None],
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        layers_per_block=len(blocks),
        in_channels=int(sd[p + "encoder.conv_in.weight"].shape[1]),
    )
    if p + "decoder.conv_in.weight" in sd:
        out["latent_channels"] = int(sd[p + "decoder.conv_in.weight"].shape[1])
    if p + "decoder.conv_out.weight" in sd:
        out["out_channels"] = int(sd[p + "decoder.conv_out.weight"].shape[0])
    out["use_quant_conv"] = p + "quant_conv.weight" in sd
    out["use_post_quant_conv"] = p + "post_quant_conv.weight" in sd
    return out


def ldm_vae(
    sd: dict[str, Any],
    folder: Path,
    path: Path,
    dtype: Any,
    *,
    partial: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """An ``AutoencoderKL`` from LDM-layout VAE tensors (``first_stage_model.`` / ``vae.`` prefix or none),
    exactly; ``overrides`` sets config values no shape shows (a family's latent scale and shift)."""
    import diffusers
    from diffusers.loaders import single_file_utils

    # Untyped in diffusers; internal converters (no public API converts LDM key layouts).
    AutoencoderKL: Any = diffusers.AutoencoderKL  # noqa: N806
    convert_ldm_vae_checkpoint: Any = single_file_utils.convert_ldm_vae_checkpoint

    base = dict(AutoencoderKL.load_config(str(folder), subfolder="vae", local_files_only=True))
    sd = {k: v for k, v in sd.items() if not _benign(k)}
    config = vae_config_from_shapes(base, sd) | (overrides or {})
    converted = convert_ldm_vae_checkpoint(sd, config)
    return assign_exact(
        lambda: AutoencoderKL.from_config(config),
        converted,
        "AutoencoderKL",
        path,
        dtype=dtype,
        partial=partial,
        unexpected_sources=unused_sources(sd, converted),
    )


def ldm_text_encoder(
    cls: Any, folder: Path, subfolder: str, sd: dict[str, Any], prefix: str, dtype: Any, path: Path, *, partial: bool
) -> Any:
    """A transformers CLIP text model from OpenAI-CLIP (``...transformer.``) or OpenCLIP (``...model.``)
    tensors of an LDM checkpoint, exactly (diffusers' converters, then a strict assignment). Widths,
    depth, vocabulary and projection come from the tensors (the folder config gives the rest)."""
    from accelerate import init_empty_weights
    from diffusers.loaders import single_file_utils

    sfu: Any = single_file_utils  # untyped internal converters

    family = cls.config_class.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True).to_dict()
    openclip = prefix.endswith(".model.")
    # SD-2 conditions on OpenCLIP-H's penultimate layer: its encoder has one block less than the file.
    penultimate = prefix == SD2_TEXT_PREFIX
    ignored: set[str] = set(last_openclip_block(sd, prefix)) if penultimate else set()
    sd = {k: v for k, v in sd.items() if k not in ignored}
    read = openclip_text_config if openclip else openai_clip_text_config
    shown = read(family, sd, prefix)
    shown.pop("model_type", None)
    config = cls.config_class(**shown)
    with init_empty_weights():
        probe = cls(config)
    if openclip:
        tracked = AccessTracker(sd)
        converted = sfu.convert_open_clip_checkpoint(probe, tracked, prefix=prefix)
        accessed: set[str] = tracked.accessed
    else:
        converted = sfu.convert_ldm_clip_checkpoint(sd, prefix)
        accessed = set()
    if not hasattr(probe, "text_model"):  # transformers >= 5.6 flattens CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    converted = {k: v for k, v in converted.items() if not _benign(k)}
    unused = [k for k in unused_sources(sd, converted, accessed) if not _benign(k)]
    return assign_exact(
        lambda: cls(config), converted, cls.__name__, path, dtype=dtype, partial=partial, unexpected_sources=unused
    )


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
        import diffusers
        from diffusers.loaders import single_file_utils

        UNet2DConditionModel: Any = diffusers.UNet2DConditionModel  # noqa: N806 - untyped in diffusers
        convert_ldm_unet_checkpoint: Any = single_file_utils.convert_ldm_unet_checkpoint

        cfg = self.config
        assert cfg is not None
        # Cast while reading (one pass over the bytes): diffusers' converters only rename and reshape.
        sd = load_safetensors(path, prefixed([UNET_PREFIX]), dtype=self.torch_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: no UNet weights ({UNET_PREFIX}*) in this checkpoint", path=str(path))
        family = dict(UNet2DConditionModel.load_config(str(folder), subfolder="unet", local_files_only=True))
        # in_channels 9 for inpainting, 5 for depth; widths and depths of pruned or tiny UNets
        config = unet_config_from_ldm(family, sd, UNET_PREFIX)
        upcast = getattr(cfg, "upcast_attention", False) or (
            cfg.base == BaseModelType.StableDiffusion2
            and getattr(cfg, "prediction_type", None) == SchedulerPredictionType.VPrediction
        )
        if upcast:
            config["upcast_attention"] = True
        converted = convert_ldm_unet_checkpoint(sd, config)
        return assign_exact(
            lambda: UNet2DConditionModel.from_config(config),
            converted,
            "UNet2DConditionModel",
            path,
            dtype=self.torch_dtype,
            partial=self.partial,
            unexpected_sources=unused_sources(sd, converted),
        )

    def _vae(self, path: Path, folder: Path) -> Any:
        sd = load_safetensors(path, prefixed(VAE_PREFIXES), dtype=self.torch_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: no VAE weights (first_stage_model.*) in this checkpoint", path=str(path))
        return ldm_vae(sd, folder, path, self.torch_dtype, partial=self.partial)

    def _text_encoder(self, path: Path, folder: Path, sub: S, class_name: str) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        prefixes = _TEXT_PREFIXES.get((cfg.base, sub))
        if prefixes is None:
            raise InvalidSubmodelError(f"no {sub.value} in a {cfg.base.value} checkpoint", key=cfg.key)
        sd = load_safetensors(path, prefixed(prefixes), dtype=self.torch_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: no {sub.value} weights ({prefixes[0]}*) in this checkpoint", path=str(path))
        cls = getattr(transformers, class_name)
        return ldm_text_encoder(cls, folder, sub.value, sd, prefixes[0], self.torch_dtype, path, partial=self.partial)

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


__all__ = [
    "SingleFileCheckpointLoader",
    "ldm_text_encoder",
    "ldm_vae",
    "shipped_config_dir",
    "vae_config_from_shapes",
    "write_clip_vocab",
]
