"""Main-model checkpoints: SD-1/SD-2/SDXL/SDXL-refiner UNets, SD-3 MMDiT, FLUX.1 DiT.

Prediction type (epsilon vs v) cannot be read from structure, so it is decided in this order:

1. declared metadata (``modelspec.prediction_type``, a ``-v2-768-v`` architecture, kohya
   ``sd_v2_768_v``) - applied by the caller, it always beats what follows;
2. marker keys some trainers leave in the state dict: ``v_pred`` (NoobAI-style v-prediction),
   ``edm_vpred.sigma_max`` (v-prediction EDM); ``edm_mean``/``edm_std`` mark EDM epsilon models
   (Playground 2.5) and ``ztsnr`` zero-terminal-SNR training (both noted in ``extra``);
3. SD-2 only: InvokeAI's rule - the 768-px SD-2 releases are v-prediction, so a normal-variant SD-2
   checkpoint defaults to ``v_prediction``, except ``global_step == 220000`` (the 512-px base
   release, epsilon). SD-2 inpaint and depth releases are epsilon models. This is a default, not a
   certainty, so the confidence drops and the reason says so (override with prediction_type=...);
4. everything else: ``epsilon``. SD-3 and FLUX are flow-matching models: no prediction type.
"""

from __future__ import annotations

from modeldepot.identify._view import WIDTH_TO_BASE, KeyView, Verdict, fmt_shape, no_match
from modeldepot.taxonomy import (
    BaseModelType,
    FluxVariantType,
    ModelFormat,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
)

B = BaseModelType
#: Where the diffusion model sits inside a file: all-in-one, ComfyUI "diffusion_models", bare.
UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "")
_IN_CHANNELS_VARIANT = {4: ModelVariantType.Normal, 9: ModelVariantType.Inpaint, 5: ModelVariantType.Depth}
_CONTROLNET_MARKERS = ("input_hint_block.0.weight", "zero_convs.0.0.weight", "middle_block_out.0.weight")


def sd_unet_checkpoint(view: KeyView) -> Verdict:
    rule = "sd_unet_checkpoint"
    p = view.find_prefix("input_blocks.0.0.weight", UNET_PREFIXES)
    if p is None:
        return no_match(rule, "no UNet key input_blocks.0.0.weight (under model.diffusion_model. or bare)")
    if any(view.has(p + m) for m in _CONTROLNET_MARKERS):
        return no_match(rule, f"UNet input blocks come with ControlNet keys ({p}input_hint_block / zero_convs)")
    if not view.any_startswith(p + "output_blocks.", p + "out.2."):
        return no_match(rule, f"{p}input_blocks present but no output_blocks: not a full UNet")
    v = Verdict(rule, True, ModelType.Main, ModelFormat.Checkpoint, confidence=0.95)
    v.why(f"type: main (full UNet under {p or 'no prefix'}: input_blocks.0.0.weight and output_blocks present)")
    v.why("format: checkpoint (single file in the original LDM/SGM layout)")
    k_sd = p + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    k_xl = p + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    key = view.first([k_sd, k_xl])
    width = view.dim(key, -1) if key else None
    base = WIDTH_TO_BASE.get(width or 0)
    if key is None or base is None:
        v.base, v.confidence = B.Unknown, 0.3
        v.why(f"base: unknown (cross-attention width {width} on {key or k_sd} matches no known base)")
    else:
        v.base = base
        v.why(f"base: {base} (cross-attention width {width} on {key})")
        label = view.dim(p + "label_emb.0.0.weight", 1)
        if label is not None:
            expect = {B.StableDiffusionXL: 2816, B.StableDiffusionXLRefiner: 2560}.get(base)
            note = "confirms" if label == expect else "does not match"
            v.why(f"base: label_emb.0.0.weight input width {label} {note} {base}")
            if label != expect:
                v.confidence = 0.7
    v.compatible_bases = {v.base}
    in_ch = view.dim(p + "input_blocks.0.0.weight", 1)
    variant = _IN_CHANNELS_VARIANT.get(in_ch or 0)
    if variant is None:
        v.variant = ModelVariantType.Normal.value
        v.extra["in_channels"] = in_ch
        v.confidence = min(v.confidence, 0.6)
        v.why(f"variant: normal (UNet in_channels {in_ch} is not 4/9/5; instruct-pix2pix-like, kept as normal)")
    else:
        v.variant = variant.value
        v.why(f"variant: {variant} (UNet in_channels {in_ch} on {p}input_blocks.0.0.weight)")
    _prediction(view, v, p)
    return v


