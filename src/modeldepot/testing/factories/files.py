"""Tiny but faithful model files of every kind modeldepot identifies, written without torch.

Each model writer produces a complete model that the loaders load exactly: real key names, the real
shapes on the keys that decide what the file is (cross-attention widths, ``label_emb`` widths, UNet
in-channels, latent channels, CLIP / T5 widths), and a shrunken architecture elsewhere (see
``_tiny.py``). The exceptions, identification-only headers that do not load, are opt-in
(``write_sd3_checkpoint(complete=False)``, ``write_t5_encoder(complete=False)``, the ``flux`` style of
``write_controlnet``) or, for ``write_clip_vision``, the default: identification needs its real depth.
A path ending ``.ckpt/.pt/.pth/.bin`` gets a PyTorch zip pickle, anything else a safetensors file.
Writers return the path they wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldepot.testing.factories._tiny import shapes as tiny_shapes
from modeldepot.testing.factories._writers import (
    Shape,
    write_safetensors,
    write_text,
    write_torch_pickle,
    write_weights,
)

_CTX = {"sd-1": 768, "sd-2": 1024, "sdxl": 2048, "sdxl-refiner": 1280}
_MS_ARCH = {
    "sd-1": "stable-diffusion-v1",
    "sd-2": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
    "sdxl-refiner": "stable-diffusion-xl-v1-refiner",
    "sd-3": "stable-diffusion-v3-medium",
    "flux": "Flux.1-dev",
}
_KOHYA_BASE = {"sd-1": "sd_v1", "sd-2": "sd_v2_768_v", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
_IN_CH = {"normal": 4, "inpaint": 9, "depth": 5}


def _modelspec(arch: str, title: str, **more: str) -> dict[str, str]:
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        **more,
    }


def _vae_keys(latent: int = 4, prefix: str = "") -> dict[str, Shape]:
    p = prefix
    keys: dict[str, Shape] = {
        f"{p}encoder.conv_in.weight": (128, 3, 3, 3),
        f"{p}encoder.conv_in.bias": (128,),
        f"{p}encoder.down.0.block.0.norm1.weight": (128,),
        f"{p}encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        f"{p}encoder.norm_out.weight": (512,),
        f"{p}encoder.conv_out.weight": (2 * latent, 512, 3, 3),
        f"{p}decoder.conv_in.weight": (512, latent, 3, 3),
        f"{p}decoder.conv_in.bias": (512,),
        f"{p}decoder.up.3.block.0.norm1.weight": (512,),
        f"{p}decoder.conv_out.weight": (3, 128, 3, 3),
    }
    if latent == 4:  # SD/SDXL VAEs keep the quant convs; the 16-channel ones dropped them
        keys[f"{p}quant_conv.weight"] = (8, 8, 1, 1)
        keys[f"{p}post_quant_conv.weight"] = (4, 4, 1, 1)
    return keys


def _clip_text_keys(width: int, layers: int, prefix: str = "") -> dict[str, Shape]:
    p = prefix + "text_model."
    keys: dict[str, Shape] = {
        f"{p}embeddings.position_embedding.weight": (77, width),
        f"{p}encoder.layers.0.self_attn.q_proj.weight": (width, width),
        f"{p}final_layer_norm.weight": (width,),
    }
    for i in range(layers):
        keys[f"{p}encoder.layers.{i}.layer_norm1.weight"] = (width,)
    return keys


# -- main checkpoints --------------------------------------------------------------------------------
def _prefixed(prefix: str, keys: dict[str, Shape]) -> dict[str, Shape]:
    return {prefix + k: v for k, v in keys.items()}


def _tiny_ldm_unet(base: str, in_ch: int = 4) -> dict[str, Shape]:
    """The tiny checkpoint UNet of ``base`` (two 32/64-channel stages, two layers each) in the LDM
    layout; the keys identification reads keep their real widths (context, ``label_emb``, in_channels)."""
    keys = _prefixed("model.diffusion_model.", tiny_shapes(f"ldm-unet/{base}"))
    out_ch, _, kh, kw = keys["model.diffusion_model.input_blocks.0.0.weight"]
    keys["model.diffusion_model.input_blocks.0.0.weight"] = (out_ch, in_ch, kh, kw)
    return keys


def _tiny_ldm_vae(latent: int = 4) -> dict[str, Shape]:
    return _prefixed("first_stage_model.", tiny_shapes(f"ldm-vae/{latent}"))


def _tiny_openclip(variant: str, prefix: str, *, penultimate: bool = False) -> dict[str, Shape]:
    """A tiny OpenCLIP text tower (ViT-H or bigG width) in its original layout. SD-2 checkpoints carry
    one more residual block than the encoder uses (``penultimate``: diffusers drops the last one,
    with the projection, as for ``resblocks.23`` of the real ViT-H)."""
    keys = tiny_shapes(f"openclip/{variant}")
    if penultimate:
        last = max(int(k.split(".")[2]) for k in keys if k.startswith("transformer.resblocks."))
        stem = f"transformer.resblocks.{last}."
        keys |= {
            f"transformer.resblocks.{last + 1}." + k[len(stem) :]: v for k, v in keys.items() if k.startswith(stem)
        }
        width = keys["ln_final.weight"][0]
        keys["text_projection"] = (width, width)
    return _prefixed(prefix, keys)


def write_sd1_checkpoint(
    path: str | Path, *, inpaint: bool = False, with_metadata: bool = False, seed: int | None = None
) -> Path:
    """A complete tiny SD-1.x all-in-one checkpoint (UNet + VAE + CLIP-L), ``.safetensors`` or ``.ckpt``."""
    keys = _tiny_ldm_unet("sd-1", 9 if inpaint else 4)
    keys |= _tiny_ldm_vae()
    keys |= _prefixed("cond_stage_model.transformer.", tiny_shapes("clip/L"))
    arch = "stable-diffusion-v1" + ("-inpainting" if inpaint else "")
    meta = _modelspec(arch, "tiny sd1", **{"modelspec.resolution": "512x512"}) if with_metadata else None
    return write_weights(path, keys, metadata=meta, seed=seed, top={"global_step": 840000, "epoch": 6})


def write_sd2_checkpoint(
    path: str | Path,
    *,
    variant: str = "normal",
    global_step: int | None = None,
    prediction_type: str | None = None,
    seed: int | None = None,
) -> Path:
    """A complete tiny SD-2.x checkpoint (UNet + VAE + OpenCLIP-H text encoder). ``prediction_type``
    writes it as ModelSpec metadata; ``global_step`` is stored only in pickle checkpoints (220000 =
    the 512-px epsilon base). The depth variant also carries a (stub) MiDaS key, as the releases do
    a full MiDaS that no submodel reads."""
    keys = _tiny_ldm_unet("sd-2", _IN_CH[variant])
    keys |= _tiny_ldm_vae()
    keys |= _tiny_openclip("H", "cond_stage_model.model.", penultimate=True)
    if variant == "depth":
        keys["depth_model.model.scratch.output_conv.0.weight"] = (128, 256, 3, 3)
    meta = None
    if prediction_type is not None:
        meta = _modelspec("stable-diffusion-v2", "tiny sd2", **{"modelspec.prediction_type": prediction_type})
    top = {"global_step": global_step} if global_step is not None else {}
    return write_weights(path, keys, metadata=meta, seed=seed, top=top)


def write_sdxl_checkpoint(
    path: str | Path,
    *,
    inpaint: bool = False,
    v_pred: bool = False,
    edm_vpred: bool = False,
    edm: bool = False,
    merged_lora: bool = False,
    with_metadata: bool = False,
    seed: int | None = None,
) -> Path:
    """A complete tiny SDXL base checkpoint (UNet + VAE + CLIP-L + OpenCLIP-bigG) with optional
    prediction markers (scalars outside every submodel, as trainers leave them) and a merged LoRA's
    leftover ``lora_*`` keys."""
    keys = _tiny_ldm_unet("sdxl", 9 if inpaint else 4)
    keys |= _tiny_ldm_vae()
    keys |= _prefixed("conditioner.embedders.0.transformer.", tiny_shapes("clip/L"))
    keys |= _tiny_openclip("G", "conditioner.embedders.1.model.")
    if v_pred:
        keys["v_pred"] = ()
    if edm_vpred:
        keys["edm_vpred.sigma_max"] = ()
        keys["edm_vpred.sigma_min"] = ()
    if edm:
        keys["edm_mean"] = (1, 4, 1, 1)
        keys["edm_std"] = (1, 4, 1, 1)
    if merged_lora:
        keys |= _kohya_lora_keys("sdxl", 8)
    meta = _modelspec(_MS_ARCH["sdxl"], "tiny sdxl", **{"modelspec.resolution": "1024x1024"}) if with_metadata else None
    return write_weights(path, keys, metadata=meta, seed=seed)


def write_sdxl_refiner_checkpoint(path: str | Path, *, seed: int | None = None) -> Path:
    """A complete tiny SDXL-refiner checkpoint: UNet (1280-wide context, 2560-wide ``label_emb``), VAE
    and the OpenCLIP-bigG encoder at ``conditioner.embedders.0.model.``."""
    keys = _tiny_ldm_unet("sdxl-refiner")
    keys |= _tiny_ldm_vae()
    keys |= _tiny_openclip("G", "conditioner.embedders.0.model.")
    return write_weights(path, keys, seed=seed)


def _sd3_header_keys(size: str) -> dict[str, Shape]:
    depth = 38 if size == "large" else 24
    hidden = depth * 64
    p = "model.diffusion_model."
    keys: dict[str, Shape] = {
        f"{p}x_embedder.proj.weight": (hidden, 16, 2, 2),
        f"{p}t_embedder.mlp.0.weight": (hidden, 256),
        f"{p}final_layer.linear.weight": (64, hidden),
    }
    for b in (0, depth - 1):
        keys[f"{p}joint_blocks.{b}.context_block.attn.qkv.weight"] = (3 * hidden, hidden)
        keys[f"{p}joint_blocks.{b}.x_block.attn.qkv.bias"] = (3 * hidden,)
    keys |= _vae_keys(16, "first_stage_model.")
    keys |= _clip_text_keys(768, 12, "text_encoders.clip_l.transformer.")
    return keys


def write_sd3_checkpoint(
    path: str | Path, *, size: str = "medium", complete: bool = True, seed: int | None = None
) -> Path:
    """SD-3 all-in-one checkpoint. By default complete and tiny: a two-head, one-block MMDiT
    (``model.diffusion_model.``, Stability AI's layout), the 16-channel VAE and CLIP-L, CLIP-bigG and
    T5-XXL-wide encoders under ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.``; its depth
    (``x_embedder`` width / 64) is no released size. ``complete=False`` writes an identification-only
    header of the ``size`` medium (depth 24) or large (depth 38) MMDiT: full-size deciding shapes,
    most tensors left out (it does not load)."""
    if not complete:
        return write_weights(path, _sd3_header_keys(size), seed=seed)
    keys = _prefixed("model.diffusion_model.", tiny_shapes("sai-sd3"))
    keys |= _tiny_ldm_vae(16)
    keys |= _prefixed("text_encoders.clip_l.transformer.", tiny_shapes("clip/L"))
    keys |= _prefixed("text_encoders.clip_g.transformer.", tiny_shapes("clip/G"))
    keys |= _prefixed("text_encoders.t5xxl.transformer.", tiny_shapes("t5"))
    return write_weights(path, keys, seed=seed)


def write_flux_checkpoint(path: str | Path, *, variant: str = "dev", prefix: str = "", seed: int | None = None) -> Path:
    """A complete tiny FLUX.1 transformer in Black Forest Labs' layout (one double and one single
    block, two 128-wide heads, the real 4096-wide T5 context and 768-wide pooled CLIP input).
    ``variant`` dev / schnell (no ``guidance_in``) / dev_fill (384 input channels); ``prefix`` e.g.
    ``model.diffusion_model.`` for ComfyUI all-in-one files."""
    return write_weights(path, _prefixed(prefix, tiny_shapes(f"bfl-flux/{variant}")), seed=seed)


# -- LoRA --------------------------------------------------------------------------------------------
def _kohya_lora_keys(base: str, rank: int) -> dict[str, Shape]:
    ctx = _CTX.get(base, 768)
    if base == "flux":
        mods = {
            "lora_unet_double_blocks_0_img_attn_proj": (3072, 3072),
            "lora_unet_single_blocks_0_linear1": (21504, 3072),
        }
    elif base == "sdxl":
        blk = "lora_unet_input_blocks_4_1_transformer_blocks_0_"
        mods = {
            blk + "attn2_to_k": (640, ctx),
            blk + "attn1_to_q": (640, 640),
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
        }
    else:
        blk = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"
        mods = {
            blk + "attn2_to_k": (320, ctx),
            blk + "attn2_to_v": (320, ctx),
            blk + "attn1_to_q": (320, 320),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (ctx, ctx),
        }
    keys: dict[str, Shape] = {}
    for m, (out, inp) in mods.items():
        keys |= {f"{m}.lora_down.weight": (rank, inp), f"{m}.lora_up.weight": (out, rank), f"{m}.alpha": ()}
    return keys


def _peft_lora_keys(base: str, rank: int, prefix: str = "unet.") -> dict[str, Shape]:
    if base == "flux":
        mods = {
            "transformer.single_transformer_blocks.0.attn.to_q": (3072, 3072),
            "transformer.transformer_blocks.0.attn.to_k": (3072, 3072),
        }
    else:
        ctx = _CTX[base]
        blk = (
            "down_blocks.1.attentions.0.transformer_blocks.0."
            if base == "sdxl"
            else "down_blocks.0.attentions.0.transformer_blocks.0."
        )
        ch = 640 if base == "sdxl" else 320
        mods = {f"{prefix}{blk}attn2.to_k": (ch, ctx), f"{prefix}{blk}attn1.to_q": (ch, ch)}
    keys: dict[str, Shape] = {}
    for m, (out, inp) in mods.items():
        keys |= {f"{m}.lora_A.weight": (rank, inp), f"{m}.lora_B.weight": (out, rank)}
    return keys


def _lycoris_keys(base: str, style: str, rank: int) -> dict[str, Shape]:
    ctx = _CTX[base]
    ch = 640 if base == "sdxl" else 320
    blk = (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_"
        if base == "sdxl"
        else "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"
    )
    keys: dict[str, Shape] = {}
    for m, (out, inp) in {blk + "attn2_to_k": (ch, ctx), blk + "attn1_to_q": (ch, ch)}.items():
        if style == "loha":
            keys |= {
                f"{m}.hada_w1_a": (out, rank),
                f"{m}.hada_w1_b": (rank, inp),
                f"{m}.hada_w2_a": (out, rank),
                f"{m}.hada_w2_b": (rank, inp),
            }
        else:  # LoKr: W = kron(w1, w2); in-dim = w1.shape[1] * w2.shape[1]
            keys |= {f"{m}.lokr_w1": (4, 8), f"{m}.lokr_w2": (out // 4, inp // 8)}
        keys[f"{m}.alpha"] = ()
    return keys


def write_lora(
    path: str | Path,
    *,
    base: str = "sd-1",
    style: str = "kohya",
    rank: int = 4,
    with_metadata: bool = False,
    modelspec: bool = False,
    seed: int | None = None,
) -> Path:
    """A single-file LoRA. ``style``: kohya, peft, loha, lokr. ``base``: sd-1, sd-2, sdxl, flux.
    ``with_metadata`` writes kohya ``ss_*`` keys; ``modelspec`` writes ``modelspec.architecture``."""
    if style == "kohya":
        keys = _kohya_lora_keys(base, rank)
    elif style == "peft":
        keys = _peft_lora_keys(base, rank)
    elif style in ("loha", "lokr"):
        keys = _lycoris_keys(base, style, rank)
    else:
        raise ValueError(f"unknown LoRA style {style!r}")
    meta: dict[str, str] = {}
    if with_metadata:
        module = {"loha": "lycoris.kohya", "lokr": "lycoris.kohya"}.get(
            style, "networks.lora_flux" if base == "flux" else "networks.lora"
        )
        meta |= {
            "ss_network_module": module,
            "ss_base_model_version": _KOHYA_BASE.get(base, base),
            "ss_network_dim": str(rank),
            "ss_network_alpha": "1.0",
        }
    if modelspec:
        meta |= _modelspec(f"{_MS_ARCH[base]}/lora", "tiny lora")
    return write_weights(path, keys, metadata=meta or None, seed=seed, wrap=None)


def write_sdxl_lora(path: str | Path, *, with_metadata: bool = False) -> Path:
    return write_lora(path, base="sdxl", with_metadata=with_metadata)


def write_flux_lora(path: str | Path, *, style: str = "kohya") -> Path:
    return write_lora(path, base="flux", style=style)


# -- components and adapters -----------------------------------------------------------------------------
def write_vae(path: str | Path, *, base: str = "sd-1", with_metadata: bool = False, seed: int | None = None) -> Path:
    """A complete tiny single-file VAE in the original (LDM) key layout: 4 latent channels for
    sd-1/sd-2/sdxl, 16 (and no quant convs) for flux/sd-3. Structure alone cannot tell SD from SDXL
    VAEs: pass ``with_metadata`` (ModelSpec ``.../vae``) or put ``xl`` in the file name."""
    keys = tiny_shapes(f"ldm-vae/{16 if base in ('flux', 'sd-3') else 4}")
    meta = _modelspec(f"{_MS_ARCH[base]}/vae", "tiny vae") if with_metadata else None
    return write_weights(path, keys, metadata=meta, seed=seed, wrap=None)


def write_controlnet(path: str | Path, *, base: str = "sd-1", style: str = "ldm") -> Path:
    """ControlNet: ``ldm`` (``control_model.*`` / ``input_hint_block``) or ``diffusers`` key names are
    complete tiny ControlNets of the tiny checkpoint UNet (widths 32/64, real context width);
    ``flux`` writes an identification-only header of an InstantX FLUX ControlNet (full-size deciding
    shapes, most tensors left out: it does not load)."""
    if style == "flux":
        keys: dict[str, Shape] = {
            "controlnet_blocks.0.weight": (3072, 3072),
            "controlnet_x_embedder.weight": (3072, 64),
            "transformer_blocks.0.attn.norm_added_k.weight": (128,),
        }
    elif style == "diffusers":
        keys = tiny_shapes(f"controlnet-ckpt/{base}")
    else:
        keys = tiny_shapes(f"ldm-controlnet/{base}")
    return write_weights(path, keys, wrap=None)


def _ip_adapter_tree(base: str, plus: bool) -> dict[str, dict[str, Shape]]:
    ctx = _CTX[base]
    if plus:
        proj: dict[str, Shape] = {
            "latents": (1, 16, ctx),
            "proj_in.weight": (ctx, 1280),
            "proj_out.weight": (ctx, ctx),
            "norm_out.weight": (ctx,),
        }
    else:
        enc = 1280 if base == "sdxl" else 1024
        proj = {"proj.weight": (4 * ctx, enc), "proj.bias": (4 * ctx,), "norm.weight": (ctx,), "norm.bias": (ctx,)}
    ch = 640 if base == "sdxl" else 320
    ip: dict[str, Shape] = {f"{i}.to_{kv}_ip.weight": (ch, ctx) for i in (1, 3) for kv in ("k", "v")}
    return {"image_proj": proj, "ip_adapter": ip}


def write_ip_adapter(path: str | Path, *, base: str = "sd-1", plus: bool = False) -> Path:
    """IP-Adapter: ``.bin`` holds the nested ``{"image_proj": ..., "ip_adapter": ...}`` pickle."""
    tree = _ip_adapter_tree(base, plus)
    path = Path(path)
    if path.suffix in (".bin", ".pt", ".ckpt", ".pth"):
        return write_torch_pickle(path, tree)
    flat = {f"{group}.{k}": s for group, items in tree.items() for k, s in items.items()}
    return write_safetensors(path, flat)


def write_ip_adapter_folder(root: str | Path, *, base: str = "sd-1") -> Path:
    """InvokeAI's IP-Adapter folder: ``ip_adapter.bin`` + ``image_encoder.txt``."""
    root = Path(root)
    write_torch_pickle(root / "ip_adapter.bin", _ip_adapter_tree(base, False))
    write_text(root / "image_encoder.txt", "InvokeAI/ip_adapter_sd_image_encoder\n")
    return root


