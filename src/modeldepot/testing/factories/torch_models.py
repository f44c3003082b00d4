"""Tiny REAL torch models for load tests: seconds to build, kilobytes on disk, runnable forward passes.

Everything is written the way real tools write it: diffusers ``save_pretrained`` folders, an
original-LDM-layout single-file checkpoint (the inverse of diffusers' converter, for a tiny
SD-1-shaped net) with a matching config folder, kohya LoRA / LyCORIS files, A1111 / diffusers
textual inversions, CLIP / T5 encoders and an ESRGAN in its three key layouts. Needs the torch extra.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeldepot.testing.factories._folders import byte_vocab
from modeldepot.testing.factories._tiny import CLIP_VOCAB
from modeldepot.testing.factories.torch_layouts import (
    clip_to_ldm,
    controlnet_to_ldm,
    flux_to_bfl,
    openclip_to_ldm,
    sd3_to_sai,
    unet_to_ldm,
    vae_to_ldm,
)

TINY_CROSS_DIM = 16
TINY_LATENT = 4


def _lib(name: str) -> Any:
    """diffusers / transformers as ``Any``: their classes are untyped for mypy."""
    return importlib.import_module(name)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def tiny_clip_tokenizer(dest: Path) -> Path:
    """A byte-level CLIP tokenizer with no merges (514 tokens): real tokenizer code, tiny vocab."""
    dest.mkdir(parents=True, exist_ok=True)
    vocab = byte_vocab()
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 77,
            }
        ),
        encoding="utf-8",
    )
    return dest


TINY_VOCAB = CLIP_VOCAB


def tiny_unet(seed: int = 0) -> Any:
    unet_cls = _lib("diffusers").UNet2DConditionModel

    _seed(seed)
    return unet_cls(
        sample_size=8,
        in_channels=TINY_LATENT,
        out_channels=TINY_LATENT,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_CROSS_DIM,
        attention_head_dim=2,
        norm_num_groups=4,
    ).eval()


def tiny_vae_model(seed: int = 0) -> Any:
    vae_cls = _lib("diffusers").AutoencoderKL

    _seed(seed)
    return vae_cls(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=TINY_LATENT,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def tiny_clip_text_model(seed: int = 0, with_projection: bool = False) -> Any:
    config_cls = _lib("transformers").CLIPTextConfig
    text_cls = _lib("transformers").CLIPTextModel
    proj_cls = _lib("transformers").CLIPTextModelWithProjection

    _seed(seed)
    cfg = config_cls(
        vocab_size=TINY_VOCAB,
        hidden_size=TINY_CROSS_DIM,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=TINY_CROSS_DIM,
        bos_token_id=TINY_VOCAB - 2,
        eos_token_id=TINY_VOCAB - 1,
        pad_token_id=TINY_VOCAB - 1,
    )
    cls = proj_cls if with_projection else text_cls
    return cls(cfg).eval()


def _scheduler() -> Any:
    sched_cls = _lib("diffusers").PNDMScheduler

    return sched_cls(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )


def tiny_sd_pipeline(dest: Path, seed: int = 0, *, variant: str | None = None) -> Path:
    """A tiny SD-1-shaped diffusers pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)."""
    dest.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"safe_serialization": True}
    if variant:
        kw["variant"] = variant
    unet, vae, te = tiny_unet(seed), tiny_vae_model(seed + 1), tiny_clip_text_model(seed + 2)
    if variant == "fp16":
        unet, vae, te = unet.half(), vae.half(), te.half()
    unet.save_pretrained(dest / "unet", **kw)
    vae.save_pretrained(dest / "vae", **kw)
    te.save_pretrained(dest / "text_encoder", **kw)
    tiny_clip_tokenizer(dest / "tokenizer")
    _scheduler().save_pretrained(dest / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (dest / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return dest


def tiny_sd_variant(src: Path, dest: Path, *, seed: int, in_channels: int = 4, pipeline: str | None = None) -> Path:
    """A copy of the pipeline folder ``src`` with a new unet: a fine-tune (other parts byte-identical, so
    the store and the cache share them), or with ``in_channels`` 9 / 5 and ``pipeline``
    ``StableDiffusionInpaintPipeline`` / ``StableDiffusionDepth2ImgPipeline`` an inpainting / depth model."""
    import shutil

    shutil.copytree(src, dest)
    shutil.rmtree(dest / "unet")
    config = dict(tiny_unet(seed).config)
    config["in_channels"] = in_channels
    _seed(seed)
    type(tiny_unet(seed)).from_config(config).save_pretrained(dest / "unet", safe_serialization=True)
    if pipeline:
        index = json.loads((dest / "model_index.json").read_text(encoding="utf-8"))
        index["_class_name"] = pipeline
        (dest / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return dest


def tiny_sdxl_unet(seed: int = 0) -> Any:
    unet_cls = _lib("diffusers").UNet2DConditionModel
    _seed(seed)
    return unet_cls(
        sample_size=8,
        in_channels=TINY_LATENT,
        out_channels=TINY_LATENT,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TINY_CROSS_DIM,  # both encoders' hidden states, concatenated
        transformer_layers_per_block=(1, 2),
        attention_head_dim=2,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=TINY_CROSS_DIM + 6 * 4,
    ).eval()


@dataclass(frozen=True)
class TinyCheckpoint:
    """A single-file checkpoint, the config folder to load it with, and the same weights as diffusers."""

    path: Path
    config_dir: Path
    reference_dir: Path


def tiny_sd1_checkpoint(dest_dir: Path, seed: int = 0, *, fmt: str = "safetensors") -> TinyCheckpoint:
    """A tiny SD-1-style checkpoint in the original LDM layout (``fmt``: ``safetensors`` or ``ckpt``)."""
    reference = tiny_sd_pipeline(dest_dir / "reference", seed)
    config_dir = dest_dir / "config"
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        (config_dir / sub).mkdir(parents=True, exist_ok=True)
        for f in (reference / sub).iterdir():
            if f.suffix == ".json":
                (config_dir / sub / f.name).write_bytes(f.read_bytes())
    tiny_clip_tokenizer(config_dir / "tokenizer")
    (config_dir / "model_index.json").write_bytes((reference / "model_index.json").read_bytes())
    unet, vae, te = tiny_unet(seed), tiny_vae_model(seed + 1), tiny_clip_text_model(seed + 2)
    sd: dict[str, Any] = {}
    sd.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    sd.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    sd.update(clip_to_ldm(te.state_dict()))
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    path = dest_dir / f"tiny-sd1.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "global_step": 1}, path)
    return TinyCheckpoint(path=path, config_dir=config_dir, reference_dir=reference)


def tiny_sdxl_checkpoint(dest_dir: Path, seed: int = 20) -> TinyCheckpoint:
    """A tiny SDXL-shaped checkpoint in the original layout: UNet with ``label_emb``, CLIP-L-style
    ``conditioner.embedders.0`` and OpenCLIP-style ``conditioner.embedders.1`` text encoders."""
    reference = dest_dir / "reference"
    unet, vae = tiny_sdxl_unet(seed), tiny_vae_model(seed + 1)
    te1, te2 = tiny_clip_text_model(seed + 2), tiny_clip_text_model(seed + 3, with_projection=True)
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder", te1), ("text_encoder_2", te2)):
        model.save_pretrained(reference / name, safe_serialization=True)
    tiny_clip_tokenizer(reference / "tokenizer")
    tiny_clip_tokenizer(reference / "tokenizer_2")
    sched = _lib("diffusers").EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched.save_pretrained(reference / "scheduler")
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }
    (reference / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    config_dir = dest_dir / "config"
    for f in reference.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            target = config_dir / f.relative_to(reference)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    sd: dict[str, Any] = {}
    sd.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    sd.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    sd.update(clip_to_ldm(te1.state_dict(), "conditioner.embedders.0.transformer."))
    sd.update(openclip_to_ldm(te2.state_dict()))
    path = dest_dir / "tiny-sdxl.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, str(path))
    return TinyCheckpoint(path=path, config_dir=config_dir, reference_dir=reference)


def tiny_vae(dest: Path, seed: int = 1) -> Path:
    tiny_vae_model(seed).save_pretrained(dest, safe_serialization=True)
    return dest


def tiny_vae_checkpoint(dest: Path, seed: int = 1) -> Path:
    """A standalone VAE file in LDM layout without the ``first_stage_model.`` prefix (as shipped by SD)."""
    from safetensors.torch import save_file

    vae = tiny_vae_model(seed)
    sd = {
        k.removeprefix("first_stage_model."): v.contiguous()
        for k, v in vae_to_ldm(vae.state_dict(), dict(vae.config)).items()
    }
    save_file(sd, str(dest))
    return dest


def tiny_controlnet(dest: Path, seed: int = 3) -> Path:
    controlnet_cls = _lib("diffusers").ControlNetModel

    _seed(seed)
    controlnet_cls.from_unet(tiny_unet(seed), conditioning_embedding_out_channels=(4, 8)).save_pretrained(
        dest, safe_serialization=True
    )
    return dest


def tiny_t2i_adapter(dest: Path, seed: int = 4) -> Path:
    adapter_cls = _lib("diffusers").T2IAdapter

    _seed(seed)
    adapter_cls(
        in_channels=3, channels=[8, 16], num_res_blocks=1, downscale_factor=8, adapter_type="full_adapter"
    ).save_pretrained(dest, safe_serialization=True)
    return dest


def tiny_ip_adapter(dest: Path, seed: int = 5, image_embed_dim: int = 8, tokens: int = 4) -> Path:
    """A plain IP-Adapter file: image projection + K/V projections for the tiny UNet's attentions."""
    from safetensors.torch import save_file

    _seed(seed)
    sd = {
        "image_proj.proj.weight": torch.randn(TINY_CROSS_DIM * tokens, image_embed_dim),
        "image_proj.proj.bias": torch.randn(TINY_CROSS_DIM * tokens),
        "image_proj.norm.weight": torch.ones(TINY_CROSS_DIM),
        "image_proj.norm.bias": torch.zeros(TINY_CROSS_DIM),
    }
    for i in (1, 3, 5):
        sd[f"ip_adapter.{i}.to_k_ip.weight"] = torch.randn(8, TINY_CROSS_DIM)
        sd[f"ip_adapter.{i}.to_v_ip.weight"] = torch.randn(8, TINY_CROSS_DIM)
    save_file(sd, str(dest))
    return dest


