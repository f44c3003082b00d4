"""Diffusers / transformers folders with real-looking JSON configs and tiny weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeldepot.testing.factories._tiny import (
    CLIP_VOCAB,
    T5_PIECES,
    T5_VOCAB,
    clip_text_config,
    clip_vision_config,
    controlnet_config,
    flux_config,
    sd3_config,
    t5_config,
    unet_config,
    vae_config,
)
from modeldepot.testing.factories._tiny import shapes as tiny_shapes
from modeldepot.testing.factories._writers import write_json, write_safetensors, write_text
from modeldepot.testing.factories.files import T2I_CHANNELS, _peft_lora_keys, t2i_adapter_keys

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
    """A complete tiny ``UNet2DConditionModel`` of ``base``: its cross-attention width, ``text_time``
    embedding and in-channels are real, its stages tiny (see ``_tiny``)."""
    cfg = {"_class_name": "UNet2DConditionModel", "_diffusers_version": _VERSION, **unet_config(base, in_channels)}
    write_json(root / "config.json", cfg)
    keys = tiny_shapes(f"unet/{base}")
    out, _, kh, kw = keys["conv_in.weight"]
    keys["conv_in.weight"] = (out, in_channels, kh, kw)
    return write_safetensors(root / _weights_name("diffusion_pytorch_model", fp16), keys, seed=seed)


def write_vae_folder(root: Path, base: str = "sd-1", *, fp16: bool = False, seed: int = 1) -> Path:
    """A complete tiny ``AutoencoderKL``: 4 latent channels (16 for flux / sd-3), the base's scaling."""
    latent = 16 if base in ("flux", "sd-3") else 4
    cfg: dict[str, Any] = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": _VERSION,
        **vae_config(latent),
        "sample_size": 1024 if base.startswith("sdxl") else 512,
        "scaling_factor": _VAE_SCALING[base],
    }
    if base.startswith("sdxl"):
        cfg["force_upcast"] = True
    if latent == 16:
        cfg["shift_factor"] = 0.1159 if base == "flux" else 0.0609
    write_json(root / "config.json", cfg)
    write_safetensors(root / _weights_name("diffusion_pytorch_model", fp16), tiny_shapes(f"vae/{latent}"), seed=seed)
    return root


def write_clip_text_folder(
    root: Path, variant: str = "L", *, fp16: bool = False, seed: int = 2, projection: bool | None = None
) -> Path:
    """A complete one-layer CLIP text tower of the variant's width (L 768, H 1024, G 1280); with a
    ``text_projection`` (``CLIPTextModelWithProjection``) for G, or when ``projection`` says so."""
    cfg = clip_text_config(variant)
    keys = tiny_shapes(f"clip/{variant}")
    if projection is not None:
        width, proj = int(cfg["hidden_size"]), int(cfg["projection_dim"])
        keys.pop("text_projection.weight", None)
        if projection:
            keys["text_projection.weight"] = (proj, width)
        cfg["architectures"] = ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"]
    write_json(
        root / "config.json",
        {**cfg, "torch_dtype": "float16" if fp16 else "float32", "transformers_version": "4.44.0"},
    )
    write_safetensors(root / _weights_name("model", fp16), keys, seed=seed)
    return root


def write_t5_folder(root: Path, *, seed: int = 3) -> Path:
    """A complete one-block T5 v1.1 encoder of T5-XXL's width (d_model 4096), tiny vocabulary."""
    write_json(root / "config.json", {**t5_config(), "torch_dtype": "bfloat16", "transformers_version": "4.44.0"})
    write_safetensors(root / "model.safetensors", tiny_shapes("t5"), seed=seed)
    return root