T2I_CHANNELS = (32, 64, 64, 64)


def t2i_adapter_keys(base: str = "sd-1", blocks: int = 2) -> dict[str, Shape]:
    """TencentARC key names and shapes of a tiny full T2I-Adapter (``body.<stage * blocks + i>``)."""
    ch = T2I_CHANNELS
    keys: dict[str, Shape] = {"conv_in.weight": (ch[0], 768 if base == "sdxl" else 192, 3, 3), "conv_in.bias": (ch[0],)}
    for stage, width in enumerate(ch):
        before = ch[max(stage - 1, 0)]
        for i in range(blocks):
            b = f"body.{stage * blocks + i}."
            if i == 0 and before != width:
                keys |= {b + "in_conv.weight": (width, before, 1, 1), b + "in_conv.bias": (width,)}
            keys |= {
                b + "block1.weight": (width, width, 3, 3),
                b + "block1.bias": (width,),
                b + "block2.weight": (width, width, 1, 1),
                b + "block2.bias": (width,),
            }
    return keys


def write_t2i_adapter(path: str | Path, *, base: str = "sd-1", blocks: int = 2) -> Path:
    """A complete tiny single-file full T2I-Adapter in TencentARC's layout; conv_in's input width
    encodes the pixel-unshuffle factor (3 x 8 x 8 for SD-1/2, 3 x 16 x 16 for SDXL)."""
    return write_weights(path, t2i_adapter_keys(base, blocks), wrap=None)


