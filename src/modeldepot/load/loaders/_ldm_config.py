"""Architectures of original-layout (LDM / SGM / OpenCLIP) tensors: a family config updated with what the shapes show.

A single-file checkpoint carries no config. The shipped diffusers / transformers config of its family
describes the released models; fine-tunes keep it, but pruned, distilled and test-sized checkpoints do
not. Everything that shows in a tensor shape (widths, depths, layer counts, context width, vocabulary,
positions, projections) is read from the file; only what no shape shows comes from the family config:
attention head counts (kept when the widths are the family's, otherwise the family's head count when
it divides every width, else 64-wide heads as SD-2/SDXL/CLIP use), norm groups, activations, epsilons.
For a released model the result is the family config unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_HEAD_DIM = 64


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return None if t is None else tuple(int(d) for d in t.shape)


def _indices(sd: Mapping[str, Any], stem: str) -> list[int]:
    """Sorted distinct ``N`` of the keys ``stem + "N.…"``."""
    found = set()
    for k in sd:
        if k.startswith(stem):
            head = k[len(stem) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _heads(config: Mapping[str, Any], widths: list[int]) -> int | list[int]:
    current = config.get("attention_head_dim")
    if isinstance(current, int) and all(w % current == 0 for w in widths):
        return current  # SD-1's fixed head count (diffusers' legacy name for it)
    return [max(1, w // _HEAD_DIM) for w in widths]


def unet_config_from_ldm(config: Mapping[str, Any], sd: Mapping[str, Any], p: str = "") -> dict[str, Any]:
    """The ``UNet2DConditionModel`` / ``ControlNetModel`` config of the LDM-layout UNet under ``p``
    (``input_blocks`` / ``middle_block`` / ``out`` / ``time_embed`` / ``label_emb``)."""
    out = dict(config)
    conv_in = _shape(sd, p + "input_blocks.0.0.weight")
    ids = _indices(sd, p + "input_blocks.")
    if conv_in is None or len(ids) < 2:
        return out
    downs = [i for i in ids if p + f"input_blocks.{i}.0.op.weight" in sd]
    layers = downs[0] - 1 if downs else ids[-1]
    widths: list[int] = []
    depths: list[int] = []
    for level in range(len(downs) + 1):
        first = 1 + level * (layers + 1)
        resnet = _shape(sd, p + f"input_blocks.{first}.0.out_layers.3.weight")
        if resnet is None:
            return dict(config)  # not the layout this reads: the family config as it is
        widths.append(resnet[0])
        depths.append(len(_indices(sd, p + f"input_blocks.{first}.1.transformer_blocks.")))
    out["in_channels"] = conv_in[1]
    out["layers_per_block"] = layers
    out["down_block_types"] = ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths]
    if "up_block_types" in config:
        out["up_block_types"] = ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)]
    # diffusers' mid block takes the last entry's depth: a last stage without attention carries it
    mid = len(_indices(sd, p + "middle_block.1.transformer_blocks.")) or 1
    out["transformer_layers_per_block"] = [d or 1 for d in depths[:-1]] + [depths[-1] or mid]
    if list(widths) != list(config.get("block_out_channels") or []):
        out["attention_head_dim"] = _heads(config, widths)
        if config.get("num_attention_heads") is not None:
            out["num_attention_heads"] = out["attention_head_dim"]
    out["block_out_channels"] = widths
    to_k = next((k for k in sd if k.startswith(p + "input_blocks.") and k.endswith(".attn2.to_k.weight")), None)
    if to_k is not None:
        out["cross_attention_dim"] = int(sd[to_k].shape[1])
    proj_in = next((k for k in sd if k.startswith(p + "input_blocks.") and k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        out["use_linear_projection"] = sd[proj_in].dim() == 2
    final = _shape(sd, p + "out.2.weight")
    if final is not None and "out_channels" in config:
        out["out_channels"] = final[0]
    label = _shape(sd, p + "label_emb.0.0.weight")
    if label is not None:
        out["projection_class_embeddings_input_dim"] = label[1]
    hint = _shape(sd, p + "input_hint_block.0.weight")
    if hint is not None:  # ControlNet: conv_in, then (same-width conv, strided conv) per stage, conv_out
        steps = _indices(sd, p + "input_hint_block.")
        out["conditioning_channels"] = hint[1]
        channels = [hint[0]]
        for i in steps[2:-1:2]:  # the strided convs: input_hint_block.4, 8, 12, ...
            channels.append(int(sd[p + f"input_hint_block.{i}.weight"].shape[0]))
        out["conditioning_embedding_out_channels"] = channels
    return out


def _clip_update(config: Mapping[str, Any], width: int, layers: int, **shown: int) -> dict[str, Any]:
    out = dict(config)
    if int(config.get("hidden_size") or 0) != width:
        out["num_attention_heads"] = max(1, width // _HEAD_DIM)
    out.update(hidden_size=width, num_hidden_layers=layers, **shown)
    return out


def openai_clip_text_config(config: Mapping[str, Any], sd: Mapping[str, Any], p: str) -> dict[str, Any]:
    """The ``CLIPTextConfig`` of HF-layout CLIP text tensors under ``p + "text_model."``."""
    t = p + "text_model."
    emb = _shape(sd, t + "embeddings.token_embedding.weight")
    fc1 = _shape(sd, t + "encoder.layers.0.mlp.fc1.weight")
    pos = _shape(sd, t + "embeddings.position_embedding.weight")
    if emb is None or fc1 is None or pos is None:
        return dict(config)
    shown = {"vocab_size": emb[0], "intermediate_size": fc1[0], "max_position_embeddings": pos[0]}
    proj = _shape(sd, p + "text_projection.weight")
    if proj is not None:
        shown["projection_dim"] = proj[0]
    return _clip_update(config, emb[1], len(_indices(sd, t + "encoder.layers.")), **shown)


def openclip_text_config(config: Mapping[str, Any], sd: Mapping[str, Any], p: str) -> dict[str, Any]:
    """The ``CLIPTextConfig`` of OpenCLIP-layout tensors under ``p`` (``token_embedding``,
    ``transformer.resblocks.N``, ``ln_final``, ``text_projection``)."""
    emb = _shape(sd, p + "token_embedding.weight")
    fc = _shape(sd, p + "transformer.resblocks.0.mlp.c_fc.weight")
    pos = _shape(sd, p + "positional_embedding")
    if emb is None or fc is None or pos is None:
        return dict(config)
    layers = len(_indices(sd, p + "transformer.resblocks."))
    shown = {"vocab_size": emb[0], "intermediate_size": fc[0], "max_position_embeddings": pos[0]}
    proj = _shape(sd, p + "text_projection")
    if proj is not None:
        shown["projection_dim"] = proj[1]
    return _clip_update(config, emb[1], layers, **shown)


def last_openclip_block(sd: Mapping[str, Any], p: str) -> list[str]:
    """The keys of the last residual block and the projection (what an SD-2 text encoder leaves out)."""
    blocks = _indices(sd, p + "transformer.resblocks.")
    if not blocks:
        return []
    stem = p + f"transformer.resblocks.{blocks[-1]}."
    return [k for k in sd if k.startswith(stem) or k == p + "text_projection"]


__all__ = [
    "last_openclip_block",
    "openai_clip_text_config",
    "openclip_text_config",
    "unet_config_from_ldm",
]
