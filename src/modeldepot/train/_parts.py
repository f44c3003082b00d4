"""The base model a LoRA is trained on: its parts from the depot's cache, and how prompts become conditioning.

The frozen parts (VAE, frozen text encoders, tokenizers, scheduler config) are the cache's own objects,
used under the cache lock. A part being trained gets PEFT adapters injected, which changes the module, so
it is a private copy of the cached one: a run never leaves adapters in modules other callers share.
"""

from __future__ import annotations

import copy
import functools
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from modeldepot.errors import TrainingError
from modeldepot.taxonomy import BaseModelType, ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager

#: record base -> the family this package trains; kohya's ``ss_base_model_version`` and ModelSpec's architecture
FAMILIES: dict[str, tuple[str, str, str]] = {
    "sd-1": ("sd", "sd_v1", "stable-diffusion-v1"),
    "sd-2": ("sd", "sd_v2_512", "stable-diffusion-v2-512"),
    "sd-2-v": ("sd", "sd_v2_768_v", "stable-diffusion-v2-768-v"),
    "sdxl": ("sdxl", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base"),
}
#: the text encoder's width when the record does not know its base (real SD-1 / SD-2 models)
_WIDTH_BASES = {768: "sd-1", 1024: "sd-2"}
#: parts loaded for each family; ``text_encoder_2`` / ``tokenizer_2`` only for SDXL
_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler", "unet")
_SDXL_PARTS = ("text_encoder_2", "tokenizer_2")


def base_key(config: ModelConfigBase, width: int | None = None, has_second_encoder: bool = False) -> str:
    """The key of :data:`FAMILIES` for a main model; TrainingError when it is not SD-1, SD-2 or SDXL."""
    if config.type != ModelType.Main:
        raise TrainingError(
            f"{config.name!r} is a {config.type.value} model: LoRA training needs a main model (sd-1, sd-2, sdxl)"
        )
    base = config.base.value
    if base == BaseModelType.StableDiffusion2.value:
        prediction = getattr(config, "prediction_type", None)
        return "sd-2-v" if getattr(prediction, "value", prediction) == "v_prediction" else "sd-2"
    if base in FAMILIES:
        return base
    if base == BaseModelType.Unknown.value:
        guessed = "sdxl" if has_second_encoder else _WIDTH_BASES.get(width or 0)
        if guessed is not None:
            return guessed
    raise TrainingError(
        f"cannot train a LoRA on {config.name!r} (base {base}): train_lora trains sd-1, sd-2 and sdxl models"
        + (
            "; if it is one of them, register it with --base sd-1|sd-2|sdxl"
            if base == BaseModelType.Unknown.value
            else ""
        )
    )


@dataclass
class BaseParts:
    """The parts of the base model a run uses, locked in the cache while the run holds them."""

    config: ModelConfigBase
    family_key: str
    modules: dict[str, Any]
    device: torch.device
    entries: dict[str, Any] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    @functools.cached_property
    def vae_dtype(self) -> torch.dtype:
        # asked once: diffusers' ``vae.dtype`` walks every module on each call
        return next(self.modules["vae"].parameters()).dtype  # type: ignore[no-any-return]

    @property
    def family(self) -> str:
        return FAMILIES[self.family_key][0]

    @property
    def prediction_type(self) -> str:
        return str(getattr(self.modules["scheduler"], "config", {}).get("prediction_type", "epsilon"))

    def close(self) -> None:
        self.stack.close()

    def trainable_copy(self, name: str) -> Any:
        """A private copy of a part to inject adapters into; the cached module stays as it is."""
        entry = self.entries.get(name)
        if entry is None:
            module = copy.deepcopy(self.modules[name])
        else:
            with entry as cached:  # on the execution device while copied
                module = copy.deepcopy(cached)
        module.requires_grad_(False)
        return module

    def encode_prompts(self, captions: list[str], encoders: dict[str, Any]) -> dict[str, Any]:
        """The unet's conditioning for ``captions``: ``encoder_hidden_states`` (and SDXL's added conditions
        without the time ids). ``encoders`` maps ``text_encoder`` / ``text_encoder_2`` to the module to run:
        the frozen cached one or the copy being trained."""
        ids = self._token_ids(self.modules["tokenizer"], captions)
        first = encoders["text_encoder"]
        if self.family == "sd":
            return {"encoder_hidden_states": first(ids)[0]}
        ids2 = self._token_ids(self.modules["tokenizer_2"], captions)
        out1 = first(ids, output_hidden_states=True)
        out2 = encoders["text_encoder_2"](ids2, output_hidden_states=True)
        # SDXL conditions on both encoders' penultimate layers, and on the second's pooled projection.
        hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
        return {"encoder_hidden_states": hidden, "text_embeds": out2[0]}

    def _token_ids(self, tokenizer: Any, captions: list[str]) -> torch.Tensor:
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids.to(self.device)  # type: ignore[no-any-return]

    def latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """VAE latents of images in [-1, 1] (sampled from the posterior, as diffusers' and kohya's trainers
        do), scaled as the unet expects and shifted where the VAE says."""
        vae = self.modules["vae"]
        dist = vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor  # type: ignore[no-any-return]


def open_base(depot: ModelManager, key: str) -> BaseParts:
    """Resolve ``key`` and load the parts a run needs through the cache, locked until ``close()``."""
    config = depot.store.resolve(key)
    if config.type != ModelType.Main:
        base_key(config)  # raises with the reason
    names = set(depot.load.submodels(config) or ())
    stack = ExitStack()
    try:
        modules: dict[str, Any] = {}
        entries: dict[str, Any] = {}
        for name in (*_PARTS, *_SDXL_PARTS):
            if name not in names:
                continue
            entries[name] = depot.load_model_by_config(config, name)
            # The unet is trained on a copy: its cache entry stays unlocked, so the cache may offload or
            # evict the original while the run holds the copy (one unet's worth of memory, not two).
            if name != "unet":
                modules[name] = stack.enter_context(entries[name])
        missing = [n for n in _PARTS if n not in entries]
        if missing:
            raise TrainingError(f"{config.name!r} has no {', '.join(missing)}: LoRA training needs a full pipeline")
        width = getattr(modules["text_encoder"].config, "hidden_size", None)
        family_key = base_key(config, width, "text_encoder_2" in modules)
        if FAMILIES[family_key][0] == "sdxl" and "text_encoder_2" not in modules:
            raise TrainingError(f"{config.name!r} is an SDXL model without text_encoder_2: it cannot be trained")
        device = next(modules["vae"].parameters()).device
    except BaseException:
        stack.close()
        raise
    return BaseParts(config, family_key, modules, device, entries, stack)
