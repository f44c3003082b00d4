"""Adapters that patch a base model: LoRA/LyCORIS, ControlNet, IP-Adapter, T2I-Adapter, textual inversion."""

from __future__ import annotations

from modeldepot.identify._view import KeyView, Verdict, fmt_shape, no_match
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

B = BaseModelType
_SD_WIDTH = {768: B.StableDiffusion1, 1024: B.StableDiffusion2, 2048: B.StableDiffusionXL, 1280: B.StableDiffusionXL}
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_transformer_")
_DOWN_SUFFIXES = (
    ".lora_down.weight",
    ".lora.down.weight",
    ".lora_A.weight",
    ".lora_A.default.weight",
    ".lora_linear_layer.down.weight",
    "_lora.down.weight",
    ".hada_w1_b",
)
_LORA_MARKERS = (*_DOWN_SUFFIXES, ".lora_up.weight", ".lora_B.weight", ".hada_w1_a", ".lokr_w1", ".lokr_w1_a")
#: Every prefix and marker above holds one of these. Keys holding none (any full checkpoint) are no
#: LoRA's, which two substring searches of the joined keys tell ~3x cheaper than the suffix test,
#: whose sort of thousands of reversed keys was a third of the rules' time on SDXL (issue 18).
_LORA_HINTS = ("lora", "_w1")


def _lora_style(view: KeyView) -> str:
    if view.any_endswith(".hada_w1_a"):
        return "loha"
    if view.any_endswith(".lokr_w1", ".lokr_w1_a"):
        return "lokr"
    if view.any_startswith(*_KOHYA_PREFIXES):
        return "kohya"
    if view.any_endswith(".lora_A.weight", ".lora_A.default.weight"):
        return "peft"
    return "diffusers"


def _in_dim(view: KeyView, key: str) -> int | None:
    """Input width of the LoRA'd layer behind ``key`` (a down / hada_w1_b / lokr key)."""
    if key.endswith(_DOWN_SUFFIXES):
        return view.dim(key, 1)
    module = key.rsplit(".", 1)[0]

    def factor(n: str) -> tuple[int, int] | None:
        full = view.shape(f"{module}.lokr_{n}")
        if full and len(full) >= 2:
            return full[0], full[1]
        a, b = view.shape(f"{module}.lokr_{n}_a"), view.shape(f"{module}.lokr_{n}_b")
        return (a[0], b[1]) if a and b and len(a) >= 2 and len(b) >= 2 else None

    w1, w2 = factor("w1"), factor("w2")
    return w1[1] * w2[1] if w1 and w2 else None


def _lora_keys(view: KeyView, *parts: str) -> list[str]:
    ends = (*_DOWN_SUFFIXES, ".lokr_w1", ".lokr_w1_a")
    return [k for k in view.shapes if k.endswith(ends) and any(p in k for p in parts)]


def _lora_base(view: KeyView, v: Verdict) -> None:
    if view.any_contains("double_blocks", "single_blocks", "single_transformer_blocks"):
        v.base = B.Flux
        v.why("base: flux (FLUX layer names: double_blocks / single_blocks / single_transformer_blocks)")
        return
    if view.any_contains("joint_blocks"):
        v.base = B.StableDiffusion3
        v.why("base: sd-3 (SD-3 MMDiT layer names: joint_blocks)")
        return
    for key in _lora_keys(view, "attn2_to_k", "attn2.to_k", "attn2_to_v", "attn2.to_v", "attn2.processor.to_k"):
        width = _in_dim(view, key)
        if width in _SD_WIDTH:
            v.base = _SD_WIDTH[width]
            v.why(f"base: {v.base} (cross-attention token width {width} on {key})")
            return
    te1 = _lora_keys(view, "lora_te1_", "text_encoder.")
    te2 = _lora_keys(view, "lora_te2_", "text_encoder_2.")
    if te1 and te2:
        v.base = B.StableDiffusionXL
        v.why("base: sdxl (LoRA for two text encoders, te1 + te2: 768 + 1280 = 2048)")
        return
    for key in _lora_keys(view, "lora_te_", "text_encoder.", "te_text_model"):
        width = _in_dim(view, key)
        if width in (768, 1024):
            v.base = _SD_WIDTH[width]
            v.why(f"base: {v.base} (text-encoder width {width} on {key})")
            return
    if view.any_startswith("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_"):
        v.base, v.confidence = B.StableDiffusionXL, 0.7
        v.why("base: sdxl (kohya SGM layer names lora_unet_input_blocks_*: only SDXL LoRAs use them)")
        return
    if view.any_contains("_transformer_blocks_2_", ".transformer_blocks.2."):
        v.base, v.confidence = B.StableDiffusionXL, 0.6
        v.why("base: sdxl (transformer block index >= 2: only SDXL UNets are that deep)")
        return
    v.base, v.confidence = B.Unknown, 0.4
    v.why("base: unknown (no attn2 to_k/to_v, text-encoder or FLUX/SD-3 layer to read a width from)")


