"""Standalone VAE, ControlNet, T2I-Adapter and IP-Adapter models."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from modeldepot.errors import ModelNotFoundException
from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._common import (
    PickleConversionMixin,
    from_pretrained,
    load_weights,
    read_json,
    resolve_class,
)
from modeldepot.load.loaders._ldm_config import unet_config_from_ldm
from modeldepot.load.loaders._strict import assign_exact, unused_sources
from modeldepot.load.loaders.single_file import ldm_vae, shipped_config_dir
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

_Any = BaseModelType.Any


def _diffusers_folder(path: Path, default_class: str) -> tuple[Any, Path]:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundException(f"{cfg_path} is missing", cfg_path)
    name = str(read_json(cfg_path).get("_class_name") or default_class)
    return resolve_class("diffusers", name, cfg_path), path


def _config_family(base: BaseModelType) -> BaseModelType:
    # VAEs and ControlNets of SD-2 share SD-1's architecture; "any" defaults to SD-1.
    return (
        BaseModelType.StableDiffusionXL if base == BaseModelType.StableDiffusionXL else BaseModelType.StableDiffusion1
    )


@ModelLoaderRegistry.register(base=_Any, type=ModelType.VAE, format=ModelFormat.Diffusers)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.ControlNet, format=ModelFormat.Diffusers)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.T2IAdapter, format=ModelFormat.Diffusers)
class DiffusersComponentLoader(ModelLoader):
    """A folder with ``config.json`` + weights whose ``_class_name`` is a diffusers model class."""

    _defaults = {
        ModelType.VAE: "AutoencoderKL",
        ModelType.ControlNet: "ControlNetModel",
        ModelType.T2IAdapter: "T2IAdapter",
    }

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        assert self.config is not None
        cls, folder = _diffusers_folder(path, self._defaults[self.config.type])
        return from_pretrained(cls, folder, self.torch_dtype, variant, partial=self.partial)


@ModelLoaderRegistry.register(base=_Any, type=ModelType.VAE, format=ModelFormat.Checkpoint)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.ControlNet, format=ModelFormat.Checkpoint)
class CheckpointComponentLoader(PickleConversionMixin, ModelLoader):
    """A single-file VAE (LDM key layout; widths and depth read from its tensors) or ControlNet
    (LDM or diffusers key layout) with the shipped family config."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        import diffusers as _diffusers

        diffusers: Any = _diffusers  # untyped classmethods (from_config)
        cfg = self.config
        assert cfg is not None
        if cfg.type == ModelType.ControlNet and cfg.base in (BaseModelType.Flux, BaseModelType.StableDiffusion3):
            raise ModelLoadError(
                f"loading a single-file {cfg.base.value} ControlNet is not supported yet;"
                " install the diffusers repo instead",
                key=cfg.key,
                path=str(path),
            )
        custom = getattr(cfg, "config_path", None)
        folder = Path(custom) if custom and Path(custom).is_dir() else shipped_config_dir(_config_family(cfg.base))
        sub = "vae" if cfg.type == ModelType.VAE else "controlnet"
        if not (folder / sub / "config.json").is_file():
            raise ModelLoadError(f"no shipped {sub} config for base {cfg.base.value}", key=cfg.key, path=str(path))
        # Cast while reading (one pass over the bytes): the converters below only rename and reshape.
        sd = load_weights(path, dtype=self.torch_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: no tensors", key=cfg.key, path=str(path))
        if cfg.type == ModelType.VAE:
            if any(k.startswith(("encoder.down.", "first_stage_model.", "vae.encoder.down.")) for k in sd):
                return ldm_vae(sd, folder, path, self.torch_dtype, partial=self.partial)
            # already diffusers-named: a state dict for the (family) AutoencoderKL as it is
            config = dict(diffusers.AutoencoderKL.load_config(str(folder), subfolder="vae", local_files_only=True))
            return assign_exact(
                lambda: diffusers.AutoencoderKL.from_config(config),
                sd,
                "AutoencoderKL",
                path,
                dtype=self.torch_dtype,
                partial=self.partial,
            )
        from diffusers.loaders import single_file_utils

        # diffusers' own converter (LDM ``control_model.*`` -> diffusers names; diffusers names pass as
        # they are), then a strict assignment: from_single_file would leave missing weights on meta.
        convert: Any = single_file_utils.convert_controlnet_checkpoint
        family = dict(diffusers.ControlNetModel.load_config(str(folder), subfolder=sub, local_files_only=True))
        config = controlnet_config_from_tensors(family, sd)
        converted = convert(sd, config)
        # diffusers' converter has no rule for SDXL's text-time embedding in the LDM layout
        for pre in ("control_model.", ""):
            for ldm, name in (
                ("label_emb.0.0.", "add_embedding.linear_1."),
                ("label_emb.0.2.", "add_embedding.linear_2."),
            ):
                for kind in ("weight", "bias"):
                    if pre + ldm + kind in sd and name + kind not in converted:
                        converted[name + kind] = sd[pre + ldm + kind]
        return assign_exact(
            lambda: diffusers.ControlNetModel.from_config(config),
            converted,
            "ControlNetModel",
            path,
            dtype=self.torch_dtype,
            partial=self.partial,
            unexpected_sources=unused_sources(sd, converted),
        )


def controlnet_config_from_tensors(family: dict[str, Any], sd: dict[str, Any]) -> dict[str, Any]:
    """The family ControlNet config with the architecture the file's tensors show, in either layout
    (LDM ``control_model.*`` / bare ``input_blocks``, or diffusers names)."""
    if any(k.startswith("control_model.") for k in sd):
        return unet_config_from_ldm(family, sd, "control_model.")
    if "input_blocks.0.0.weight" in sd:
        return unet_config_from_ldm(family, sd)
    return diffusers_controlnet_config(family, sd)


def diffusers_controlnet_config(family: dict[str, Any], sd: dict[str, Any]) -> dict[str, Any]:
    """The same for diffusers names (``down_blocks.<i>.resnets/attentions``, ``controlnet_cond_embedding``)."""
    out = dict(family)
    conv_in = sd.get("conv_in.weight")
    levels = sorted({int(k.split(".")[1]) for k in sd if k.startswith("down_blocks.")})
    if conv_in is None or not levels:
        return out
    widths = []
    depths = []
    for i in levels:
        conv = sd.get(f"down_blocks.{i}.resnets.0.conv2.weight")
        if conv is None:
            return out
        widths.append(int(conv.shape[0]))
        stem = f"down_blocks.{i}.attentions.0.transformer_blocks."
        depths.append(len({k[len(stem) :].split(".")[0] for k in sd if k.startswith(stem)}))
    resnets = {k.split(".")[3] for k in sd if k.startswith("down_blocks.0.resnets.")}
    out.update(
        in_channels=int(conv_in.shape[1]),
        layers_per_block=len(resnets),
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        transformer_layers_per_block=[max(d, 1) for d in depths],
    )
    if widths != list(family.get("block_out_channels") or []):
        heads = family.get("attention_head_dim")
        ok = isinstance(heads, int) and all(w % heads == 0 for w in widths)
        out["attention_head_dim"] = heads if ok else [max(1, w // 64) for w in widths]
    out["block_out_channels"] = widths
    to_k = next((k for k in sd if k.startswith("down_blocks.") and k.endswith(".attn2.to_k.weight")), None)
    if to_k is not None:
        out["cross_attention_dim"] = int(sd[to_k].shape[1])
    proj_in = next((k for k in sd if k.startswith("down_blocks.") and k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        out["use_linear_projection"] = sd[proj_in].dim() == 2
    if "add_embedding.linear_1.weight" in sd:
        out["projection_class_embeddings_input_dim"] = int(sd["add_embedding.linear_1.weight"].shape[1])
    hint = sd.get("controlnet_cond_embedding.conv_in.weight")
    if hint is not None:
        blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
        channels = [int(hint.shape[0])]
        channels += [int(sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]) for i in blocks[1::2]]
        out.update(conditioning_channels=int(hint.shape[1]), conditioning_embedding_out_channels=channels)
    return out


#: Every released full T2I-Adapter (SD-1/2 and SDXL) has four channel stages; TencentARC key names
#: number blocks across stages, so the count cannot be read from them.
_T2I_GROUPS = 4


def _tencent_to_diffusers_t2i(sd: dict[str, Any], path: Path) -> dict[str, Any]:
    """TencentARC key names (``body.<k>.block1``, ``k`` = stage * blocks + block) -> diffusers'
    ``adapter.body.<stage>.resnets.<block>.block1``; other keys are kept (and reported if unknown)."""
    ids = {int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.split(".")[1].isdigit()}
    if not ids or len(ids) % _T2I_GROUPS:
        raise ModelLoadError(
            f"{path}: {len(ids)} T2I-Adapter body blocks is not {_T2I_GROUPS} equal stages (not a full adapter)",
            path=str(path),
        )
    per = len(ids) // _T2I_GROUPS
    out: dict[str, Any] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body" and parts[1].isdigit():
            stage, block = divmod(int(parts[1]), per)
            rest = ".".join(parts[2:])
            if parts[2] == "in_conv" and block == 0:
                out[f"adapter.body.{stage}.{rest}"] = v
            else:
                out[f"adapter.body.{stage}.resnets.{block}.{rest}"] = v
        else:
            out[f"adapter.{k}"] = v
    return out


def t2i_adapter_from_state_dict(
    sd: dict[str, Any], base: BaseModelType, path: Path, dtype: Any, *, partial: bool = False
) -> Any:
    """A diffusers ``T2IAdapter`` (full adapter) whose config is read from the tensors, loaded exactly."""
    import diffusers as _diffusers

    diffusers: Any = _diffusers  # untyped constructor

    if not any(k.startswith("adapter.") for k in sd):
        sd = _tencent_to_diffusers_t2i(sd, path)
    conv_in = sd.get("adapter.conv_in.weight")
    if conv_in is None:
        raise ModelLoadError(f"{path}: not a T2I-Adapter (no conv_in.weight)", path=str(path))
    stages = len({k.split(".")[2] for k in sd if k.startswith("adapter.body.")})
    channels: list[int] = []
    for i in range(stages):
        w = sd.get(f"adapter.body.{i}.resnets.0.block1.weight")
        if w is None:
            raise ModelLoadError(f"{path}: T2I-Adapter stage {i} is missing (no block1 weight)", path=str(path))
        channels.append(int(w.shape[0]))
    blocks = len({k.split(".")[4] for k in sd if k.startswith("adapter.body.0.resnets.")})
    xl = base == BaseModelType.StableDiffusionXL
    factor = 16 if xl else 8
    hint, rest = divmod(int(conv_in.shape[1]), factor * factor)
    if rest or hint < 1:
        raise ModelLoadError(
            f"{path}: conv_in takes {int(conv_in.shape[1])} channels, not a multiple of {factor}x{factor}"
            f" (the pixel-unshuffle of a {base.value} T2I-Adapter)",
            path=str(path),
        )
    config = {
        "in_channels": hint,
        "channels": channels,
        "num_res_blocks": blocks,
        "downscale_factor": factor,
        "adapter_type": "full_adapter_xl" if xl else "full_adapter",
    }
    return assign_exact(lambda: diffusers.T2IAdapter(**config), sd, "T2IAdapter", path, dtype=dtype, partial=partial)


@ModelLoaderRegistry.register(base=_Any, type=ModelType.T2IAdapter, format=ModelFormat.Checkpoint)
class T2IAdapterCheckpointLoader(PickleConversionMixin, ModelLoader):
    """A single-file T2I-Adapter (TencentARC or diffusers key names) -> diffusers ``T2IAdapter``.

    The architecture comes from the tensors: stage widths, blocks per stage, and the hint channels
    (conv_in's input is hint channels x the pixel-unshuffle factor: 8x8 for SD-1/2, 16x16 for SDXL).
    """

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        cfg = self.config
        assert cfg is not None
        # Cast while reading (one pass over the bytes): the converters below only rename and reshape.
        sd = load_weights(path, dtype=self.torch_dtype)
        if not sd:
            raise ModelLoadError(f"{path}: no tensors", key=cfg.key, path=str(path))
        return t2i_adapter_from_state_dict(sd, cfg.base, path, self.torch_dtype, partial=self.partial)


def _ip_adapter_module(sd: dict[str, Any]) -> Any:
    """Build the image projection + per-attention K/V projections of a plain IP-Adapter."""
    import torch
    from diffusers.models.embeddings import ImageProjection

    proj = sd["image_proj.proj.weight"]
    cross_dim = int(sd["image_proj.norm.weight"].shape[0])
    tokens = int(proj.shape[0]) // cross_dim
    image_proj = ImageProjection(
        cross_attention_dim=cross_dim, image_embed_dim=int(proj.shape[1]), num_image_text_embeds=tokens
    )
    layer_ids = sorted({int(k.split(".")[1]) for k in sd if k.startswith("ip_adapter.")})
    layers = torch.nn.ModuleDict()
    for i in layer_ids:
        k_w = sd[f"ip_adapter.{i}.to_k_ip.weight"]
        block = torch.nn.Module()
        block.to_k_ip = torch.nn.Linear(int(k_w.shape[1]), int(k_w.shape[0]), bias=False)
        block.to_v_ip = torch.nn.Linear(int(k_w.shape[1]), int(k_w.shape[0]), bias=False)
        layers[str(i)] = block
    model = IPAdapterModel(image_proj, layers)
    # diffusers calls the projection "image_embeds" where IP-Adapter files say "proj".
    wanted = {
        k.replace("image_proj.proj.", "image_proj.image_embeds."): v
        for k, v in sd.items()
        if k.startswith("image_proj.")
    }
    wanted.update({f"layers.{k[len('ip_adapter.') :]}": v for k, v in sd.items() if k.startswith("ip_adapter.")})
    model.load_state_dict(wanted, strict=True)
    return model


@functools.cache
def _ip_adapter_class() -> Any:
    import torch

    class _IPAdapterModel(torch.nn.Module):
        """IP-Adapter weights: ``image_proj`` turns CLIP image embeds into extra context tokens;
        ``layers[i].to_k_ip / to_v_ip`` are the decoupled cross-attention projections."""

        def __init__(self, image_proj: Any, layers: Any) -> None:
            super().__init__()
            self.image_proj = image_proj
            self.layers = layers

        def forward(self, image_embeds: Any) -> Any:
            return self.image_proj(image_embeds)

    return _IPAdapterModel


def IPAdapterModel(image_proj: Any, layers: Any) -> Any:  # noqa: N802 - a lazily defined class
    return _ip_adapter_class()(image_proj, layers)


@ModelLoaderRegistry.register(base=_Any, type=ModelType.IPAdapter, format=ModelFormat.InvokeAI)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.IPAdapter, format=ModelFormat.Checkpoint)
class IPAdapterLoader(PickleConversionMixin, ModelLoader):
    """Plain IP-Adapters become a module; Plus/FaceID variants come back as a nested state dict
    ``{"image_proj": {...}, "ip_adapter": {...}}`` for the caller's attention processors."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        assert self.config is not None
        if path.is_dir():
            # InvokeAI layout: <folder>/ip_adapter.safetensors (or .bin) + image_encoder.txt
            candidates = [path / "ip_adapter.safetensors", path / "ip_adapter.bin"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise ModelNotFoundException(f"{path}: no ip_adapter.safetensors or ip_adapter.bin", path)
            path = self._converted_path(self.config, found) if self._needs_conversion(self.config, found) else found
        sd = load_weights(path, dtype=self.torch_dtype)
        if not any(k.startswith("ip_adapter.") for k in sd):
            raise ModelLoadError(f"{path}: not an IP-Adapter (no ip_adapter.* tensors)", path=str(path))
        if "image_proj.proj.weight" in sd and "image_proj.norm.weight" in sd:
            model = _ip_adapter_module(sd)
            model.eval()
            model.requires_grad_(False)
            return model
        nested: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        for k, v in sd.items():
            head, _, rest = k.partition(".")
            nested.setdefault(head, {})[rest] = v
        return nested


__all__ = [
    "CheckpointComponentLoader",
    "DiffusersComponentLoader",
    "IPAdapterLoader",
    "T2IAdapterCheckpointLoader",
    "controlnet_config_from_tensors",
    "t2i_adapter_from_state_dict",
]
