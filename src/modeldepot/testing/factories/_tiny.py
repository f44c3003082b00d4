"""Tiny but complete architectures for the torch-free writers: configs and their exact tensor shapes.

A writer that claims to produce a model must produce one a strict loader accepts: every tensor the
architecture has, with its shape, and no other. The architectures here keep what decides what a model
is (cross-attention widths, latent channels, CLIP widths, ``text_time`` embedding sizes) and shrink
the rest (two 32/64-channel stages, one layer, a 514-token byte-level vocabulary).

The tensor shapes live in ``_tiny_shapes.json`` so writing needs no torch; :func:`generate_shapes`
rebuilds them with diffusers / transformers (``save_pretrained`` and reading the file back, so the
names are the on-disk ones), and a test checks the shipped table against it.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

Shape = tuple[int, ...]
_TABLE = Path(__file__).with_name("_tiny_shapes.json")

#: Byte-level CLIP vocabulary: 256 bytes, the same with ``</w>``, start and end of text.
CLIP_VOCAB = 514
WIDTHS = (32, 64)  # multiples of 32: GroupNorm(32) is what the real configs use

UNET: dict[str, dict[str, Any]] = {
    "sd-1": {
        "attention_head_dim": 8,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "sample_size": 64,
    },
    "sd-2": {
        "attention_head_dim": [2, 4],
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "sample_size": 96,
        "use_linear_projection": True,
    },
    "sdxl": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "attention_head_dim": [2, 4],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + the 1280-wide pooled text
        "sample_size": 128,
        "transformer_layers_per_block": [1, 2],
        "use_linear_projection": True,
    },
    "sdxl-refiner": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "attention_head_dim": [2, 4],
        "cross_attention_dim": 1280,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2560,  # 5 time ids (aesthetic score) x 256 + 1280
        "sample_size": 128,
        "transformer_layers_per_block": [1, 2],
        "use_linear_projection": True,
    },
}
UNET_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": list(WIDTHS),
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "upcast_attention": False,
}
VAE_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": list(WIDTHS),
    "down_block_types": ["DownEncoderBlock2D"] * len(WIDTHS),
    "up_block_types": ["UpDecoderBlock2D"] * len(WIDTHS),
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "norm_num_groups": 32,
}
#: CLIP text towers: (class, width, projection_dim, activation) per variant; one layer each.
CLIP_TEXT = {
    "L": ("CLIPTextModel", 768, 768, "quick_gelu"),
    "H": ("CLIPTextModel", 1024, 1024, "gelu"),
    "G": ("CLIPTextModelWithProjection", 1280, 1280, "gelu"),
}


def unet_config(base: str, in_channels: int = 4) -> dict[str, Any]:
    return {**copy.deepcopy(UNET_COMMON), **copy.deepcopy(UNET[base]), "in_channels": in_channels}


def checkpoint_unet_config(base: str) -> dict[str, Any]:
    """The UNet of a tiny all-in-one (LDM-layout) checkpoint: two layers per block, so the keys
    identification reads exist (``input_blocks.2.1`` holds SD-1/2's cross-attention, ``input_blocks.4.1``
    SDXL's), and both SD-1/2 stages attend (``down_blocks.1.attentions`` of diffusers ControlNets).
    Heads are what the single-file loader assumes for widths no released model has: SD-1's fixed
    8 heads, 64-wide heads (at least one) for SD-2 and SDXL."""
    cfg = unet_config(base)
    cfg["layers_per_block"] = 2
    if base in ("sd-1", "sd-2"):
        cfg["down_block_types"] = ["CrossAttnDownBlock2D"] * 2
        cfg["up_block_types"] = ["CrossAttnUpBlock2D"] * 2
    if base != "sd-1":
        cfg["attention_head_dim"] = [max(1, w // 64) for w in WIDTHS]
    return cfg


_CONTROLNET_KEYS = (
    "act_fn",
    "addition_embed_type",
    "addition_time_embed_dim",
    "attention_head_dim",
    "block_out_channels",
    "cross_attention_dim",
    "down_block_types",
    "flip_sin_to_cos",
    "freq_shift",
    "in_channels",
    "layers_per_block",
    "norm_eps",
    "norm_num_groups",
    "projection_class_embeddings_input_dim",
    "transformer_layers_per_block",
    "upcast_attention",
    "use_linear_projection",
)


def controlnet_config(base: str, *, checkpoint: bool = False) -> dict[str, Any]:
    """The ControlNet of the tiny UNet of ``base`` (its encoder half plus the hint embedding); with
    ``checkpoint`` of the tiny all-in-one checkpoint's UNet (what single ControlNet files carry)."""
    unet = checkpoint_unet_config(base) if checkpoint else unet_config(base)
    cfg = {k: unet[k] for k in _CONTROLNET_KEYS if k in unet}
    cfg["conditioning_embedding_out_channels"] = [16, 32, 96, 256]
    return cfg


def flux_config(variant: str) -> dict[str, Any]:
    """A one-double-block, one-single-block FLUX transformer; in-channels and guidance as the variant's."""
    return {
        "patch_size": 1,
        "in_channels": 384 if variant == "dev_fill" else 64,
        "out_channels": 64,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 128,  # the rotary axes (16, 56, 56) need 128
        "num_attention_heads": 2,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": variant != "schnell",
    }


def sd3_config() -> dict[str, Any]:
    """A one-block SD-3 MMDiT reading T5-XXL-wide context and CLIP-L + bigG pooled embeddings."""
    return {
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": 1,
        "attention_head_dim": 64,
        "num_attention_heads": 2,
        "joint_attention_dim": 4096,
        "caption_projection_dim": 128,
        "pooled_projection_dim": 2048,
        "pos_embed_max_size": 96,
    }


#: Token pieces of the tiny T5 vocabulary after the three specials (SentencePiece's "▁" marks a word start).
T5_PIECES = ["▁", *"abcdefghijklmnopqrstuvwxyz", *(f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
T5_VOCAB = 3 + len(T5_PIECES)


def t5_config() -> dict[str, Any]:
    """A one-block T5 v1.1 encoder of T5-XXL's width (d_model 4096) with a tiny vocabulary and heads."""
    return {
        "architectures": ["T5EncoderModel"],
        "model_type": "t5",
        "d_model": 4096,
        "d_ff": 64,
        "d_kv": 64,
        "num_layers": 1,
        "num_decoder_layers": 1,
        "num_heads": 2,
        "feed_forward_proj": "gated-gelu",
        "vocab_size": T5_VOCAB,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "tie_word_embeddings": False,
    }


def vae_config(latent: int) -> dict[str, Any]:
    cfg = {**copy.deepcopy(VAE_COMMON), "latent_channels": latent}
    if latent == 16:  # the FLUX / SD-3 VAEs dropped the quant convs
        cfg |= {"use_quant_conv": False, "use_post_quant_conv": False}
    return cfg


def clip_text_config(variant: str) -> dict[str, Any]:
    cls, width, proj, act = CLIP_TEXT[variant]
    return {
        "architectures": [cls],
        "model_type": "clip_text_model",
        "hidden_size": width,
        "intermediate_size": 64,
        "num_attention_heads": width // 64,
        "num_hidden_layers": 1,
        "projection_dim": proj,
        "max_position_embeddings": 77,
        "vocab_size": CLIP_VOCAB,
        "hidden_act": act,
        "bos_token_id": CLIP_VOCAB - 2,
        "eos_token_id": CLIP_VOCAB - 1,
        "pad_token_id": CLIP_VOCAB - 1,
    }


#: CLIP image towers: (width, projection_dim) per variant (ViT-L, ViT-H, ViT-bigG); one layer each.
CLIP_VISION = {"L": (1024, 768), "H": (1280, 1024), "G": (1664, 1280)}


def clip_vision_config(variant: str) -> dict[str, Any]:
    width, proj = CLIP_VISION[variant]
    return {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": width,
        "intermediate_size": 64,
        "num_attention_heads": width // 64,
        "num_hidden_layers": 1,
        "projection_dim": proj,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    }


@functools.cache
def _table() -> dict[str, dict[str, list[int]]]:
    data: dict[str, dict[str, list[int]]] = json.loads(_TABLE.read_text(encoding="utf-8"))
    return data


def shapes(name: str) -> dict[str, Shape]:
    """Tensor name -> shape of a tiny architecture: ``unet/<base>``, ``controlnet/<base>``, ``vae/<latent>``,
    ``clip/<L|H|G>``, ``clip-vision/<L|H|G>``, ``t5``, ``flux/<variant>``, ``sd3``, ``controlnet-ckpt/<base>``
    (the ControlNet of :func:`checkpoint_unet_config`) (diffusers names) and in
    the original layouts (no prefix): ``ldm-vae/<latent>``, ``ldm-unet/<base>`` and
    ``ldm-controlnet/<base>`` (of :func:`checkpoint_unet_config`), ``openclip/<H|G>``,
    ``bfl-flux/<variant>``, ``sai-sd3``."""
    return {k: tuple(v) for k, v in _table()[name].items()}


def generate_shapes() -> dict[str, dict[str, list[int]]]:
    """Build every tiny architecture with diffusers / transformers and read the shapes back (needs torch)."""
    import importlib
    import tempfile

    # untyped libraries: Any for mypy
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")

    from modeldepot.identify.safetensors import read_safetensors_header
    from modeldepot.testing.factories.torch_layouts import (
        controlnet_to_ldm,
        flux_to_bfl,
        openclip_to_ldm,
        sd3_to_sai,
        unet_to_ldm,
        vae_to_ldm,
    )

    def listed(sd: dict[str, Any], prefix: str = "") -> dict[str, list[int]]:
        return {k.removeprefix(prefix): [int(d) for d in v.shape] for k, v in sorted(sd.items())}

    def saved(model: Any) -> dict[str, list[int]]:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            (weights,) = Path(tmp).glob("*.safetensors")
            header = read_safetensors_header(weights)
            return {k: [int(d) for d in i.shape] for k, i in sorted(header.tensors.items())}

    out: dict[str, dict[str, list[int]]] = {}
    for base in UNET:
        out[f"unet/{base}"] = saved(diffusers.UNet2DConditionModel(**unet_config(base)))
        unet = diffusers.UNet2DConditionModel(**checkpoint_unet_config(base))
        out[f"ldm-unet/{base}"] = listed(unet_to_ldm(unet.state_dict(), dict(unet.config)), "model.diffusion_model.")
    for base in ("sd-1", "sd-2", "sdxl"):
        out[f"controlnet/{base}"] = saved(diffusers.ControlNetModel(**controlnet_config(base)))
        cn = diffusers.ControlNetModel(**controlnet_config(base, checkpoint=True))
        out[f"controlnet-ckpt/{base}"] = saved(cn)
        out[f"ldm-controlnet/{base}"] = listed(controlnet_to_ldm(cn.state_dict(), dict(cn.config)))
    for variant in ("dev", "schnell", "dev_fill"):
        flux = diffusers.FluxTransformer2DModel(**flux_config(variant))
        out[f"flux/{variant}"] = saved(flux)
        out[f"bfl-flux/{variant}"] = listed(flux_to_bfl(flux.state_dict()))
    sd3 = diffusers.SD3Transformer2DModel(**sd3_config())
    out["sd3"] = saved(sd3)
    out["sai-sd3"] = listed(sd3_to_sai(sd3.state_dict()))
    t5 = t5_config()
    t5.pop("model_type")
    out["t5"] = saved(transformers.T5EncoderModel(transformers.T5Config(**t5)))
    for variant in CLIP_VISION:
        conf = clip_vision_config(variant)
        conf.pop("model_type")
        vision = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**conf))
        out[f"clip-vision/{variant}"] = saved(vision)
    for latent in (4, 16):
        vae = diffusers.AutoencoderKL(**vae_config(latent))
        out[f"vae/{latent}"] = saved(vae)
        ldm = vae_to_ldm(vae.state_dict(), dict(vae.config))
        out[f"ldm-vae/{latent}"] = {
            k.removeprefix("first_stage_model."): [int(d) for d in v.shape] for k, v in sorted(ldm.items())
        }
    for variant, (cls_name, *_rest) in CLIP_TEXT.items():
        conf = clip_text_config(variant)
        conf.pop("model_type")
        model = getattr(transformers, cls_name)(transformers.CLIPTextConfig(**conf))
        # Released CLIP weights name the tower ``text_model.``; transformers >= 5.6 saves CLIPTextModel
        # flattened but reads both, so the table keeps the name every other tool expects.
        out[f"clip/{variant}"] = {
            (k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"): v
            for k, v in saved(model).items()
        }
        if variant != "L":  # OpenCLIP towers (SD-2's ViT-H, SDXL's bigG) in their original layout
            sd = {
                k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
                for k, v in model.state_dict().items()
            }
            out[f"openclip/{variant}"] = listed(openclip_to_ldm(sd, ""))
    return out


def write_table(path: Path = _TABLE) -> None:
    """Regenerate ``_tiny_shapes.json`` (after a diffusers / transformers upgrade renames tensors)."""
    path.write_text(json.dumps(generate_shapes(), sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


__all__ = [
    "CLIP_TEXT",
    "CLIP_VISION",
    "CLIP_VOCAB",
    "UNET",
    "checkpoint_unet_config",
    "clip_text_config",
    "clip_vision_config",
    "controlnet_config",
    "flux_config",
    "generate_shapes",
    "sd3_config",
    "shapes",
    "t5_config",
    "unet_config",
    "vae_config",
    "write_table",
]