def lora(view: KeyView) -> Verdict:
    rule = "lora"
    if not view.any_contains(*_LORA_HINTS) or not (
        view.any_startswith(*_KOHYA_PREFIXES) or view.any_endswith(*_LORA_MARKERS)
    ):
        return no_match(rule, "no LoRA keys (lora_unet_/lora_te_ prefixes, lora_down/lora_A, hada_w, lokr_w)")
    style = _lora_style(view)
    v = Verdict(rule, True, ModelType.LoRA, ModelFormat.LyCORIS, confidence=0.9)
    v.extra["lora_format"] = style
    named = {"kohya": "kohya lora_down/lora_up", "loha": "LyCORIS LoHa hada_w", "lokr": "LyCORIS LoKr lokr_w"}
    v.why(f"type: lora ({named.get(style, style + ' lora_A/lora_B')} keys)")
    v.why("format: lycoris (single-file LoRA)")
    _lora_base(view, v)
    v.compatible_bases = {v.base} if v.base else set()
    return v


def controlnet(view: KeyView) -> Verdict:
    rule = "controlnet"
    ldm = view.find_prefix("input_hint_block.0.weight", ("control_model.", "")) or view.find_prefix(
        "zero_convs.0.0.weight", ("control_model.", "")
    )
    if view.has("controlnet_blocks.0.weight") or view.has("controlnet_blocks.0.bias"):
        v = Verdict(rule, True, ModelType.ControlNet, ModelFormat.Checkpoint, confidence=0.85)
        v.why("type: controlnet (controlnet_blocks keys: DiT ControlNet)")
        v.why("format: checkpoint (single file)")
        if view.any_contains("double_blocks", "single_transformer_blocks", "norm_added_k", "controlnet_x_embedder"):
            v.base = B.Flux
            v.why("base: flux (FLUX ControlNet layers: double_blocks / norm_added_k / controlnet_x_embedder)")
        elif view.has("pos_embed.proj.weight") or view.any_startswith("context_embedder."):
            v.base = B.StableDiffusion3
            v.why("base: sd-3 (SD-3 ControlNet: pos_embed.proj + context_embedder)")
        else:
            v.base, v.confidence = B.Unknown, 0.4
            v.why("base: unknown (DiT ControlNet without FLUX or SD-3 markers)")
        v.compatible_bases = {v.base}
        return v
    if ldm is None and not view.has("controlnet_cond_embedding.conv_in.weight"):
        return no_match(rule, "no ControlNet keys (input_hint_block, zero_convs, controlnet_cond_embedding)")
    v = Verdict(rule, True, ModelType.ControlNet, ModelFormat.Checkpoint, confidence=0.9)
    if ldm is not None:
        v.extra["layout"] = "ldm"
        v.why(f"type: controlnet ({ldm}input_hint_block / zero_convs keys)")
    else:
        v.extra["layout"] = "diffusers"
        v.why("type: controlnet (controlnet_cond_embedding.conv_in.weight: diffusers ControlNet)")
    v.why("format: checkpoint (single file)")
    p = ldm or ""
    key = view.first(
        [
            p + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            p + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        ]
    )
    width = view.dim(key, -1) if key else None
    if key and width in _SD_WIDTH:
        v.base = _SD_WIDTH[width]
        v.why(f"base: {v.base} (cross-attention width {width} on {key})")
    else:
        v.base, v.confidence = B.Unknown, 0.4
        v.why("base: unknown (no attn2.to_k key with a known width)")
    v.compatible_bases = {v.base}
    return v