def tiny_lora(dest: Path, seed: int = 6, rank: int = 2, *, kind: str = "lora") -> Path:
    """A kohya-style LoRA (``kind="lora"``) or LyCORIS LoHa (``kind="loha"``) for the tiny UNet."""
    from safetensors.torch import save_file

    _seed(seed)
    base = "lora_unet_down_blocks_0_attentions_0_proj_in"
    if kind == "lora":
        sd = {
            f"{base}.lora_down.weight": torch.randn(rank, 8, 1, 1),
            f"{base}.lora_up.weight": torch.randn(8, rank, 1, 1),
            f"{base}.alpha": torch.tensor(float(rank)),
        }
    else:
        sd = {
            f"{base}.hada_w{i}_{ab}": torch.randn(8 if ab == "a" else rank, rank if ab == "a" else 8)
            for i in (1, 2)
            for ab in "ab"
        }
        sd[f"{base}.alpha"] = torch.tensor(float(rank))
    if dest.suffix in (".pt", ".ckpt"):
        torch.save(sd, dest)
    else:
        save_file(sd, str(dest))
    return dest


def tiny_textual_inversion(dest: Path, seed: int = 7, vectors: int = 2, *, fmt: str = "pt") -> Path:
    """``fmt``: ``pt`` (A1111 layout), ``safetensors`` (``emb_params``) or ``diffusers`` (learned_embeds)."""
    from safetensors.torch import save_file

    _seed(seed)
    emb = torch.randn(vectors, TINY_CROSS_DIM)
    if fmt == "pt":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": emb}, "name": "tiny", "step": 10}, dest)
    elif fmt == "safetensors":
        save_file({"emb_params": emb}, str(dest))
    else:
        dest.mkdir(parents=True, exist_ok=True)
        save_file({"<tiny>": emb[0]}, str(dest / "learned_embeds.safetensors"))
    return dest