def write_textual_inversion(path: str | Path, *, base: str = "sd-1", vectors: int = 2) -> Path:
    """Embedding: ``.pt`` = A1111 pickle (string_to_param), ``.safetensors`` = emb_params (SD-1/2)
    or clip_l + clip_g (SDXL), ``.bin`` = diffusers ``{"<token>": [dim]}``."""
    path = Path(path)
    width = _CTX.get(base, 768)
    if path.suffix == ".pt":
        tree: dict[str, Any] = {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": (vectors, width)},
            "name": path.stem,
            "step": 3000,
            "sd_checkpoint": "cc6cb27103",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        }
        return write_torch_pickle(path, tree)
    if path.suffix == ".bin":
        return write_torch_pickle(path, {"<tiny-token>": (width,)})
    keys: dict[str, Shape] = (
        {"clip_l": (vectors, 768), "clip_g": (vectors, 1280)} if base == "sdxl" else {"emb_params": (vectors, width)}
    )
    return write_safetensors(path, keys)


def write_embedding_folder(root: str | Path, *, base: str = "sd-1") -> Path:
    root = Path(root)
    write_torch_pickle(root / "learned_embeds.bin", {"<tiny-token>": (_CTX.get(base, 768),)})
    return root


_CLIP_VISION = {"L": (24, 1024, 768), "H": (32, 1280, 1024), "G": (48, 1664, 1280)}