def ip_adapter(view: KeyView) -> Verdict:
    rule = "ip_adapter"
    if view.any_startswith("ip_adapter_proj_model.") and view.any_contains("ip_adapter_double_stream_k_proj"):
        v = Verdict(
            rule, True, ModelType.IPAdapter, ModelFormat.Checkpoint, B.Flux, compatible_bases={B.Flux}, confidence=0.9
        )
        v.why("type: ip_adapter (ip_adapter_proj_model + ip_adapter_double_stream keys: XLabs FLUX IP-Adapter)")
        v.why("format: checkpoint (single file)")
        v.why("base: flux (double_blocks.*.processor.ip_adapter_double_stream_* keys)")
        return v
    if not (view.any_startswith("image_proj.") and view.any_startswith("ip_adapter.")):
        return no_match(rule, "no image_proj.* + ip_adapter.* keys")
    v = Verdict(rule, True, ModelType.IPAdapter, ModelFormat.Checkpoint, confidence=0.9)
    v.why("type: ip_adapter (image_proj.* and ip_adapter.* keys)")
    v.why("format: checkpoint (single file)")
    key = "ip_adapter.1.to_k_ip.weight"
    width = view.dim(key, -1)
    if width in (768, 1024, 2048):
        v.base = _SD_WIDTH[width]
        v.why(f"base: {v.base} (to_k_ip width {width} on {key})")
    else:
        v.base, v.confidence = B.Unknown, 0.4
        v.why(f"base: unknown ({key} width {width} is not 768/1024/2048)")
    v.compatible_bases = {v.base}
    v.extra["plus"] = view.has("image_proj.latents")
    enc = view.dim("image_proj.proj_in.weight", 1) or view.dim("image_proj.proj.weight", 1)
    encoder = {1024: "ViT-H", 1280: "ViT-H", 1664: "ViT-bigG"}.get(enc or 0)
    if encoder:
        v.extra["image_encoder"] = encoder
    return v


def t2i_adapter(view: KeyView) -> Verdict:
    rule = "t2i_adapter"
    p = view.find_prefix("conv_in.weight", ("adapter.", ""))
    if p is None or not (
        view.has(p + "body.0.block1.weight")
        or view.has(p + "body.0.in_conv.weight")
        or view.has(p + "body.0.resnets.0.block1.weight")
    ):
        return no_match(rule, "no T2I-Adapter keys (conv_in.weight + body.0.block1 / body.0.in_conv)")
    v = Verdict(rule, True, ModelType.T2IAdapter, ModelFormat.Checkpoint, confidence=0.85)
    v.why(f"type: t2i_adapter ({p}conv_in.weight + {p}body.* keys)")
    v.why("format: checkpoint (single file)")
    in_ch = view.dim(p + "conv_in.weight", 1)
    # Pixel-unshuffle folds 8x8 (SD-1) or 16x16 (SDXL) pixels of 1 or 3 hint channels into conv_in.
    base = {64: B.StableDiffusion1, 192: B.StableDiffusion1, 256: B.StableDiffusionXL, 768: B.StableDiffusionXL}
    v.base = base.get(in_ch or 0, B.Unknown)
    v.why(f"base: {v.base} (conv_in in_channels {in_ch}: pixel-unshuffle factor of the hint image)")
    v.compatible_bases = {v.base}
    return v


_TI_BASE = {768: B.StableDiffusion1, 1024: B.StableDiffusion2, 1280: B.StableDiffusionXL}


def textual_inversion(view: KeyView) -> Verdict:
    rule = "textual_inversion"
    v = Verdict(rule, True, ModelType.TextualInversion, ModelFormat.EmbeddingFile, confidence=0.9)
    params = view.keys_startswith("string_to_param.")
    if view.has("clip_l") and view.has("clip_g"):
        key, what = "clip_g", "clip_l + clip_g tensors (SDXL embedding)"
    elif params:
        key, what = params[0], "A1111 string_to_param"
    elif view.has("emb_params"):
        key, what = "emb_params", "A1111 emb_params"
    else:
        tensors = [k for k, s in view.shapes.items() if s is not None] if 0 < len(view) < 10 else []
        small = bool(tensors) and len(tensors) == len(view)
        if not small or not all(len(view.shapes[k] or ()) in (1, 2) for k in tensors):
            return no_match(rule, "no string_to_param / emb_params / clip_l+clip_g, and not a tiny token table")
        key, what = tensors[0], f"tiny table of {len(tensors)} token vector(s) (diffusers learned_embeds)"
        v.confidence = 0.6
    shape = view.shape(key) or ()
    width = shape[-1] if shape else None
    if width not in _TI_BASE:
        if v.confidence < 0.9:
            return no_match(rule, f"tiny tensor table but width {width} is no text-encoder width")
        v.base, v.confidence = B.Unknown, 0.4
        v.why(f"base: unknown (embedding width {width} on {key} is not 768/1024/1280)")
    else:
        v.base = _TI_BASE[width or 0]
        v.why(f"base: {v.base} (embedding width {width} on {key} {fmt_shape(shape)})")
    v.reasons.insert(0, f"type: embedding ({what})")
    v.reasons.insert(1, "format: embedding_file (single file)")
    v.extra["vectors"] = shape[0] if len(shape) == 2 else 1
    v.compatible_bases = {v.base}
    return v