def tiny_clip_embed(dest: Path, seed: int = 8) -> Path:
    """InvokeAI's CLIP-embed layout: ``text_encoder/`` + ``tokenizer/``."""
    tiny_clip_text_model(seed).save_pretrained(dest / "text_encoder", safe_serialization=True)
    tiny_clip_tokenizer(dest / "tokenizer")
    return dest


def tiny_clip_vision(dest: Path, seed: int = 11) -> Path:
    """A CLIP image encoder with projection (what IP-Adapters use), 8x8 pixel input."""
    transformers = _lib("transformers")
    _seed(seed)
    cfg = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        image_size=8, patch_size=4, projection_dim=8,
    )  # fmt: skip
    transformers.CLIPVisionModelWithProjection(cfg).eval().save_pretrained(dest, safe_serialization=True)
    return dest


def tiny_t5_encoder(dest: Path, seed: int = 9) -> Path:
    t5_config_cls = _lib("transformers").T5Config
    t5_cls = _lib("transformers").T5EncoderModel

    _seed(seed)
    cfg = t5_config_cls(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0)
    t5_cls(cfg).eval().save_pretrained(dest, safe_serialization=True)
    return dest


def tiny_esrgan_state_dict(
    seed: int = 10, *, nf: int = 8, nb: int = 2, gc: int = 4, scale: int = 4, layout: str = "old"
) -> dict[str, Any]:
    """ESRGAN weights in ``layout`` ``old`` (model.N), ``new`` (RRDB_trunk) or ``basicsr`` (body.N)."""
    _seed(seed)

    def conv(cin: int, cout: int) -> tuple[Any, Any]:
        return torch.randn(cout, cin, 3, 3) * 0.05, torch.randn(cout) * 0.01

    ups = {4: 2, 2: 1, 1: 0}[scale]
    named: dict[str, tuple[Any, Any]] = {"conv_first": conv(3, nf)}
    for b in range(nb):
        for r in (1, 2, 3):
            for c in range(1, 6):
                cin = nf + (c - 1) * gc
                named[f"body.{b}.rdb{r}.conv{c}"] = conv(cin, nf if c == 5 else gc)
    named["conv_body"] = conv(nf, nf)
    for u in range(ups):
        named[f"conv_up{u + 1}"] = conv(nf, nf)
    named["conv_hr"] = conv(nf, nf)
    named["conv_last"] = conv(nf, 3)
    sd: dict[str, Any] = {}
    # the original ESRGAN's nn.Sequential indices (x4: 3, 6 upconvs, 8 HR, 10 last; x2: 3, 5, 7)
    old_tail = {2: {"conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10},
                1: {"conv_up1": 3, "conv_hr": 5, "conv_last": 7},
                0: {"conv_hr": 3, "conv_last": 5}}[ups]  # fmt: skip
    for name, (w, bias) in named.items():
        for suffix, t in (("weight", w), ("bias", bias)):
            if layout == "basicsr":
                sd[f"{name}.{suffix}"] = t
            elif layout == "new":
                head, _, rest = name.partition(".")
                if head == "body":
                    blk, rdb, cv = rest.split(".")
                    sd[f"RRDB_trunk.{blk}.RDB{rdb[3:]}.{cv}.{suffix}"] = t
                else:
                    new = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
                    sd[f"{new.get(name, name)}.{suffix}"] = t
            else:
                head, _, rest = name.partition(".")
                if head == "body":
                    blk, rdb, cv = rest.split(".")
                    sd[f"model.1.sub.{blk}.RDB{rdb[3:]}.{cv}.0.{suffix}"] = t
                elif name == "conv_first":
                    sd[f"model.0.{suffix}"] = t
                elif name == "conv_body":
                    sd[f"model.1.sub.{nb}.{suffix}"] = t
                else:
                    sd[f"model.{old_tail[name]}.{suffix}"] = t
    return sd


def tiny_esrgan(dest: Path, seed: int = 10, *, layout: str = "old", scale: int = 4) -> Path:
    """An ESRGAN file: ``.pth`` (pickle, as most community upscalers ship) or ``.safetensors``."""
    sd = tiny_esrgan_state_dict(seed, layout=layout, scale=scale)
    if dest.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(dest))
    else:
        torch.save(sd, dest)
    return dest