def byte_vocab() -> list[str]:
    """The byte-level CLIP vocabulary with no merges (CLIP_VOCAB tokens): the GPT-2 / CLIP
    reversible byte -> printable character table, each also as a word end, and the two specials;
    every text tokenizes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    return chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]


def _write_t5_tokenizer(root: Path, kind: str) -> Path:
    """A SentencePiece-style Unigram ``tokenizer.json`` over the tiny T5 vocabulary (a-z pieces)."""
    specials = ["<pad>", "</s>", "<unk>"]
    # Pieces that start a word score above lone letters, so segmentation prefers them.
    vocab: list[list[str | float]] = [[t, 0.0] for t in specials]
    vocab += [[p, -1.0 if len(p) > 1 else -3.0] for p in T5_PIECES]
    assert len(vocab) == T5_VOCAB
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(specials)
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, eos, {"Sequence": {"id": "B", "type_id": 0}}, eos],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}},
        },
        "decoder": metaspace,
        "model": {
            "type": "Unigram",
            "unk_id": 2,
            "vocab": vocab,
            "byte_fallback": False,
        },
    }
    write_json(root / "tokenizer.json", tokenizer)
    write_json(
        root / "tokenizer_config.json",
        {
            "tokenizer_class": kind,
            "model_max_length": 512,
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "extra_ids": 0,
            "additional_special_tokens": [],
        },
    )
    write_json(root / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    return root


def write_tokenizer(root: Path, kind: str = "CLIPTokenizer") -> Path:
    if kind.startswith("T5"):
        return _write_t5_tokenizer(root, kind)
    # A byte-level vocabulary with no merges: the real tokenizer code, CLIP_VOCAB tokens, any text.
    vocab = byte_vocab()
    assert len(vocab) == CLIP_VOCAB
    write_json(root / "vocab.json", {t: i for i, t in enumerate(vocab)})
    write_text(root / "merges.txt", "#version: 0.2\n")
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
    tcfg = flux_config(variant) if flux else sd3_config()
    keys = tiny_shapes(f"flux/{variant}" if flux else "sd3")
    if flux:
        index |= {
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
        }
        write_t5_folder(root / "text_encoder_2", seed=seed + 30)
        write_tokenizer(root / "tokenizer_2", "T5TokenizerFast")
    else:
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
    write_json(
        root / "transformer" / "config.json",
        {"_class_name": index["transformer"][1], "_diffusers_version": _VERSION, **tcfg},
    )
    write_safetensors(root / "transformer" / _weights_name("diffusion_pytorch_model", fp16), keys, seed=seed)
    # SD-3 uses CLIP-L with its projection (pooled 768 + bigG 1280 = the transformer's 2048).
    write_clip_text_folder(root / "text_encoder", "L", fp16=fp16, seed=seed + 10, projection=not flux)
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
    """A complete tiny ``ControlNetModel`` for the tiny UNet of ``base`` (real cross-attention width)."""
    root = Path(root)
    write_json(
        root / "config.json",
        {"_class_name": "ControlNetModel", "_diffusers_version": _VERSION, **controlnet_config(base)},
    )
    write_safetensors(root / "diffusion_pytorch_model.safetensors", tiny_shapes(f"controlnet/{base}"))
    return root


def _diffusers_t2i_name(key: str, blocks: int) -> str:
    """TencentARC ``body.<stage * blocks + i>.X`` -> diffusers ``adapter.body.<stage>.resnets.<i>.X``
    (``in_conv`` belongs to the stage)."""
    if not key.startswith("body."):
        return f"adapter.{key}"
    _, index, rest = key.split(".", 2)
    stage, i = divmod(int(index), blocks)
    return f"adapter.body.{stage}.{rest}" if rest.startswith("in_conv") else f"adapter.body.{stage}.resnets.{i}.{rest}"


def write_diffusers_t2i_adapter(root: str | Path, *, base: str = "sd-1", blocks: int = 2) -> Path:
    """A complete tiny diffusers ``T2IAdapter`` (full adapter; ``full_adapter_xl`` for SDXL)."""
    root = Path(root)
    xl = base == "sdxl"
    ch = T2I_CHANNELS
    write_json(
        root / "config.json",
        {
            "_class_name": "T2IAdapter",
            "_diffusers_version": _VERSION,
            "adapter_type": "full_adapter_xl" if xl else "full_adapter",
            "in_channels": 3,
            "channels": list(ch),
            "num_res_blocks": blocks,
            "downscale_factor": 16 if xl else 8,
        },
    )
    keys = {_diffusers_t2i_name(k, blocks): v for k, v in t2i_adapter_keys(base, blocks).items()}
    write_safetensors(root / "diffusion_pytorch_model.safetensors", keys)
    return root


def write_diffusers_clip_vision(root: str | Path, *, variant: str = "H") -> Path:
    """A complete one-layer CLIP image tower of the variant's width (ViT-L 1024, ViT-H 1280, bigG 1664)."""
    root = Path(root)
    write_json(root / "config.json", {**clip_vision_config(variant), "transformers_version": "4.44.0"})
    write_safetensors(root / "model.safetensors", tiny_shapes(f"clip-vision/{variant}"))
    return root


