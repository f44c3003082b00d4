"""Components and standalone networks: VAE, CLIP vision, CLIP text, T5, image-to-image (upscalers, face restorers).

VAE base: SD-1, SD-2 and SDXL VAEs have identical structure (4 latent channels, same layer
shapes); only the weights differ. Without declared metadata (``modelspec.architecture`` ending
``/vae``, applied by the caller) the file name decides, as in InvokeAI: a name containing ``xl``
means SDXL, ``sd3`` means SD-3; otherwise SD-1, compatible with SD-1 and SD-2 (they share the
latent space). 16 latent channels mean FLUX.1 or SD-3 (also structurally alike): FLUX unless the
name says SD-3. Each of these guesses carries a lower confidence and a reason saying so.
"""

from __future__ import annotations

import re

from modeldepot.identify._view import KeyView, Verdict, fmt_shape, no_match
from modeldepot.taxonomy import SD_FAMILY_LATENT_BASES, BaseModelType, ClipVariantType, ModelFormat, ModelType

B = BaseModelType


def vae(view: KeyView) -> Verdict:
    rule = "vae"
    p = view.find_prefix("decoder.conv_in.weight", ("", "first_stage_model.", "vae.")) or view.find_prefix(
        "encoder.conv_in.weight", ("", "first_stage_model.", "vae.")
    )
    if p is None:
        return no_match(rule, "no encoder.conv_in.weight / decoder.conv_in.weight key")
    dec = view.shape(p + "decoder.conv_in.weight")
    if dec is not None and len(dec) == 5:
        return no_match(rule, "5-D decoder convolutions: a video VAE (not supported)")
    latent = dec[1] if dec and len(dec) > 1 else None
    if latent is None and (enc_out := view.dim(p + "encoder.conv_out.weight", 0)):
        latent = enc_out // 2
    if view.any_contains("bn.running_mean") or latent == 32:
        return no_match(rule, "32 latent channels / BatchNorm statistics: a FLUX.2 VAE (not supported)")
    v = Verdict(rule, True, ModelType.VAE, ModelFormat.Checkpoint, confidence=0.9)
    v.why(f"type: vae ({p}encoder.conv_in / decoder.conv_in keys)")
    v.why("format: checkpoint (single file)")
    name = view.path.name.lower()
    if latent == 4:
        v.confidence = 0.6
        if re.search(r"xl", name):
            v.base, v.compatible_bases = B.StableDiffusionXL, {B.StableDiffusionXL, B.StableDiffusionXLRefiner}
            v.why(
                f"base: sdxl (4 latent channels; file name {view.path.name!r} mentions 'xl' - SD and SDXL VAEs are "
                "structurally identical)"
            )
        else:
            v.base, v.compatible_bases = B.StableDiffusion1, set(SD_FAMILY_LATENT_BASES)
            v.why(
                "base: sd-1 (4 latent channels: SD-family VAE, compatible with sd-1 and sd-2; SD-1/SD-2/SDXL VAEs are "
                "structurally identical - override with base=sdxl for an SDXL VAE)"
            )
    elif latent == 16:
        v.confidence = 0.7
        if re.search(r"sd[-_.]?3", name):
            v.base = B.StableDiffusion3
            v.why(f"base: sd-3 (16 latent channels; file name {view.path.name!r} mentions sd3)")
        else:
            v.base = B.Flux
            v.why(
                "base: flux (16 latent channels: FLUX.1/SD-3 autoencoder; defaulted to flux, override with base=sd-3)"
            )
        v.compatible_bases = {v.base}
    else:
        v.base, v.confidence = B.Unknown, 0.4
        v.compatible_bases = {B.Unknown}
        v.why(f"base: unknown ({latent} latent channels)")
    v.extra["latent_channels"] = latent
    return v


_CLIP_BY_WIDTH = {768: ClipVariantType.L, 1024: ClipVariantType.L, 1280: ClipVariantType.H, 1664: ClipVariantType.G}
_CLIP_TEXT_BY_WIDTH = {768: ClipVariantType.L, 1024: ClipVariantType.H, 1280: ClipVariantType.G}
_CLIP_VISION_DEPTH = {ClipVariantType.L: 24, ClipVariantType.H: 32, ClipVariantType.G: 48}
_CLIP_TRUNCATED_BY_WIDTH = {1024: ClipVariantType.L, 1280: ClipVariantType.H, 1664: ClipVariantType.G}


