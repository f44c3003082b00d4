"""Diffusers / transformers state dicts in the original key layouts: LDM (SD UNet, VAE, ControlNet),
OpenAI CLIP and OpenCLIP text towers, Black Forest Labs FLUX and Stability AI MMDiT transformers.

Each function is the inverse of the diffusers single-file converter for that layout: tests build a
tiny model with diffusers, write it the way original tools do, and check the loaders bring back
the same weights; ``_tiny.generate_shapes`` reads the original-layout shape tables from them.
"""

from __future__ import annotations

from typing import Any

import torch

# ----- diffusers -> original LDM key layout (inverse of diffusers' single-file converter) -----------
_RESNET = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
]


def unet_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    n = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    blocks: list[tuple[str, str, bool]] = []  # (diffusers prefix, ldm prefix, is_resnet)
    for i in range(n):
        for j in range(layers):
            idx = (layers + 1) * i + j + 1
            blocks.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0.", True))
            if down_attn[i]:
                blocks.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1.", False))
        if i < n - 1:
            blocks.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op.", False)
            )
        for j in range(layers + 1):
            idx = (layers + 1) * i + j
            blocks.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0.", True))
            if up_attn[i]:
                blocks.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1.", False))
        if i < n - 1:
            blocks.append(
                (
                    f"up_blocks.{i}.upsamplers.0.",
                    f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attn[i] else 1}.",
                    False,
                )
            )
    blocks += [
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("add_embedding.linear_1.", "label_emb.0.0.", False),  # SDXL's pooled-text + size embedding
        ("add_embedding.linear_2.", "label_emb.0.2.", False),
        ("conv_in.", "input_blocks.0.0.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
    ]
    out: dict[str, Any] = {}
    for key, value in sd.items():
        for dprefix, lprefix, is_resnet in blocks:
            if key.startswith(dprefix):
                rest = key[len(dprefix) :]
                if is_resnet:
                    for a, b in _RESNET:
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                            break
                out["model.diffusion_model." + lprefix + rest] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


def vae_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    n = len(config["block_out_channels"])
    rules: list[tuple[str, str]] = []
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
            (f"{part}.mid_block.attentions.0.group_norm.", f"{part}.mid.attn_1.norm."),
            (f"{part}.mid_block.attentions.0.to_q.", f"{part}.mid.attn_1.q."),
            (f"{part}.mid_block.attentions.0.to_k.", f"{part}.mid.attn_1.k."),
            (f"{part}.mid_block.attentions.0.to_v.", f"{part}.mid.attn_1.v."),
            (f"{part}.mid_block.attentions.0.to_out.0.", f"{part}.mid.attn_1.proj_out."),
            (f"{part}.conv_norm_out.", f"{part}.norm_out."),
        ]
    for i in range(n):
        rules.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        rules.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        rules.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
        rules.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    out: dict[str, Any] = {}
    for key, value in sd.items():
        new = key
        for a, b in rules:
            if new.startswith(a):
                new = b + new[len(a) :]
                break
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new and new.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]  # LDM attention projections are 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict[str, Any], prefix: str = "cond_stage_model.transformer.") -> dict[str, Any]:
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def openclip_to_ldm(sd: dict[str, Any], prefix: str = "conditioner.embedders.1.model.") -> dict[str, Any]:
    """A transformers CLIP text model (with projection) in OpenCLIP's layout (SD-2 / SDXL's second encoder)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out: dict[str, Any] = {
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, 0)
            out[f"{dst}attn.out_proj.{kind}"] = sd[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}ln_1.{kind}"] = sd[f"{src}layer_norm1.{kind}"]
            out[f"{dst}ln_2.{kind}"] = sd[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.c_fc.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.c_proj.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
    return out


def controlnet_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ControlNet in the original layout (``control_model.``: the UNet encoder keys,
    ``input_hint_block``, ``zero_convs``, ``middle_block_out``), the inverse of diffusers' converter."""
    extra: dict[str, Any] = {}
    unet_part: dict[str, Any] = {}
    blocks = len(config["conditioning_embedding_out_channels"]) * 2 - 2
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head == "controlnet_cond_embedding":
            part, _, tail = rest.partition(".")
            if part == "conv_in":
                extra[f"input_hint_block.0.{tail}"] = value
            elif part == "conv_out":
                extra[f"input_hint_block.{2 * blocks + 2}.{tail}"] = value
            else:  # blocks.<i>.<weight|bias>
                i, _, tail = tail.partition(".")
                extra[f"input_hint_block.{2 * int(i) + 2}.{tail}"] = value
        elif head == "controlnet_down_blocks":
            i, _, tail = rest.partition(".")
            extra[f"zero_convs.{i}.0.{tail}"] = value
        elif head == "controlnet_mid_block":
            extra[f"middle_block_out.0.{rest}"] = value
        else:
            unet_part[key] = value
    # A ControlNet is the UNet's encoder half: the up-block rules never match a key.
    as_unet = {**config, "up_block_types": list(reversed(config["down_block_types"]))}
    out = {
        k.replace("model.diffusion_model.", "control_model.", 1): v for k, v in unet_to_ldm(unet_part, as_unet).items()
    }
    out.update({"control_model." + k: v for k, v in extra.items()})
    return out