__all__ = [
    "TINY_CROSS_DIM",
    "TINY_LATENT",
    "TINY_VOCAB",
    "TinyCheckpoint",
    "clip_to_ldm",
    "openclip_to_ldm",
    "tiny_clip_embed",
    "tiny_clip_text_model",
    "tiny_clip_tokenizer",
    "tiny_clip_vision",
    "tiny_controlnet",
    "tiny_esrgan",
    "tiny_esrgan_state_dict",
    "tiny_ip_adapter",
    "tiny_lora",
    "tiny_sd1_checkpoint",
    "tiny_sd_pipeline",
    "tiny_sdxl_checkpoint",
    "tiny_sdxl_unet",
    "tiny_t2i_adapter",
    "tiny_t5_encoder",
    "tiny_textual_inversion",
    "tiny_unet",
    "tiny_vae",
    "tiny_vae_checkpoint",
    "tiny_vae_model",
    "unet_to_ldm",
    "vae_to_ldm",
]


# ----- single-file encoders and the SDXL refiner, in the layouts ComfyUI users download ---------------
# Identification only accepts real CLIP widths (768 / 1280 text, ViT depth 24 / 32 / 48 vision), so these
# keep the real width (and depth for vision) and shrink everything else (vocabulary, MLP, layers).
TINY_CLIP_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "large": {
        "vocab_size": TINY_VOCAB, "hidden_size": 768, "intermediate_size": 32, "num_attention_heads": 12,
        "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    },
    "gigantic": {
        "vocab_size": TINY_VOCAB, "hidden_size": 1280, "intermediate_size": 32, "num_attention_heads": 20,
        "num_hidden_layers": 1, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    },
}  # fmt: skip
TINY_CLIP_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 8, "num_attention_heads": 12, "num_hidden_layers": 24,
    "image_size": 8, "patch_size": 4, "projection_dim": 8, "hidden_act": "quick_gelu",
}  # fmt: skip
TINY_T5_CONFIG: dict[str, Any] = {
    "vocab_size": 64, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 2,
    "relative_attention_num_buckets": 8, "feed_forward_proj": "gated-gelu", "decoder_start_token_id": 0,
}  # fmt: skip


