"""LoRA / LyCORIS files made for given tiny modules: every key names a REAL layer of them.

``tiny_lora_for(dest, unet, text_encoder, style=...)`` walks ``named_modules()`` of the modules it is
given, picks the Linear / Conv2d layers whose names end with one of ``targets`` and writes random
low-rank factors for them in the key layout of ``style``:

- ``kohya``: ``lora_unet_<diffusers name with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
  ``lora_te_`` (``lora_te1_`` / ``lora_te2_`` when a second text encoder is given); 3x3 convolutions
  get LoCon factors (down ``[r, in, kh, kw]``, up ``[out, r, 1, 1]``).
- ``kohya_sgm``: the same, with the UNet named in the original SGM / LDM layout
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), as kohya writes SDXL LoRAs.
- ``peft``: ``unet.<name>.lora_A.weight`` / ``lora_B.weight`` (and ``text_encoder.`` ...), diffusers'
  own ``save_lora_weights`` layout; no alpha.
- ``loha``: LyCORIS LoHa ``hada_w1_a/b``, ``hada_w2_a/b`` + ``alpha`` (kohya names).
- ``lokr``: LyCORIS LoKr, alternating (``lokr_w1``, ``lokr_w2_a/b``) and (``lokr_w1_a/b``, ``lokr_w2``).
- ``full``: LyCORIS full weight difference ``diff`` (+ ``diff_b`` for layers with a bias).

Needs torch (imported on call, so ``modeldepot.testing.factories`` stays importable without it).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LORA_STYLES = ("kohya", "kohya_sgm", "peft", "loha", "lokr", "full")

#: Layer name endings patched by default: cross/self attention, a 1x1 / linear projection, a 3x3 conv,
#: the resnet time embedding, and the text encoder's attention and MLP.
DEFAULT_LORA_TARGETS = (
    "attn1.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn1.to_out.0",
    "proj_in",
    "resnets.0.conv1",
    "time_emb_proj",
    "self_attn.q_proj",
    "self_attn.v_proj",
    "mlp.fc1",
)


def _torch() -> Any:
    return importlib.import_module("torch")


def _factor(n: int) -> tuple[int, int]:
    """``n`` as ``a * b`` with ``a`` the smallest factor above 1 (LoKr's Kronecker split)."""
    for a in range(2, n + 1):
        if n % a == 0:
            return a, n // a
    return 1, n


def _targets(module: Any, targets: Sequence[str]) -> list[tuple[str, Any]]:
    torch = _torch()
    layers = (torch.nn.Linear, torch.nn.Conv2d)
    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, layers) and any(name == t or name.endswith("." + t) for t in targets)
    ]


def _sgm_name(unet: Any, name: str) -> str:
    from modeldepot.testing.factories.torch_layouts import unet_to_ldm

    (ldm,) = unet_to_ldm({name + ".weight": None}, dict(unet.config))
    return ldm.removeprefix("model.diffusion_model.").removesuffix(".weight")


def _layer_tensors(style: str, layer: Any, rank: int, alpha: float, gen: Any) -> dict[str, Any]:
    """The tensors of one layer, keyed by their suffix (``lora_down.weight``, ``hada_w1_a`` ...)."""
    torch = _torch()
    w = layer.weight
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    kernel = tuple(int(k) for k in w.shape[2:])
    conv = len(kernel) == 2
    spatial = kernel[0] * kernel[1] if conv else 1

    def rnd(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen) * 0.2

    if style in ("kohya", "kohya_sgm", "peft"):
        down = rnd(rank, in_f, *kernel) if conv else rnd(rank, in_f)
        up = rnd(out_f, rank, 1, 1) if conv else rnd(out_f, rank)
        if style == "peft":
            return {"lora_A.weight": down, "lora_B.weight": up}
        return {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(alpha)}
    if style == "loha":
        return {
            "hada_w1_a": rnd(out_f, rank),
            "hada_w1_b": rnd(rank, in_f * spatial),
            "hada_w2_a": rnd(out_f, rank),
            "hada_w2_b": rnd(rank, in_f * spatial),
            "alpha": torch.tensor(alpha),
        }
    if style == "full":
        sd = {"diff": rnd(*w.shape)}
        if getattr(layer, "bias", None) is not None:
            sd["diff_b"] = rnd(*layer.bias.shape)
        return sd
    raise ValueError(f"unknown LoRA style {style!r}; one of {', '.join(LORA_STYLES)}")


def _lokr_tensors(layer: Any, rank: int, alpha: float, gen: Any, full_w1: bool) -> dict[str, Any]:
    torch = _torch()
    w = layer.weight
    (o1, o2), (i1, i2) = _factor(int(w.shape[0])), _factor(int(w.shape[1]))
    kernel = tuple(int(k) for k in w.shape[2:])
    spatial = kernel[0] * kernel[1] if kernel else 1

    def rnd(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen) * 0.2

    if full_w1:  # w1 whole, w2 as a low-rank product (alpha / rank applies)
        return {"lokr_w1": rnd(o1, i1), "lokr_w2_a": rnd(o2, rank), "lokr_w2_b": rnd(rank, i2 * spatial),
                "alpha": torch.tensor(alpha)}  # fmt: skip
    return {"lokr_w1_a": rnd(o1, rank), "lokr_w1_b": rnd(rank, i1), "lokr_w2": rnd(o2, i2, *kernel),
            "alpha": torch.tensor(alpha)}  # fmt: skip


def tiny_lora_for(
    dest: Path,
    unet: Any = None,
    text_encoder: Any = None,
    *,
    text_encoder_2: Any = None,
    style: str = "kohya",
    rank: int = 2,
    seed: int = 0,
    targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    alpha: float | None = None,
) -> Path:
    """Write a ``.safetensors`` LoRA of ``style`` (see the module docstring) for the given tiny modules.

    ``alpha`` defaults to ``rank / 2`` so the alpha / rank scale is not 1. Returns ``dest``.
    """
    from safetensors.torch import save_file

    torch = _torch()
    if style not in LORA_STYLES:
        raise ValueError(f"unknown LoRA style {style!r}; one of {', '.join(LORA_STYLES)}")
    gen = torch.Generator().manual_seed(seed)
    alpha = float(rank) / 2 if alpha is None else float(alpha)
    two_encoders = text_encoder_2 is not None
    parts = [
        ("unet", "lora_unet_", unet),
        ("text_encoder", "lora_te1_" if two_encoders else "lora_te_", text_encoder),
        ("text_encoder_2", "lora_te2_", text_encoder_2),
    ]
    sd: dict[str, Any] = {}
    count = 0
    for component, kohya_prefix, module in parts:
        if module is None:
            continue
        for name, layer in _targets(module, targets):
            if style == "lokr":
                tensors = _lokr_tensors(layer, rank, alpha, gen, full_w1=count % 2 == 0)
            else:
                tensors = _layer_tensors(style, layer, rank, alpha, gen)
            count += 1
            if style == "peft":
                base = f"{component}.{name}"
            else:
                named = _sgm_name(module, name) if style == "kohya_sgm" and component == "unet" else name
                if component != "unet" and not named.startswith("text_model."):
                    named = "text_model." + named  # transformers 5 CLIPTextModel has no text_model level
                base = kohya_prefix + named.replace(".", "_")
            for suffix, t in tensors.items():
                sd[f"{base}.{suffix}"] = t.detach().float().contiguous()
    if not sd:
        raise ValueError(f"no layer of the given modules matches the targets {', '.join(targets)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dest))
    return dest


__all__ = ["DEFAULT_LORA_TARGETS", "LORA_STYLES", "tiny_lora_for"]