def write_diffusers_clip_text(root: str | Path, *, variant: str = "L") -> Path:
    return write_clip_text_folder(Path(root), variant)


def write_diffusers_t5(root: str | Path, *, d_model: int = 4096) -> Path:
    if d_model != 4096:
        raise ValueError("the tiny T5 encoder keeps T5-XXL's width: d_model must be 4096")
    return write_t5_folder(Path(root))


def write_diffusers_lora(root: str | Path, *, base: str = "sd-1") -> Path:
    root = Path(root)
    write_safetensors(root / "pytorch_lora_weights.safetensors", _peft_lora_keys(base, 4))
    return root


_FAKE_ONNX = b"not a real ONNX graph: identification reads only JSON configs and file names\n"
_TORCH_CLASS = {"unet": "UNet2DConditionModel", "vae_decoder": "AutoencoderKL", "vae_encoder": "AutoencoderKL"}


def write_onnx_pipeline(
    root: str | Path, base: str = "sd-1", *, layout: str = "diffusers", prediction_type: str | None = None
) -> Path:
    """An ONNX export of a pipeline: ``model_index.json``, a ``model.onnx`` per part (unet, text
    encoders, vae_decoder, vae_encoder), tokenizer and scheduler. The ``.onnx`` files are placeholder
    bytes: nothing here loads ONNX; identification reads only file names and JSON.

    ``layout="diffusers"``: diffusers' ``OnnxStableDiffusionPipeline`` export (parts loaded with
    ``OnnxRuntimeModel``, no part configs; SD-2's OpenCLIP tokenizer pads with "!").
    ``layout="optimum"``: ``optimum-cli export onnx``: the source pipeline's ``model_index.json``
    and a ``config.json`` beside each ``model.onnx`` (SDXL exists only in this layout)."""
    root, xl = Path(root), base.startswith("sdxl")
    if layout not in ("diffusers", "optimum") or (xl and layout == "diffusers"):
        raise ValueError(f"no {layout!r} ONNX layout for {base}")
    parts = ["unet", "vae_decoder", "vae_encoder"]
    parts += ["text_encoder_2"] if xl else []
    parts += [] if base == "sdxl-refiner" else ["text_encoder"]
    for name in parts:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "model.onnx").write_bytes(_FAKE_ONNX)
    pred = prediction_type or ("v_prediction" if base == "sd-2" else "epsilon")
    write_scheduler(root / "scheduler", "PNDMScheduler", pred)
    write_tokenizer(root / "tokenizer")
    index: dict[str, Any] = {
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }
    if layout == "diffusers":
        if base == "sd-2":
            pads = json.loads((root / "tokenizer" / "special_tokens_map.json").read_text()) | {"pad_token": "!"}
            write_json(root / "tokenizer" / "special_tokens_map.json", pads)
        index |= {name: ["diffusers", "OnnxRuntimeModel"] for name in parts}
        index["_class_name"] = "OnnxStableDiffusionPipeline"
    else:
        upcast = pred == "v_prediction"
        write_json(root / "unet" / "config.json", {**unet_config(base), "upcast_attention": upcast})
        for name in ("text_encoder", "text_encoder_2"):
            if name in parts:
                cfg = clip_text_config("G" if name == "text_encoder_2" else {"sd-2": "H"}.get(base, "L"))
                write_json(root / name / "config.json", cfg)
                index[name] = ["transformers", cfg["architectures"][0]]
        index |= {name: ["diffusers", cls] for name, cls in _TORCH_CLASS.items()}
        index["_class_name"] = _PIPELINE_CLASS[(base, "normal")]
        if base == "sdxl-refiner":
            index["requires_aesthetics_score"] = True
    write_json(root / "model_index.json", {"_diffusers_version": _VERSION, **index})
    return root
