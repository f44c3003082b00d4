"""Single-file SD-3 (Stability AI MMDiT layout) and FLUX.1 (Black Forest Labs layout) checkpoints.

The transformer is converted with diffusers' own single-file converters and assigned exactly; its
architecture comes from the tensors (width, depth, heads from the q/k-norm or 64-wide heads,
context and pooled widths, guidance embedding, dual-attention blocks), so distilled, pruned and tiny
checkpoints build as well as the released ones. The converters pop every tensor they use, so what
is left in their input is exactly what the model would not take. All-in-one files also carry the
VAE (``first_stage_model.`` / ``vae.``) and text encoders (``text_encoders.{clip_l,clip_g,t5xxl}.
transformer.``); those submodels load from them too. Tokenizers and schedulers are not in these
files: asking for one names the diffusers repo to install instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.load._errors import InvalidSubmodelError, ModelLoadError
from modeldepot.load.loaders._common import PickleConversionMixin, load_safetensors
from modeldepot.load.loaders._strict import assign_exact
from modeldepot.load.loaders.single_file import ldm_vae, shipped_config_dir
from modeldepot.load.loaders.single_file_encoders import (
    build_from_state_dict,
    clip_text_config,
    find_wrapper,
    header_shapes,
    t5_encoder_config,
)
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType
from modeldepot.taxonomy import SubModelType as S

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "")
_VAE_PREFIXES = ("first_stage_model.", "vae.")
#: The latent scale and shift of the 16-channel autoencoders (config values no tensor shows).
_VAE_FACTORS = {
    BaseModelType.Flux: {"scaling_factor": 0.3611, "shift_factor": 0.1159},
    BaseModelType.StableDiffusion3: {"scaling_factor": 1.5305, "shift_factor": 0.0609},
}
#: (submodel, prefix, model class) of the text encoders an all-in-one file may carry.
_ENCODERS = {
    BaseModelType.StableDiffusion3: (
        (S.TextEncoder, "text_encoders.clip_l.transformer.", "CLIPTextModelWithProjection"),
        (S.TextEncoder2, "text_encoders.clip_g.transformer.", "CLIPTextModelWithProjection"),
        (S.TextEncoder3, "text_encoders.t5xxl.transformer.", "T5EncoderModel"),
    ),
    BaseModelType.Flux: (
        (S.TextEncoder, "text_encoders.clip_l.transformer.", "CLIPTextModel"),
        (S.TextEncoder2, "text_encoders.t5xxl.transformer.", "T5EncoderModel"),
    ),
}
_MARKER = {
    BaseModelType.StableDiffusion3: "joint_blocks.0.context_block.attn.qkv.weight",
    BaseModelType.Flux: "double_blocks.0.img_attn.norm.key_norm.scale",
}
_REPO = {
    BaseModelType.StableDiffusion3: "stabilityai/stable-diffusion-3-medium-diffusers",
    BaseModelType.Flux: "black-forest-labs/FLUX.1-dev",
}


def _count(sd: dict[str, Any], stem: str) -> int:
    return len({k[len(stem) :].split(".", 1)[0] for k in sd if k.startswith(stem)})


def _need(sd: dict[str, Any], key: str, path: Path) -> tuple[int, ...]:
    t = sd.get(key)
    if t is None:
        raise ModelLoadError(f"{path}: not a complete DiT checkpoint (no tensor {key!r})", path=str(path))
    return tuple(int(d) for d in t.shape)


def flux_config(sd: dict[str, Any], path: Path) -> dict[str, Any]:
    """``FluxTransformer2DModel`` config of BFL-layout tensors (no prefix)."""
    hidden, in_ch = _need(sd, "img_in.weight", path)
    head = _need(sd, "double_blocks.0.img_attn.norm.query_norm.scale", path)[0]
    side = head * 7 // 16 // 2 * 2  # the released (16, 56, 56) rotary split of 128-wide heads
    return {
        "patch_size": 1,
        "in_channels": in_ch,
        "out_channels": _need(sd, "final_layer.linear.weight", path)[0],
        "num_layers": _count(sd, "double_blocks."),
        "num_single_layers": _count(sd, "single_blocks."),
        "attention_head_dim": head,
        "num_attention_heads": hidden // head,
        "joint_attention_dim": _need(sd, "txt_in.weight", path)[1],
        "pooled_projection_dim": _need(sd, "vector_in.in_layer.weight", path)[1],
        "guidance_embeds": "guidance_in.in_layer.weight" in sd,
        "axes_dims_rope": (head - 2 * side, side, side),
    }


def sd3_config(sd: dict[str, Any], path: Path) -> dict[str, Any]:
    """``SD3Transformer2DModel`` config of Stability AI MMDiT tensors (no prefix); heads are 64 wide."""
    hidden, in_ch, patch, _ = _need(sd, "x_embedder.proj.weight", path)
    positions = _need(sd, "pos_embed", path)[1]
    layers = _count(sd, "joint_blocks.")
    return {
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": in_ch,
        "out_channels": _need(sd, "final_layer.linear.weight", path)[0] // (patch * patch),
        "num_layers": layers,
        "attention_head_dim": 64,
        "num_attention_heads": hidden // 64,
        "joint_attention_dim": _need(sd, "context_embedder.weight", path)[1],
        "caption_projection_dim": _need(sd, "context_embedder.weight", path)[0],
        "pooled_projection_dim": _need(sd, "y_embedder.mlp.0.weight", path)[1],
        "pos_embed_max_size": round(positions**0.5),
        "dual_attention_layers": tuple(i for i in range(layers) if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in sd),
        "qk_norm": "rms_norm" if any(".attn.ln_q." in k for k in sd) else None,
    }


def _convert_flux(sd: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    import torch
    from diffusers.loaders import single_file_utils

    convert: Any = single_file_utils.convert_flux_transformer_checkpoint_to_diffusers  # untyped
    hidden = int(config["attention_head_dim"]) * int(config["num_attention_heads"])
    work = dict(sd)
    singles: dict[int, tuple[Any, Any]] = {}
    if hidden != 3072:
        # diffusers splits each single block's fused linear1 at the released width (3072); give it
        # placeholders of that size (no memory) and split the real tensors at this file's width.
        for i in range(int(config["num_single_layers"])):
            w, b = work[f"single_blocks.{i}.linear1.weight"], work[f"single_blocks.{i}.linear1.bias"]
            singles[i] = (w, b)
            work[f"single_blocks.{i}.linear1.weight"] = torch.zeros((), dtype=w.dtype).expand(21504, w.shape[1])
            work[f"single_blocks.{i}.linear1.bias"] = torch.zeros((), dtype=b.dtype).expand(21504)
    converted: dict[str, Any] = convert(work)
    for i, (w, b) in singles.items():
        sizes = [hidden, hidden, hidden, int(w.shape[0]) - 3 * hidden]
        p = f"single_transformer_blocks.{i}."
        for kind, tensor in (("weight", w), ("bias", b)):
            q, k, v, mlp = torch.split(tensor, sizes, dim=0)
            converted |= {
                f"{p}attn.to_q.{kind}": q,
                f"{p}attn.to_k.{kind}": k,
                f"{p}attn.to_v.{kind}": v,
                f"{p}proj_mlp.{kind}": mlp,
            }
    return converted, list(work)


def _convert_sd3(sd: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from diffusers.loaders import single_file_utils

    convert: Any = single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers  # untyped
    work = dict(sd)
    converted: dict[str, Any] = convert(work)
    return converted, list(work)


class DiTCheckpointLoader(PickleConversionMixin, ModelLoader):
    """SD-3 / FLUX.1 single-file checkpoints: ``transformer`` (the default), ``vae`` and text encoders."""

    def _load_model(self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: S | None = None) -> Any:
        cfg = self.config
        assert cfg is not None
        shapes = header_shapes(path)
        parts = self._parts(shapes)
        sub = submodel_type or S.Transformer
        if sub not in parts:
            extra = ""
            if sub in (S.Tokenizer, S.Tokenizer2, S.Tokenizer3, S.Scheduler):
                extra = f"; install the diffusers repo ({_REPO[cfg.base]}) for its {sub.value}"
            raise InvalidSubmodelError(
                f"model {cfg.name!r} ({cfg.base.value} single-file checkpoint) has no submodel {sub.value!r};"
                f" it has: {', '.join(s.value for s in parts)}{extra}",
                key=cfg.key,
                submodel=sub.value,
            )
        prefix = parts[sub]
        if sub == S.Transformer:
            return self._transformer(path, prefix)
        if sub == S.VAE:
            sd = load_safetensors(path, lambda n: n.startswith(prefix))
            folder = shipped_config_dir(BaseModelType.StableDiffusion1)
            return ldm_vae(sd, folder, path, self.torch_dtype, partial=self.partial, overrides=_VAE_FACTORS[cfg.base])
        return self._encoder(path, shapes, sub, prefix)

    def _parts(self, shapes: dict[str, tuple[int, ...]]) -> dict[S, str]:
        """Submodel -> key prefix of the submodels this file holds."""
        cfg = self.config
        assert cfg is not None
        parts: dict[S, str] = {}
        p = find_wrapper(shapes, _MARKER[cfg.base], _PREFIXES)
        if p is not None:
            parts[S.Transformer] = p
        vae = find_wrapper(shapes, "decoder.conv_in.weight", _VAE_PREFIXES)
        if vae is not None:
            parts[S.VAE] = vae
        for sub, prefix, _cls in _ENCODERS[cfg.base]:
            if any(k.startswith(prefix) for k in shapes):
                parts[sub] = prefix
        return parts

    def _transformer(self, path: Path, p: str) -> Any:
        import diffusers as _diffusers

        diffusers: Any = _diffusers  # untyped classes
        cfg = self.config
        assert cfg is not None
        # A bare file's other parts (vae., text_encoders.) are not the transformer's.
        others = (*_VAE_PREFIXES, "text_encoders.")
        sd = load_safetensors(
            path, lambda n: n.startswith(p) and not (p == "" and n.startswith(others)), lambda n: n[len(p) :]
        )
        if cfg.base == BaseModelType.Flux:
            config, cls, convert = flux_config(sd, path), diffusers.FluxTransformer2DModel, _convert_flux
        else:
            config, cls, convert = sd3_config(sd, path), diffusers.SD3Transformer2DModel, _convert_sd3
        try:
            converted, leftover = convert(sd, config)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"{path}: cannot convert the {cfg.base.value} transformer: {exc!r}", key=cfg.key, path=str(path)
            ) from exc
        return assign_exact(
            lambda: cls(**config),
            converted,
            cls.__name__,
            path,
            dtype=self.torch_dtype,
            partial=self.partial,
            unexpected_sources=[p + k for k in leftover],
        )

    def _encoder(self, path: Path, shapes: dict[str, tuple[int, ...]], sub: S, p: str) -> Any:
        import transformers

        cfg = self.config
        assert cfg is not None
        cls_name = next(c for s, _p, c in _ENCODERS[cfg.base] if s == sub)
        # every tensor under the prefix: build_from_state_dict reports any the encoder does not take
        sd = load_safetensors(path, lambda n: n.startswith(p), lambda n: n[len(p) :])
        if cls_name == "T5EncoderModel":
            config: Any = transformers.T5Config(**t5_encoder_config(shapes, p, path))
        else:
            conf = clip_text_config(shapes, p, path)
            conf.pop("_family")
            if p + "text_projection.weight" not in shapes:
                cls_name = "CLIPTextModel"
            conf["architectures"] = [cls_name]
            config = transformers.CLIPTextConfig(**conf)
        cls = getattr(transformers, cls_name)
        return build_from_state_dict(cls, config, sd, self.torch_dtype, path, partial=self.partial)


for _base in (BaseModelType.StableDiffusion3, BaseModelType.Flux):
    ModelLoaderRegistry.register(base=_base, type=ModelType.Main, format=ModelFormat.Checkpoint)(DiTCheckpointLoader)


__all__ = ["DiTCheckpointLoader", "flux_config", "sd3_config"]