def _halves_swapped(t: Any) -> Any:
    # BFL / SAI store the final adaLN as (shift, scale); diffusers as (scale, shift).
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _renamed(sd: dict[str, Any], table: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sd.items():
        for a, b in table:
            if key.startswith(a):
                out[b + key[len(a) :]] = value
                break
        else:
            raise KeyError(f"no original name for {key}")
    return out


def flux_to_bfl(sd: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``FluxTransformer2DModel`` state dict in Black Forest Labs' layout (the inverse of
    diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``)."""
    sd = dict(sd)
    out: dict[str, Any] = {}
    doubles = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    singles = sorted({int(k.split(".")[1]) for k in sd if k.startswith("single_transformer_blocks.")})
    for kind in ("weight", "bias"):
        for i in doubles:
            d = f"transformer_blocks.{i}.attn."
            out[f"double_blocks.{i}.img_attn.qkv.{kind}"] = torch.cat([sd.pop(f"{d}to_{c}.{kind}") for c in "qkv"])
            out[f"double_blocks.{i}.txt_attn.qkv.{kind}"] = torch.cat(
                [sd.pop(f"{d}add_{c}_proj.{kind}") for c in "qkv"]
            )
        for i in singles:
            d = f"single_transformer_blocks.{i}."
            parts = [sd.pop(f"{d}attn.to_{c}.{kind}") for c in "qkv"] + [sd.pop(f"{d}proj_mlp.{kind}")]
            out[f"single_blocks.{i}.linear1.{kind}"] = torch.cat(parts)
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _halves_swapped(sd.pop(f"norm_out.linear.{kind}"))
    table = [
        ("time_text_embed.timestep_embedder.linear_1.", "time_in.in_layer."),
        ("time_text_embed.timestep_embedder.linear_2.", "time_in.out_layer."),
        ("time_text_embed.text_embedder.linear_1.", "vector_in.in_layer."),
        ("time_text_embed.text_embedder.linear_2.", "vector_in.out_layer."),
        ("time_text_embed.guidance_embedder.linear_1.", "guidance_in.in_layer."),
        ("time_text_embed.guidance_embedder.linear_2.", "guidance_in.out_layer."),
        ("context_embedder.", "txt_in."),
        ("x_embedder.", "img_in."),
        ("proj_out.", "final_layer.linear."),
    ]
    for i in doubles:
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        table += [
            (d + "norm1.linear.", b + "img_mod.lin."),
            (d + "norm1_context.linear.", b + "txt_mod.lin."),
            (d + "attn.norm_q.weight", b + "img_attn.norm.query_norm.scale"),
            (d + "attn.norm_k.weight", b + "img_attn.norm.key_norm.scale"),
            (d + "attn.norm_added_q.weight", b + "txt_attn.norm.query_norm.scale"),
            (d + "attn.norm_added_k.weight", b + "txt_attn.norm.key_norm.scale"),
            (d + "ff.net.0.proj.", b + "img_mlp.0."),
            (d + "ff.net.2.", b + "img_mlp.2."),
            (d + "ff_context.net.0.proj.", b + "txt_mlp.0."),
            (d + "ff_context.net.2.", b + "txt_mlp.2."),
            (d + "attn.to_out.0.", b + "img_attn.proj."),
            (d + "attn.to_add_out.", b + "txt_attn.proj."),
        ]
    for i in singles:
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        table += [
            (d + "norm.linear.", b + "modulation.lin."),
            (d + "attn.norm_q.weight", b + "norm.query_norm.scale"),
            (d + "attn.norm_k.weight", b + "norm.key_norm.scale"),
            (d + "proj_out.", b + "linear2."),
        ]
    return out | _renamed(sd, table)


def sd3_to_sai(sd: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``SD3Transformer2DModel`` state dict in Stability AI's MMDiT layout (the inverse of
    diffusers' ``convert_sd3_transformer_checkpoint_to_diffusers``)."""
    sd = dict(sd)
    out: dict[str, Any] = {"pos_embed": sd.pop("pos_embed.pos_embed")}
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    last = blocks[-1]
    for kind in ("weight", "bias"):
        for i in blocks:
            d, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
            out[f"{x}attn.qkv.{kind}"] = torch.cat([sd.pop(f"{d}attn.to_{q}.{kind}") for q in "qkv"])
            out[f"{c}attn.qkv.{kind}"] = torch.cat([sd.pop(f"{d}attn.add_{q}_proj.{kind}") for q in "qkv"])
            if f"{d}attn2.to_q.{kind}" in sd:
                out[f"{x}attn2.qkv.{kind}"] = torch.cat([sd.pop(f"{d}attn2.to_{q}.{kind}") for q in "qkv"])
            if i == last:  # the last context block only modulates (shift, scale)
                out[f"{c}adaLN_modulation.1.{kind}"] = _halves_swapped(sd.pop(f"{d}norm1_context.linear.{kind}"))
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _halves_swapped(sd.pop(f"norm_out.linear.{kind}"))
    table = [
        ("pos_embed.proj.", "x_embedder.proj."),
        ("time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
        ("time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
        ("time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0."),
        ("time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2."),
        ("context_embedder.", "context_embedder."),
        ("proj_out.", "final_layer.linear."),
    ]
    for i in blocks:
        d, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        table += [
            (d + "attn.norm_q.", x + "attn.ln_q."),
            (d + "attn.norm_k.", x + "attn.ln_k."),
            (d + "attn.norm_added_q.", c + "attn.ln_q."),
            (d + "attn.norm_added_k.", c + "attn.ln_k."),
            (d + "attn2.norm_q.", x + "attn2.ln_q."),
            (d + "attn2.norm_k.", x + "attn2.ln_k."),
            (d + "attn.to_out.0.", x + "attn.proj."),
            (d + "attn.to_add_out.", c + "attn.proj."),
            (d + "attn2.to_out.0.", x + "attn2.proj."),
            (d + "norm1.linear.", x + "adaLN_modulation.1."),
            (d + "norm1_context.linear.", c + "adaLN_modulation.1."),
            (d + "ff.net.0.proj.", x + "mlp.fc1."),
            (d + "ff.net.2.", x + "mlp.fc2."),
            (d + "ff_context.net.0.proj.", c + "mlp.fc1."),
            (d + "ff_context.net.2.", c + "mlp.fc2."),
        ]
    return out | _renamed(sd, table)


__all__ = [
    "clip_to_ldm",
    "controlnet_to_ldm",
    "flux_to_bfl",
    "openclip_to_ldm",
    "sd3_to_sai",
    "unet_to_ldm",
    "vae_to_ldm",
]