def write_clip_vision(path: str | Path, *, variant: str = "H", complete: bool = True) -> Path:
    """CLIP vision tower (HF layout) of ViT-L / H / bigG width (1024 / 1280 / 1664).

    By default a complete tiny one-layer tower with the variant's width and projection: it loads,
    and identification names the variant from the width (a shortened tower). ``complete=False``
    writes an identification-only header at the family's real depth (24 / 32 / 48 layers; most
    tensors left out, so it does not load), for the depth-and-width rule."""
    if complete:
        return write_weights(path, tiny_shapes(f"clip-vision/{variant}"), wrap=None)
    depth, width, proj = _CLIP_VISION[variant]
    keys: dict[str, Shape] = {
        "vision_model.embeddings.patch_embedding.weight": (width, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, width),
        "vision_model.post_layernorm.weight": (width,),
        "visual_projection.weight": (proj, width),
    }
    for i in range(depth):
        keys[f"vision_model.encoder.layers.{i}.layer_norm1.weight"] = (width,)
    return write_weights(path, keys, wrap=None)


_CLIP_TEXT = {"L": (768, 12), "H": (1024, 24), "G": (1280, 32)}


def write_clip_text_encoder(path: str | Path, *, variant: str = "L") -> Path:
    """A complete one-layer CLIP text encoder file (HF names) of the variant's width: L 768,
    H 1024, G 1280 (with ``text_projection``)."""
    return write_weights(path, tiny_shapes(f"clip/{variant}"), wrap=None)