def _prediction(view: KeyView, v: Verdict, p: str) -> None:
    if view.has("edm_mean") and view.has("edm_std"):
        v.extra["edm"] = True
    if view.has("ztsnr"):
        v.extra["zero_terminal_snr"] = True
    if view.has("edm_vpred.sigma_max"):
        v.extra["edm"] = True
        v.prediction_type = SchedulerPredictionType.VPrediction
        v.why("prediction_type: v_prediction (edm_vpred.sigma_max key: v-prediction EDM model)")
    elif view.has("v_pred"):
        v.prediction_type = SchedulerPredictionType.VPrediction
        v.why("prediction_type: v_prediction (v_pred marker key)")
    elif v.base == B.StableDiffusion2 and v.variant == ModelVariantType.Normal.value:
        step = view.values.get("global_step")
        if step == 220000:
            v.prediction_type = SchedulerPredictionType.Epsilon
            v.why("prediction_type: epsilon (global_step 220000 is the SD-2 512-px base release)")
        else:
            v.prediction_type = SchedulerPredictionType.VPrediction
            v.confidence = min(v.confidence, 0.75)
            v.why(
                "prediction_type: v_prediction (SD-2 default: the 768-px releases are v-prediction; "
                "not decidable from keys - override with prediction_type=epsilon for 512-px models)"
            )
    else:
        v.prediction_type = SchedulerPredictionType.Epsilon
        if "edm" in v.extra:
            v.why("prediction_type: epsilon (edm_mean/edm_std keys: EDM epsilon model, e.g. Playground 2.5)")
        else:
            v.why(f"prediction_type: epsilon (default for {v.base} {v.variant} checkpoints; no v-prediction marker)")


def sd3_checkpoint(view: KeyView) -> Verdict:
    rule = "sd3_checkpoint"
    p = view.find_prefix("joint_blocks.0.context_block.attn.qkv.weight", UNET_PREFIXES)
    if p is None:
        return no_match(rule, "no MMDiT key joint_blocks.0.context_block.attn.qkv.weight")
    v = Verdict(
        rule,
        True,
        ModelType.Main,
        ModelFormat.Checkpoint,
        B.StableDiffusion3,
        compatible_bases={B.StableDiffusion3},
        confidence=0.95,
    )
    v.variant = ModelVariantType.Normal.value
    v.why(f"type: main (MMDiT joint_blocks under {p or 'no prefix'})")
    v.why("format: checkpoint (single file)")
    v.why(f"base: sd-3 ({p}joint_blocks.0.context_block.attn.qkv.weight is the SD-3 MMDiT signature)")
    hidden = view.dim(p + "x_embedder.proj.weight", 0)
    if hidden:
        depth = hidden // 64
        size = {24: "medium", 38: "large"}.get(depth, f"depth {depth}")
        if view.any_contains(".x_block.attn2."):
            size = "3.5 medium"
        v.extra["sd3_size"] = size
        v.why(f"variant: normal (x_embedder.proj.weight {fmt_shape(view.shape(p + 'x_embedder.proj.weight'))}: {size})")
    v.why("prediction_type: none (flow-matching model)")
    return v


def flux_checkpoint(view: KeyView) -> Verdict:
    rule = "flux_checkpoint"
    p = view.find_prefix("double_blocks.0.img_attn.norm.key_norm.scale", UNET_PREFIXES)
    diffusers_layout = False
    if p is None:
        p = view.find_prefix("single_transformer_blocks.0.attn.norm_k.weight", ("transformer.", ""))
        diffusers_layout = p is not None and view.has(p + "x_embedder.weight")
        if not diffusers_layout or p is None:
            return no_match(rule, "no FLUX key double_blocks.0.img_attn.norm.key_norm.scale")
    img_in = p + ("x_embedder.weight" if diffusers_layout else "img_in.weight")
    in_ch = view.dim(img_in, 1)
    if in_ch == 128 or (view.dim(p + "txt_in.weight", 1) or 0) > 4096:
        return no_match(rule, f"FLUX.2 layout ({img_in} in_channels {in_ch}): FLUX.2 is not supported")
    v = Verdict(rule, True, ModelType.Main, ModelFormat.Checkpoint, B.Flux, compatible_bases={B.Flux}, confidence=0.95)
    layout = "diffusers transformer" if diffusers_layout else "BFL"
    v.why(f"type: main (FLUX {layout} blocks under {p or 'no prefix'})")
    v.why("format: checkpoint (single file)")
    v.why(f"base: flux ({'single_transformer_blocks' if diffusers_layout else 'double_blocks'} key norms)")
    if view.any_endswith("quant_state.bitsandbytes__nf4") or in_ch == 1:
        v.format = ModelFormat.BnbQuantizednf4b
        v.why("format: bnb_quantized_nf4b (bitsandbytes nf4 quant_state keys)")
    guidance = view.first(
        [
            p + "guidance_in.in_layer.weight",
            p + "guidance_in.out_layer.weight",
            p + "time_text_embed.guidance_embedder.linear_1.weight",
        ]
    )
    if in_ch == 384:
        v.variant = FluxVariantType.DevFill.value
        v.why(f"variant: dev_fill ({img_in} in_channels 384: image + mask conditioning)")
    elif guidance:
        v.variant = FluxVariantType.Dev.value
        v.why(f"variant: dev (guidance embedding {guidance} present)")
    else:
        v.variant = FluxVariantType.Schnell.value
        v.why("variant: schnell (no guidance_in embedding: guidance-distilled away)")
    v.why("prediction_type: none (flow-matching model)")
    return v