def clip_vision(view: KeyView) -> Verdict:
    rule = "clip_vision"
    p = view.find_prefix("vision_model.encoder.layers.0.layer_norm1.weight", ("", "clip_vision_model.", "model."))
    if p is None:
        return no_match(rule, "no vision_model.encoder.layers.0 keys (HF CLIP vision layout)")
    if view.any_startswith(p + "text_model."):
        return no_match(rule, "also holds text_model.*: a full CLIP model, identified as a text encoder")
    depth = (view.max_index(p + "vision_model.encoder.layers.") or 0) + 1
    width = view.dim(p + "vision_model.encoder.layers.0.layer_norm1.weight", 0)
    variant = {24: ClipVariantType.L, 32: ClipVariantType.H, 48: ClipVariantType.G}.get(depth)
    truncated = False
    if variant is None or _CLIP_BY_WIDTH.get(width or 0) != variant:
        # A tower cut short (exports that drop the last layers, tiny test towers) keeps the width
        # of its family; CLIP's pre_layrnorm, which SigLIP lacks, tells it from other ViTs. ViT-B's
        # width (768) is left out: a short tower of that width is not a cut ViT-L.
        by_width = _CLIP_TRUNCATED_BY_WIDTH.get(width or 0)
        if (
            by_width is None
            or depth >= _CLIP_VISION_DEPTH[by_width]
            or not view.has(p + "vision_model.pre_layrnorm.weight")
        ):
            return no_match(rule, f"vision tower of depth {depth}, width {width}: not CLIP ViT-L/H/bigG (SigLIP?)")
        variant, truncated = by_width, True
    v = Verdict(
        rule,
        True,
        ModelType.CLIPVision,
        ModelFormat.Checkpoint,
        B.Any,
        compatible_bases={B.Any},
        confidence=0.7 if truncated else 0.9,
    )
    v.variant = variant.value
    v.why(f"type: clip_vision ({p}vision_model.encoder.layers.* keys, no text tower)")
    v.why("format: checkpoint (single file)")
    v.why("base: any (an image encoder is used by adapters of every base)")
    names = {ClipVariantType.L: "ViT-L", ClipVariantType.H: "ViT-H", ClipVariantType.G: "ViT-bigG"}
    if truncated:
        full = _CLIP_VISION_DEPTH[variant]
        v.why(f"variant: {variant} ({names[variant]} width {width}; {depth} of its {full} layers: a shortened tower)")
    else:
        v.why(f"variant: {variant} ({names[variant]}: {depth} layers, width {width})")
    pos = view.dim(p + "vision_model.embeddings.position_embedding.weight", 0)
    if pos:
        v.extra["image_size"] = {257: 224, 577: 336}.get(pos)
    return v


def clip_text(view: KeyView) -> Verdict:
    rule = "clip_text"
    p = view.find_prefix("text_model.encoder.layers.0.self_attn.q_proj.weight", ("", "transformer.", "model."))
    if p is None:
        return no_match(rule, "no text_model.encoder.layers.0 keys (HF CLIP text layout)")
    depth = (view.max_index(p + "text_model.encoder.layers.") or 0) + 1
    width = view.dim(p + "text_model.final_layer_norm.weight", 0) or view.dim(
        p + "text_model.encoder.layers.0.self_attn.q_proj.weight", 0
    )
    variant = _CLIP_TEXT_BY_WIDTH.get(width or 0)
    if variant is None:
        return no_match(rule, f"text encoder width {width} is not CLIP-L/H/G (768/1024/1280)")
    v = Verdict(
        rule, True, ModelType.CLIPEmbed, ModelFormat.Checkpoint, B.Any, compatible_bases={B.Any}, confidence=0.9
    )
    v.variant = variant.value
    v.why(f"type: clip_embed ({p}text_model.encoder.layers.* keys: CLIP text encoder)")
    v.why("format: checkpoint (single file)")
    v.why("base: any (a text encoder serves every base that uses it)")
    v.why(f"variant: {variant} (width {width}, {depth} layers)")
    return v


_T5_SIZES = {512: "T5-small", 768: "T5-base", 1024: "T5-large", 2048: "T5-XL", 4096: "T5-XXL"}


def t5_encoder(view: KeyView) -> Verdict:
    rule = "t5_encoder"
    p = view.find_prefix("encoder.block.0.layer.0.SelfAttention.k.weight", ("", "t5xxl.transformer.", "transformer."))
    if p is None:
        return no_match(rule, "no encoder.block.0.layer.0.SelfAttention keys (T5 layout)")
    width = view.dim(p + "encoder.final_layer_norm.weight", 0) or view.dim(
        p + "encoder.block.0.layer.0.SelfAttention.k.weight", 1
    )
    blocks = (view.max_index(p + "encoder.block.") or 0) + 1
    arch = _T5_SIZES.get(width or 0, f"T5 (d_model {width})")
    v = Verdict(
        rule, True, ModelType.T5Encoder, ModelFormat.Checkpoint, B.Any, compatible_bases={B.Any}, confidence=0.9
    )
    v.why(f"type: t5_encoder ({p}encoder.block.*.SelfAttention keys)")
    v.why("format: checkpoint (single file)")
    v.why("base: any (a text encoder serves every base that uses it)")
    gated = view.any_endswith("DenseReluDense.wi_0.weight")
    v.extra.update({"architecture": arch, "blocks": blocks, "gated": gated})
    v.reasons.append(f"architecture: {arch} (d_model {width}, {blocks} blocks{', gated-GELU v1.1' if gated else ''})")
    return v


