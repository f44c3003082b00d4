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
from modeldepot.load.loaders.single_file import shipped_config_dir
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
        return from_pretrained(cls, folder, self.torch_dtype, variant)


@ModelLoaderRegistry.register(base=_Any, type=ModelType.VAE, format=ModelFormat.Checkpoint)
@ModelLoaderRegistry.register(base=_Any, type=ModelType.ControlNet, format=ModelFormat.Checkpoint)
class CheckpointComponentLoader(PickleConversionMixin, ModelLoader):
    """A single-file VAE or ControlNet (LDM or diffusers key layout) with the shipped family config."""

    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        import diffusers

        cfg = self.config
        assert cfg is not None
        custom = getattr(cfg, "config_path", None)
        folder = Path(custom) if custom and Path(custom).is_dir() else shipped_config_dir(_config_family(cfg.base))
        sub, cls = (
            ("vae", diffusers.AutoencoderKL) if cfg.type == ModelType.VAE else ("controlnet", diffusers.ControlNetModel)
        )
        if not (folder / sub / "config.json").is_file():
            raise ModelLoadError(f"no shipped {sub} config for base {cfg.base.value}", key=cfg.key, path=str(path))
        sd = load_weights(path)
        if not sd:
            raise ModelLoadError(f"{path}: no tensors", key=cfg.key, path=str(path))
        model = cls.from_single_file(
            sd, config=str(folder), subfolder=sub, local_files_only=True, torch_dtype=self.torch_dtype
        )
        model.eval()
        model.requires_grad_(False)
        return model


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
        from modeldepot.load.loaders._common import cast_all

        assert self.config is not None
        if path.is_dir():
            # InvokeAI layout: <folder>/ip_adapter.safetensors (or .bin) + image_encoder.txt
            candidates = [path / "ip_adapter.safetensors", path / "ip_adapter.bin"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise ModelNotFoundException(f"{path}: no ip_adapter.safetensors or ip_adapter.bin", path)
            path = self._converted_path(self.config, found) if self._needs_conversion(self.config, found) else found
        sd = cast_all(load_weights(path), self.torch_dtype)
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


__all__ = ["CheckpointComponentLoader", "DiffusersComponentLoader", "IPAdapterLoader"]