def _t5_keys(d_model: int, blocks: int) -> dict[str, Shape]:
    keys: dict[str, Shape] = {
        "encoder.final_layer_norm.weight": (d_model,),
        "encoder.block.0.layer.0.SelfAttention.k.weight": (64, d_model),
    }
    for i in range(blocks):
        keys[f"encoder.block.{i}.layer.0.layer_norm.weight"] = (d_model,)
        keys[f"encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"] = (8, d_model)
    return keys


def _tiny_t5_keys(d_model: int, blocks: int) -> dict[str, Shape]:
    """The tiny T5 v1.1 encoder (two 64-wide heads, d_ff 64, tiny vocabulary) at width ``d_model``."""
    table = tiny_shapes("t5")
    keys: dict[str, Shape] = {}
    for name, shape in table.items():
        wide = tuple(d_model if d == 4096 else d for d in shape)
        if name.startswith("encoder.block.0."):
            for i in range(blocks):
                if i and "relative_attention_bias" in name:
                    continue  # only the first block holds the position buckets
                keys[f"encoder.block.{i}." + name[len("encoder.block.0.") :]] = wide
        else:
            keys[name] = wide
    return keys


def write_t5_encoder(
    path: str | Path, *, d_model: int = 4096, blocks: int | None = None, complete: bool = True
) -> Path:
    """T5 v1.1 encoder (T5-XXL width by default; decisive: ``final_layer_norm`` width). Complete and
    tiny by default (``blocks`` 1: two heads, d_ff 64, a tiny vocabulary at width ``d_model``);
    ``complete=False`` writes an identification-only header of ``blocks`` (default 24) blocks."""
    if not complete:
        return write_weights(path, _t5_keys(d_model, 24 if blocks is None else blocks), wrap=None)
    return write_weights(path, _tiny_t5_keys(d_model, 1 if blocks is None else blocks), wrap=None)