def _save_prefixed(sd: dict[str, Any], dest: Path, prefix: str, dtype: Any) -> Path:
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    out = {
        prefix + k: (v.to(dtype) if v.is_floating_point() else v).detach().clone().contiguous() for k, v in sd.items()
    }
    save_file(out, str(dest))
    return dest


def tiny_clip_text_single_file(
    dest: Path, variant: str = "large", seed: int = 12, *, prefix: str = "", dtype: Any = torch.float32
) -> Path:
    """A CLIP text encoder file like ComfyUI's ``clip_l`` / ``clip_g.safetensors``: ``text_model.*`` and
    ``text_projection.weight`` (under ``prefix``), real width, tiny vocabulary and depth."""
    transformers = _lib("transformers")
    _seed(seed)
    cfg = transformers.CLIPTextConfig(**TINY_CLIP_TEXT_CONFIGS[variant])
    model = transformers.CLIPTextModelWithProjection(cfg).eval()
    return _save_prefixed(model.state_dict(), dest, prefix, dtype)


def tiny_clip_l_single_file(dest: Path, seed: int = 12, *, prefix: str = "") -> Path:
    return tiny_clip_text_single_file(dest, "large", seed, prefix=prefix)


def tiny_clip_g_single_file(dest: Path, seed: int = 13, *, prefix: str = "") -> Path:
    return tiny_clip_text_single_file(dest, "gigantic", seed, prefix=prefix, dtype=torch.float16)