def esrgan(view: KeyView) -> Verdict:
    """``spandrel_image_to_image`` checkpoints: ESRGAN-family upscalers, then GFPGAN / CodeFormer."""
    rule = "esrgan"
    v = Verdict(
        rule,
        True,
        ModelType.SpandrelImageToImage,
        ModelFormat.Checkpoint,
        B.Any,
        compatible_bases={B.Any},
        confidence=0.9,
    )
    if view.has("model.0.weight") and view.any_startswith("model.1.sub.0.RDB1."):
        layout, first = "ESRGAN (original key names)", "model.0.weight"
        blocks = view.max_index("model.1.sub.") or 0  # the last sub.N is the trunk conv
        convs = sorted({int(k.split(".")[1]) for k in view.shapes if re.fullmatch(r"model\.\d+\.weight", k)})
        scale = 2 ** max(len([i for i in convs if i > 1]) - 2, 0)
        marker = "model.1.sub.0.RDB1.conv1.0.weight"
    elif view.has("conv_first.weight") and view.any_startswith("body.0.rdb1."):
        layout, first = "Real-ESRGAN (RRDBNet)", "conv_first.weight"
        blocks = (view.max_index("body.") or 0) + 1
        in_ch = view.dim(first, 1) or 3
        scale = {12: 2, 48: 1}.get(in_ch, 4 if view.has("conv_up2.weight") else 2)
        marker = "body.0.rdb1.conv1.weight"
    elif view.has("conv_first.weight") and view.any_startswith("RRDB_trunk.0.RDB1."):
        layout, first = "BSRGAN / RealSR (RRDB_trunk)", "conv_first.weight"
        blocks = (view.max_index("RRDB_trunk.") or 0) + 1
        scale = 4 if view.has("upconv2.weight") else 2
        marker = "RRDB_trunk.0.RDB1.conv1.weight"
    else:
        # The other image-to-image models loaded by the same loader: face restorers.
        return _face_restorer(view, v)
    v.why(f"type: spandrel_image_to_image (RRDB upscaler keys: {marker})")
    v.why("format: checkpoint (single file, loaded by spandrel)")
    v.why("base: any (an upscaler works on images from any model)")
    v.reasons.append(f"architecture: ESRGAN ({layout}; {blocks} RRDB blocks, x{scale})")
    v.extra.update(
        {
            "architecture": "ESRGAN",
            "layout": layout,
            "scale": scale,
            "num_blocks": blocks,
            "num_features": view.dim(first, 0),
            "in_channels_shape": fmt_shape(view.shape(first)),
        }
    )
    return v


def _face_restorer(view: KeyView, v: Verdict) -> Verdict:
    """GFPGAN and CodeFormer: image-to-image models that restore an aligned face at its own size.

    ``v`` is the esrgan rule's spandrel_image_to_image verdict, filled in here when one matches."""
    if (
        view.any_startswith("stylegan_decoder.")
        and view.any_startswith("conv_body_first.")
        and view.any_startswith("toRGB.", "condition_scale.")
    ):
        arch, marker = "GFPGAN", "stylegan_decoder.* + conv_body_first + toRGB/condition_scale"
        levels = (view.max_index("conv_body_up.") or 0) + 1
        style = view.dim("stylegan_decoder.to_rgb1.modulated_conv.modulation.weight", 1)
        sft = view.dim("condition_scale.0.2.weight", 0)
        dec = view.dim("stylegan_decoder.style_convs.0.modulated_conv.weight", 1)
        extra: dict[str, object] = {"out_size": 2 ** (levels + 2), "num_style_feat": style}
        if sft and dec:
            extra["sft_half"] = 2 * sft == dec
        detail = f"U-Net + StyleGAN2 decoder with SFT, {extra['out_size']}px faces"
    elif (
        view.has("quantize.embedding.weight")
        and view.has("position_emb")
        and view.any_startswith("ft_layers.", "idx_pred_layer.")
    ):
        arch, marker = "CodeFormer", "quantize.embedding + position_emb + ft_layers/idx_pred_layer"
        fuse = sorted({k.split(".")[1] for k in view.keys_startswith("fuse_convs_dict.")}, key=lambda s: (len(s), s))
        extra = {
            "codebook_size": view.dim("quantize.embedding.weight", 0),
            "dim_embd": view.dim("position_emb", 1),
            "n_layers": (view.max_index("ft_layers.") or 0) + 1,
            "connect_list": fuse,
        }
        detail = f"VQ codebook of {extra['codebook_size']} + {extra['n_layers']} transformer layers"
    else:
        return no_match(
            v.rule,
            "no RRDB keys (model.1.sub.0.RDB1, body.0.rdb1, RRDB_trunk.0.RDB1), no GFPGAN (stylegan_decoder + "
            "conv_body_first) or CodeFormer (quantize.embedding + position_emb) keys",
        )
    v.why(f"type: spandrel_image_to_image (face-restorer keys: {marker})")
    v.why("format: checkpoint (single file)")
    v.why("base: any (a face restorer works on images from any model)")
    v.reasons.append(f"architecture: {arch} (face restoration; {detail})")
    v.extra.update({"architecture": arch, "purpose": "face_restoration", "scale": 1, **extra})
    return v