def _rdb_convs(nf: int, gc: int) -> list[Shape]:
    """The five 3x3 convs of a residual dense block: each sees the input and all previous outputs."""
    convs: list[Shape] = [(gc, nf + i * gc, 3, 3) for i in range(4)]
    return [*convs, (nf, nf + 4 * gc, 3, 3)]


def write_esrgan(
    path: str | Path, *, layout: str = "new", num_blocks: int = 3, scale: int = 4, nf: int = 64, gc: int = 32
) -> Path:
    """A complete ESRGAN-family upscaler (RRDBNet, ``nf`` features, ``gc`` growth channels): ``old``
    (model.N.sub...), ``new`` (Real-ESRGAN, in ``params_ema``) or ``bsrgan`` (RRDB_trunk). A ``.pth``
    path gets a torch pickle like the released files."""
    keys: dict[str, Shape] = {}
    sq = (nf, nf, 3, 3)

    def conv(name: str, shape: Shape) -> None:
        keys[f"{name}.weight"] = shape
        keys[f"{name}.bias"] = (shape[0],)

    if layout == "old":
        conv("model.0", (nf, 3, 3, 3))
        for b in range(num_blocks):
            for r in (1, 2, 3):
                for c, shape in enumerate(_rdb_convs(nf, gc), 1):
                    conv(f"model.1.sub.{b}.RDB{r}.conv{c}.0", shape)
        conv(f"model.1.sub.{num_blocks}", sq)
        idx = 3
        for _ in range({4: 2, 2: 1, 1: 0}[scale]):
            conv(f"model.{idx}", sq)
            idx += 3
        conv(f"model.{idx - 1}", sq)
        conv(f"model.{idx + 1}", (3, nf, 3, 3))
    else:
        bsr = layout == "bsrgan"
        body, rdb = ("RRDB_trunk", "RDB") if bsr else ("body", "rdb")
        conv("conv_first", (nf, {4: 3, 2: 12, 1: 48}[scale] if layout == "new" else 3, 3, 3))
        for b in range(num_blocks):
            for r in (1, 2, 3):
                for c, shape in enumerate(_rdb_convs(nf, gc), 1):
                    conv(f"{body}.{b}.{rdb}{r}.conv{c}", shape)
        conv("trunk_conv" if bsr else "conv_body", sq)
        conv("upconv1" if bsr else "conv_up1", sq)
        conv("upconv2" if bsr else "conv_up2", sq)
        conv("HRconv" if bsr else "conv_hr", sq)
        conv("conv_last", (3, nf, 3, 3))
    return write_weights(path, keys, wrap="params_ema" if layout == "new" else None)