def tiny_t5_single_file(dest: Path, seed: int = 14, *, prefix: str = "", dtype: Any = torch.float16) -> Path:
    """A T5 encoder file like ``t5xxl_fp16.safetensors``: ``encoder.*`` + ``shared.weight`` (the tied
    ``encoder.embed_tokens.weight`` is not stored), gated-GELU v1.1 blocks, fp16 by default."""
    transformers = _lib("transformers")
    _seed(seed)
    model = transformers.T5EncoderModel(transformers.T5Config(**TINY_T5_CONFIG)).eval()
    sd = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    return _save_prefixed(sd, dest, prefix, dtype)


def tiny_clip_vision_single_file(dest: Path, seed: int = 15, *, prefix: str = "", dtype: Any = torch.float16) -> Path:
    """A CLIP image encoder file like ComfyUI's ``clip_vision/*.safetensors``: ``vision_model.*`` +
    ``visual_projection.weight``. ViT-L depth (24) and a real width (768) so identification sees a
    CLIP ViT-L; tiny MLP and an 8x8 input (about 110 MB in fp16)."""
    transformers = _lib("transformers")
    _seed(seed)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG))
    return _save_prefixed(model.eval().state_dict(), dest, prefix, dtype)


def tiny_sdxl_refiner_unet(seed: int = 0) -> Any:
    """A refiner-shaped UNet: 1280-wide context at ``input_blocks.4.1`` and a 2560-wide ``label_emb``
    (1280 pooled text + 5 time ids x 256), as identification checks."""
    unet_cls = _lib("diffusers").UNet2DConditionModel
    _seed(seed)
    return unet_cls(
        sample_size=8,
        in_channels=TINY_LATENT,
        out_channels=TINY_LATENT,
        layers_per_block=2,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=1280,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=2,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=1280 + 5 * 256,
    ).eval()


def tiny_sdxl_refiner_checkpoint(dest_dir: Path, seed: int = 30) -> TinyCheckpoint:
    """A tiny SDXL-refiner checkpoint in the original layout: refiner UNet, VAE and an OpenCLIP-style
    text encoder with projection at ``conditioner.embedders.0.model.`` (no first text encoder)."""
    reference = dest_dir / "reference"
    unet, vae = tiny_sdxl_refiner_unet(seed), tiny_vae_model(seed + 1)
    te2 = tiny_clip_text_model(seed + 2, with_projection=True)
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder_2", te2)):
        model.save_pretrained(reference / name, safe_serialization=True)
    tiny_clip_tokenizer(reference / "tokenizer_2")
    sched = _lib("diffusers").EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched.save_pretrained(reference / "scheduler")
    index = {
        "_class_name": "StableDiffusionXLImg2ImgPipeline",
        "_diffusers_version": "0.30.0",
        "requires_aesthetics_score": True,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": [None, None],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }
    (reference / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    config_dir = dest_dir / "config"
    for f in reference.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            target = config_dir / f.relative_to(reference)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    sd: dict[str, Any] = {}
    sd.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    sd.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    sd.update(openclip_to_ldm(te2.state_dict(), "conditioner.embedders.0.model."))
    path = dest_dir / "tiny-sdxl-refiner.safetensors"
    _save_prefixed(sd, path, "", torch.float32)
    return TinyCheckpoint(path=path, config_dir=config_dir, reference_dir=reference)


__all__ += [
    "TINY_CLIP_TEXT_CONFIGS",
    "TINY_CLIP_VISION_CONFIG",
    "TINY_T5_CONFIG",
    "controlnet_to_ldm",
    "flux_to_bfl",
    "sd3_to_sai",
    "tiny_clip_g_single_file",
    "tiny_clip_l_single_file",
    "tiny_clip_text_single_file",
    "tiny_clip_vision_single_file",
    "tiny_sdxl_refiner_checkpoint",
    "tiny_sdxl_refiner_unet",
    "tiny_t5_single_file",
]
