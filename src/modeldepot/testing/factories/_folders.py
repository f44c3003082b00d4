"""Diffusers / transformers folders with real-looking JSON configs and tiny weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.testing.factories._writers import Shape, write_json, write_safetensors, write_text
from modeldepot.testing.factories.files import _clip_text_keys, _peft_lora_keys, _t5_keys

_VERSION = "0.30.0"
_UNET_CFG: dict[str, dict[str, Any]] = {
    "sd-1": {
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "sample_size": 64,
    },
    "sd-2": {
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "sample_size": 96,
        "use_linear_projection": True,
    },
    "sdxl": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2816,
        "sample_size": 128,
        "transformer_layers_per_block": [1, 2, 10],
        "use_linear_projection": True,
    },
    "sdxl-refiner": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "attention_head_dim": [6, 12, 24, 24],
        "block_out_channels": [384, 768, 1536, 1536],
        "cross_attention_dim": 1280,
        "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
        "projection_class_embeddings_input_dim": 2560,
        "sample_size": 128,
        "transformer_layers_per_block": 4,
        "use_linear_projection": True,
    },
}
_TEXT_CFG = {  # (class, hidden, layers, projection_dim, act)
    "L": ("CLIPTextModel", 768, 12, 768, "quick_gelu"),
    "H": ("CLIPTextModel", 1024, 23, 512, "gelu"),
    "G": ("CLIPTextModelWithProjection", 1280, 32, 1280, "gelu"),
}
_VAE_SCALING = {
    "sd-1": 0.18215,
    "sd-2": 0.18215,
    "sdxl": 0.13025,
    "sdxl-refiner": 0.13025,
    "sd-3": 1.5305,
    "flux": 0.3611,
}


def _weights_name(stem: str, fp16: bool) -> str:
    return f"{stem}.fp16.safetensors" if fp16 else f"{stem}.safetensors"


def write_unet(root: Path, base: str, *, in_channels: int = 4, fp16: bool = False, seed: int = 0) -> Path:
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": _VERSION,
        "act_fn": "silu",
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": in_channels,
        "layers_per_block": 2,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "upcast_attention": False,
        **_UNET_CFG[base],
    }
    write_json(root / "config.json", cfg)
    ch = cfg["block_out_channels"][0]
    ctx = cfg["cross_attention_dim"]
    xl = base.startswith("sdxl")
    blk = (
        "down_blocks.1.attentions.0.transformer_blocks.0." if xl else "down_blocks.0.attentions.0.transformer_blocks.0."
    )
    width = ch * 2 if xl else ch
    keys: dict[str, Shape] = {
        "conv_in.weight": (ch, in_channels, 3, 3),
        "conv_in.bias": (ch,),
        "time_embedding.linear_1.weight": (ch * 4, ch),
        f"{blk}attn1.to_q.weight": (width, width),
        f"{blk}attn2.to_k.weight": (width, ctx),
        f"{blk}attn2.to_v.weight": (width, ctx),
        "up_blocks.0.resnets.0.norm1.weight": (ch * 4,),
        "conv_norm_out.weight": (ch,),
        "conv_out.weight": (4, ch, 3, 3),
    }
    if xl:
        keys["add_embedding.linear_1.weight"] = (ch * 4, cfg["projection_class_embeddings_input_dim"])
    return write_safetensors(root / _weights_name("diffusion_pytorch_model", fp16), keys, seed=seed)


def write_vae_folder(root: Path, base: str = "sd-1", *, fp16: bool = False, seed: int = 1) -> Path:
    latent = 16 if base in ("flux", "sd-3") else 4
    cfg: dict[str, Any] = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": _VERSION,
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 1024 if base.startswith("sdxl") else 512,
        "scaling_factor": _VAE_SCALING[base],
    }
    if base.startswith("sdxl"):
        cfg["force_upcast"] = True
    if latent == 16:
        cfg |= {
            "shift_factor": 0.1159 if base == "flux" else 0.0609,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
        }
    write_json(root / "config.json", cfg)
    keys: dict[str, Shape] = {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.conv_out.weight": (2 * latent, 512, 3, 3),
        "encoder.mid_block.attentions.0.to_q.weight": (512, 512),
        "decoder.conv_in.weight": (512, latent, 3, 3),
        "decoder.up_blocks.0.resnets.0.norm1.weight": (512,),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    if latent == 4:
        keys |= {"quant_conv.weight": (8, 8, 1, 1), "post_quant_conv.weight": (4, 4, 1, 1)}
    write_safetensors(root / _weights_name("diffusion_pytorch_model", fp16), keys, seed=seed)
    return root


def write_clip_text_folder(root: Path, variant: str = "L", *, fp16: bool = False, seed: int = 2) -> Path:
    cls, hidden, layers, proj, act = _TEXT_CFG[variant]
    write_json(
        root / "config.json",
        {
            "architectures": [cls],
            "model_type": "clip_text_model",
            "hidden_size": hidden,
            "intermediate_size": hidden * 4,
            "num_attention_heads": hidden // 64,
            "num_hidden_layers": layers,
            "projection_dim": proj,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "hidden_act": act,
            "torch_dtype": "float16" if fp16 else "float32",
            "transformers_version": "4.44.0",
        },
    )
    keys = _clip_text_keys(hidden, layers)
    if cls == "CLIPTextModelWithProjection":
        keys["text_projection.weight"] = (proj, hidden)
    write_safetensors(root / _weights_name("model", fp16), keys, seed=seed)
    return root


def write_t5_folder(root: Path, *, d_model: int = 4096, blocks: int = 24, seed: int = 3) -> Path:
    write_json(
        root / "config.json",
        {
            "architectures": ["T5EncoderModel"],
            "model_type": "t5",
            "d_model": d_model,
            "d_ff": 10240,
            "d_kv": 64,
            "num_layers": blocks,
            "num_heads": 64,
            "feed_forward_proj": "gated-gelu",
            "vocab_size": 32128,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.44.0",
        },
    )
    write_safetensors(root / "model.safetensors", _t5_keys(d_model, blocks), seed=seed)
    return root


def write_tokenizer(root: Path, kind: str = "CLIPTokenizer") -> Path:
    if kind.startswith("T5"):
        write_json(
            root / "tokenizer_config.json", {"tokenizer_class": kind, "model_max_length": 512, "eos_token": "</s>"}
        )
        write_json(root / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
        write_text(root / "spiece.model", "tiny sentencepiece placeholder\n")
        return root
    write_json(
        root / "vocab.json", {"!": 0, '"': 1, "a</w>": 2, "cat</w>": 3, "<|startoftext|>": 4, "<|endoftext|>": 5}
    )
    write_text(root / "merges.txt", "#version: 0.2\nc at</w>\n")
    write_json(
        root / "special_tokens_map.json",
        {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )
    write_json(root / "tokenizer_config.json", {"tokenizer_class": kind, "model_max_length": 77, "do_lower_case": True})
    return root


def write_scheduler(root: Path, cls: str = "PNDMScheduler", prediction_type: str | None = "epsilon") -> Path:
    cfg: dict[str, Any] = {"_class_name": cls, "_diffusers_version": _VERSION, "num_train_timesteps": 1000}
    if cls == "FlowMatchEulerDiscreteScheduler":
        cfg |= {"shift": 3.0, "use_dynamic_shifting": False}
    else:
        cfg |= {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            "trained_betas": None,
            "skip_prk_steps": True,
        }
        if prediction_type is not None:
            cfg["prediction_type"] = prediction_type
    return write_json(root / "scheduler_config.json", cfg)


_PIPELINE_CLASS = {
    ("sd-1", "normal"): "StableDiffusionPipeline",
    ("sd-1", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd-2", "normal"): "StableDiffusionPipeline",
    ("sd-2", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sd-2", "depth"): "StableDiffusionDepth2ImgPipeline",
    ("sdxl", "normal"): "StableDiffusionXLPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
    ("sdxl-refiner", "normal"): "StableDiffusionXLImg2ImgPipeline",
}


def _dit_pipeline(root: Path, base: str, variant: str, fp16: bool, seed: int) -> dict[str, Any]:
    flux = base == "flux"
    hidden = 3072 if flux else 1536
    index: dict[str, Any] = {
        "_class_name": ("FluxFillPipeline" if variant == "dev_fill" else "FluxPipeline")
        if flux
        else "StableDiffusion3Pipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel" if flux else "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "FluxTransformer2DModel" if flux else "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    tcfg: dict[str, Any] = {
        "_class_name": index["transformer"][1],
        "_diffusers_version": _VERSION,
        "attention_head_dim": 64 if not flux else 128,
        "patch_size": 1 if flux else 2,
        "joint_attention_dim": 4096,
    }
    keys: dict[str, Shape] = {"transformer_blocks.0.attn.to_k.weight": (hidden, hidden)}
    if flux:
        tcfg |= {
            "guidance_embeds": variant != "schnell",
            "in_channels": 384 if variant == "dev_fill" else 64,
            "num_layers": 19,
            "num_single_layers": 38,
            "num_attention_heads": 24,
            "pooled_projection_dim": 768,
        }
        keys |= {
            "x_embedder.weight": (3072, tcfg["in_channels"]),
            "single_transformer_blocks.0.attn.norm_k.weight": (128,),
            "transformer_blocks.0.attn.norm_added_k.weight": (128,),
        }
        if variant != "schnell":
            keys["time_text_embed.guidance_embedder.linear_1.weight"] = (3072, 256)
        index |= {
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
        }
        write_t5_folder(root / "text_encoder_2", seed=seed + 30)
        write_tokenizer(root / "tokenizer_2", "T5TokenizerFast")
    else:
        tcfg |= {
            "in_channels": 16,
            "num_layers": 24,
            "num_attention_heads": 24,
            "pooled_projection_dim": 2048,
            "sample_size": 128,
        }
        keys |= {"pos_embed.proj.weight": (1536, 16, 2, 2), "context_embedder.weight": (1536, 4096)}
        index |= {
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "text_encoder_3": ["transformers", "T5EncoderModel"],
            "tokenizer_3": ["transformers", "T5TokenizerFast"],
        }
        write_clip_text_folder(root / "text_encoder_2", "G", fp16=fp16, seed=seed + 20)
        write_tokenizer(root / "tokenizer_2")
        write_t5_folder(root / "text_encoder_3", seed=seed + 30)
        write_tokenizer(root / "tokenizer_3", "T5TokenizerFast")
    write_json(root / "transformer" / "config.json", tcfg)
    write_safetensors(root / "transformer" / _weights_name("diffusion_pytorch_model", fp16), keys, seed=seed)
    write_clip_text_folder(root / "text_encoder", "L", fp16=fp16, seed=seed + 10)
    write_tokenizer(root / "tokenizer")
    write_vae_folder(root / "vae", base, fp16=fp16, seed=seed + 40)
    write_scheduler(root / "scheduler", "FlowMatchEulerDiscreteScheduler")
    return index


def write_diffusers_pipeline(
    root: str | Path,
    base: str = "sd-1",
    *,
    variant: str = "normal",
    prediction_type: str | None = None,
    fp16: bool = False,
    unet_seed: int = 0,
    shared_seed: int = 100,
) -> Path:
    """A diffusers pipeline folder (model_index.json + submodel folders). ``base``: sd-1, sd-2, sdxl,
    sdxl-refiner, sd-3, flux (``variant`` dev/schnell/dev_fill). ``prediction_type`` goes to
    scheduler_config.json (default: v_prediction for sd-2, epsilon otherwise). Submodels other than
    the UNet are seeded from ``shared_seed`` so pipelines can share byte-identical components."""
    root = Path(root)
    if base in ("flux", "sd-3"):
        index = _dit_pipeline(root, base, "dev" if base == "flux" and variant == "normal" else variant, fp16, unet_seed)
    else:
        index = {
            "_class_name": _PIPELINE_CLASS[(base, variant)],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        write_unet(
            root / "unet", base, in_channels={"normal": 4, "inpaint": 9, "depth": 5}[variant], fp16=fp16, seed=unet_seed
        )
        write_vae_folder(root / "vae", base, fp16=fp16, seed=shared_seed)
        pred = prediction_type or ("v_prediction" if base == "sd-2" and variant == "normal" else "epsilon")
        write_scheduler(root / "scheduler", "EulerDiscreteScheduler", pred)
        if base != "sdxl-refiner":
            te = {"sd-1": "L", "sd-2": "H"}.get(base, "L")
            write_clip_text_folder(root / "text_encoder", te, fp16=fp16, seed=shared_seed + 1)
            write_tokenizer(root / "tokenizer")
            index |= {"text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}
        else:
            index |= {"text_encoder": [None, None], "tokenizer": [None, None], "requires_aesthetics_score": True}
        if base.startswith("sdxl"):
            write_clip_text_folder(root / "text_encoder_2", "G", fp16=fp16, seed=shared_seed + 2)
            write_tokenizer(root / "tokenizer_2")
            index |= {
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "tokenizer_2": ["transformers", "CLIPTokenizer"],
                "force_zeros_for_empty_prompt": True,
            }
        if base == "sd-1":
            write_json(
                root / "feature_extractor" / "preprocessor_config.json",
                {
                    "crop_size": 224,
                    "do_center_crop": True,
                    "do_normalize": True,
                    "do_resize": True,
                    "feature_extractor_type": "CLIPFeatureExtractor",
                    "image_mean": [0.4815, 0.4578, 0.4082],
                    "image_std": [0.2686, 0.2613, 0.2758],
                    "resample": 3,
                    "size": 224,
                },
            )
            index |= {
                "feature_extractor": ["transformers", "CLIPImageProcessor"],
                "safety_checker": [None, None],
                "requires_safety_checker": False,
            }
    if prediction_type is not None and base in ("flux", "sd-3"):
        raise ValueError("flow-matching pipelines have no prediction_type")
    write_json(root / "model_index.json", {"_diffusers_version": _VERSION, **index})
    return root


def write_sd_pipeline_family(root: str | Path, n: int = 3, *, base: str = "sd-1") -> list[Path]:
    """``n`` pipelines under ``root`` (``pipeline-0`` ...) whose vae, text_encoder, tokenizer, scheduler
    and model_index files are byte-identical and whose unets differ (a base model and its fine-tunes)."""
    root = Path(root)
    return [write_diffusers_pipeline(root / f"pipeline-{i}", base, unet_seed=1000 + i, shared_seed=7) for i in range(n)]


def write_diffusers_vae(root: str | Path, *, base: str = "sd-1") -> Path:
    return write_vae_folder(Path(root), base)


def write_diffusers_controlnet(root: str | Path, *, base: str = "sd-1") -> Path:
    root = Path(root)
    ctx = {"sd-1": 768, "sd-2": 1024, "sdxl": 2048}[base]
    write_json(
        root / "config.json",
        {
            "_class_name": "ControlNetModel",
            "_diffusers_version": _VERSION,
            "cross_attention_dim": ctx,
            "conditioning_embedding_out_channels": [16, 32, 96, 256],
            "in_channels": 4,
            "block_out_channels": _UNET_CFG[base]["block_out_channels"],
        },
    )
    keys: dict[str, Shape] = {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "conv_in.weight": (320, 4, 3, 3),
        "controlnet_down_blocks.0.weight": (320, 320, 1, 1),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, ctx),
    }
    write_safetensors(root / "diffusion_pytorch_model.safetensors", keys)
    return root


def write_diffusers_t2i_adapter(root: str | Path, *, base: str = "sd-1") -> Path:
    root = Path(root)
    xl = base == "sdxl"
    write_json(
        root / "config.json",
        {
            "_class_name": "T2IAdapter",
            "_diffusers_version": _VERSION,
            "adapter_type": "full_adapter_xl" if xl else "full_adapter",
            "in_channels": 3,
            "channels": [320, 640, 1280] if xl else [320, 640, 1280, 1280],
            "num_res_blocks": 2,
            "downscale_factor": 16 if xl else 8,
        },
    )
    keys: dict[str, Shape] = {
        "adapter.conv_in.weight": (320, 768 if xl else 192, 3, 3),
        "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3),
    }
    write_safetensors(root / "diffusion_pytorch_model.safetensors", keys)
    return root


def write_diffusers_clip_vision(root: str | Path, *, variant: str = "H") -> Path:
    root = Path(root)
    depth, width, proj = {"L": (24, 1024, 768), "H": (32, 1280, 1024), "G": (48, 1664, 1280)}[variant]
    write_json(
        root / "config.json",
        {
            "architectures": ["CLIPVisionModelWithProjection"],
            "model_type": "clip_vision_model",
            "hidden_size": width,
            "num_hidden_layers": depth,
            "projection_dim": proj,
            "image_size": 224,
            "patch_size": 14,
            "transformers_version": "4.44.0",
        },
    )
    keys: dict[str, Shape] = {f"vision_model.encoder.layers.{i}.layer_norm1.weight": (width,) for i in range(depth)}
    keys["visual_projection.weight"] = (proj, width)
    write_safetensors(root / "model.safetensors", keys)
    return root


def write_diffusers_clip_text(root: str | Path, *, variant: str = "L") -> Path:
    return write_clip_text_folder(Path(root), variant)


def write_diffusers_t5(root: str | Path, *, d_model: int = 4096) -> Path:
    return write_t5_folder(Path(root), d_model=d_model)


def write_diffusers_lora(root: str | Path, *, base: str = "sd-1") -> Path:
    root = Path(root)
    write_safetensors(root / "pytorch_lora_weights.safetensors", _peft_lora_keys(base, 4))
    return root
