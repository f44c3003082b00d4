"""Folders: diffusers pipelines (``model_index.json``) and their ONNX exports, standalone diffusers /
transformers submodels (``config.json``), LoRA / embedding / IP-Adapter folders. Reads JSON configs
and headers only (never an ``.onnx`` file: its name is all an ONNX folder is recognised by).

The walk never follows a symbolic link into a folder it has already visited, and stops at a
fixed depth and entry count, so a symlink loop or a huge tree costs milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modeldepot.errors import IdentificationError
from modeldepot.identify._assemble import compatible_for, finish, unknown
from modeldepot.identify._declared import Declared
from modeldepot.identify._json import parse_json, short
from modeldepot.identify._result import Identification
from modeldepot.identify._rules_adapters import ip_adapter, lora, textual_inversion
from modeldepot.identify._view import WIDTH_TO_BASE, KeyView, Verdict
from modeldepot.taxonomy import (
    WEIGHT_SUFFIXES,
    BaseModelType,
    ClipVariantType,
    FluxVariantType,
    ModelFormat,
    ModelRepoVariant,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
    SubModelType,
    has_suffix,
)

B = BaseModelType
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_VARIANT_BY_IN = {4: ModelVariantType.Normal, 9: ModelVariantType.Inpaint, 5: ModelVariantType.Depth}

ViewLoader = Callable[[Path], KeyView]
#: transformers classes of image-captioning folders (the loader builds the one config.json names).
_CAPTIONERS = frozenset({"BlipForConditionalGeneration"})


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` when absent; a clear error when malformed.

    Nesting is bounded (:data:`MAX_JSON_DEPTH`), so no value read from it can recurse later.
    """
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise IdentificationError(f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes", path)
        raw = path.read_bytes()
    except OSError as exc:
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc
    doc = parse_json(raw, path, path.name)
    if not isinstance(doc, dict):
        raise IdentificationError(f"{path}: expected a JSON object, found {type(doc).__name__}", path)
    return doc


def _int(cfg: dict[str, Any], key: str) -> int | None:
    """``cfg[key]`` when it is a plain integer (not a bool, not a string)."""
    value = cfg.get(key)
    return value if type(value) is int else None


def _num(cfg: dict[str, Any], key: str) -> float | None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if abs(value) < 1e300 else None


def _read_text_head(path: Path, limit: int = 4096) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError as exc:
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc


def walk_files(root: Path, max_depth: int = 3, limit: int = 5000) -> Iterator[Path]:
    """Files under ``root`` (following links, each real folder once), bounded in depth and count."""
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    count = 0
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue  # dangling link or loop: skip it
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            count += 1
            if count > limit:
                return
            try:
                if entry.is_dir():
                    if depth < max_depth:
                        stack.append((Path(entry.path), depth + 1))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue


def _class_of(cfg: dict[str, Any]) -> str:
    name = cfg.get("_class_name")
    if not name and isinstance(cfg.get("architectures"), list) and cfg["architectures"]:
        name = cfg["architectures"][0]
    return name if isinstance(name, str) else ""


def _repo_variant(root: Path) -> tuple[ModelRepoVariant, str]:
    names = [p.relative_to(root).as_posix() for p in walk_files(root)]
    for marker, variant in ((".fp16.", ModelRepoVariant.FP16), (".fp32.", ModelRepoVariant.FP32)):
        hits = [n for n in names if marker in Path(n).name]
        if hits:
            return variant, f"repo_variant: {variant} (weight files named *{marker}*: {hits[0]})"
    if any(n.endswith(".onnx") for n in names):
        return ModelRepoVariant.ONNX, "repo_variant: onnx (.onnx weight files)"
    if any(n.endswith("openvino_model.xml") for n in names):
        return ModelRepoVariant.OpenVINO, "repo_variant: openvino (openvino_model.xml)"
    return ModelRepoVariant.Default, "repo_variant: default (no .fp16./.fp32. weight file names)"


def _pipeline(root: Path, index: dict[str, Any]) -> Identification:
    cls = _class_of(index)
    v = Verdict("diffusers_pipeline", True, ModelType.Main, ModelFormat.Diffusers, confidence=0.95)
    v.why(f"type: main (model_index.json _class_name {cls!r})")
    v.why("format: diffusers (model_index.json pipeline folder)")
    submodels: dict[SubModelType, str] = {}
    classes: dict[str, str] = {}
    missing: list[str] = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or None in entry:
            continue
        try:
            kind = SubModelType(name)
        except ValueError:
            continue
        if (root / name).exists():
            submodels[kind] = name
            classes[name] = entry[1] if isinstance(entry[1], str) else short(entry[1])
        else:
            missing.append(name)
    v.why(f"submodels: {', '.join(sorted(s.value for s in submodels)) or 'none'} (entries of model_index.json)")
    if missing:
        v.why(f"note: model_index.json lists {', '.join(missing)} but the folder(s) are missing")
        v.confidence = 0.6
    unet = read_json(root / "unet" / "config.json")
    transformer = read_json(root / "transformer" / "config.json")
    if unet is not None:
        cad = unet.get("cross_attention_dim")
        v.base = WIDTH_TO_BASE.get(_int(unet, "cross_attention_dim") or 0, B.Unknown)
        v.why(f"base: {v.base} (unet/config.json cross_attention_dim {short(cad)})")
        in_ch = unet.get("in_channels", 4)
        variant = _VARIANT_BY_IN.get(in_ch if type(in_ch) is int else 0, ModelVariantType.Normal)
        v.variant = variant.value
        v.why(f"variant: {variant} (unet/config.json in_channels {short(in_ch)})")
        if unet.get("upcast_attention") is True:
            v.extra["upcast_attention"] = True
        sample_size = _int(unet, "sample_size")
        if sample_size is not None and 0 < sample_size <= 65536:
            v.extra["default_resolution"] = sample_size * 8
    elif transformer is not None:
        tcls = _class_of(transformer)
        if "Flux" in tcls:
            v.base = B.Flux
            in_ch = transformer.get("in_channels")
            if in_ch == 384 or "Fill" in cls:
                v.variant = FluxVariantType.DevFill.value
            elif transformer.get("guidance_embeds"):
                v.variant = FluxVariantType.Dev.value
            else:
                v.variant = FluxVariantType.Schnell.value
            why = f"in_channels {short(in_ch)}, guidance_embeds {short(transformer.get('guidance_embeds'))}"
            v.why(f"variant: {v.variant} (transformer/config.json {why})")
        elif "SD3" in tcls:
            v.base, v.variant = B.StableDiffusion3, ModelVariantType.Normal.value
        else:
            v.base = B.Unknown
        v.why(f"base: {v.base} (transformer/config.json _class_name {tcls!r})")
    else:
        v.base, v.confidence = B.Unknown, 0.3
        v.why("base: unknown (no unet/config.json or transformer/config.json)")
    sched = read_json(root / "scheduler" / "scheduler_config.json")
    if sched is not None and "FlowMatch" in _class_of(sched):
        v.why(f"prediction_type: none ({_class_of(sched)}: flow matching)")
    elif sched is not None and unet is not None:
        raw = sched.get("prediction_type", "epsilon")
        try:
            v.prediction_type = SchedulerPredictionType(raw)
            v.why(f"prediction_type: {raw} (scheduler/scheduler_config.json prediction_type)")
        except (ValueError, TypeError):
            v.why(f"prediction_type: unknown (scheduler_config.json prediction_type {short(raw)} not recognised)")
    v.compatible_bases = {v.base or B.Unknown}
    result = finish([v], Declared(), folder=True, extra={"class_name": cls, "submodel_classes": classes})
    result.submodels = submodels
    result.repo_variant, line = _repo_variant(root)
    result.reasons.append(line)
    return result


def _onnx_evidence(root: Path, index: dict[str, Any]) -> str | None:
    """Why ``root`` is an ONNX export of a pipeline (diffusers' ``OnnxStableDiffusionPipeline``,
    optimum's ``ORTStableDiffusion*Pipeline``), or None."""
    cls = _class_of(index)
    if cls.startswith(("Onnx", "ORT")):
        return f"model_index.json _class_name {cls!r}"
    runtime = sorted(k for k, e in index.items() if isinstance(e, list) and e[-1:] == ["OnnxRuntimeModel"])
    if runtime:
        return f"model_index.json loads {', '.join(runtime)} with OnnxRuntimeModel"
    unet = root / "unet"
    torch_weights = WEIGHT_SUFFIXES - {".onnx"}
    # Both forms in one folder: the torch weights load, so it stays a diffusers pipeline.
    if (unet / "model.onnx").is_file() and not any(has_suffix(p.name, torch_weights) for p in walk_files(unet, 0)):
        return "unet/model.onnx and no torch weights beside it"
    return None


def _onnx_base(root: Path, index: dict[str, Any], unet: dict[str, Any] | None) -> tuple[BaseModelType, str, float]:
    """The base of an ONNX pipeline, the reason, and how sure: exports carry few configs, so each
    clue is tried from the most to the least direct."""
    cls = _class_of(index)
    if unet is not None and _int(unet, "cross_attention_dim") in WIDTH_TO_BASE:
        cad = _int(unet, "cross_attention_dim")
        return WIDTH_TO_BASE[cad or 0], f"unet/config.json cross_attention_dim {cad}", 0.95
    if "XL" in cls or isinstance(index.get("text_encoder_2"), list):
        if index.get("requires_aesthetics_score") is True:
            return B.StableDiffusionXLRefiner, "model_index.json requires_aesthetics_score: an SDXL refiner", 0.85
        return B.StableDiffusionXL, f"model_index.json: {cls!r} with a second text encoder", 0.85
    te = read_json(root / "text_encoder" / "config.json")
    width = _int(te, "hidden_size") if te is not None else None
    if width in (768, 1024):
        base = B.StableDiffusion1 if width == 768 else B.StableDiffusion2
        return base, f"text_encoder/config.json hidden_size {width}: CLIP {'L' if width == 768 else 'H'}", 0.9
    tok = read_json(root / "tokenizer" / "special_tokens_map.json")
    pad = tok.get("pad_token") if tok is not None else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if pad == "!":
        return B.StableDiffusion2, "tokenizer pads with '!': the OpenCLIP tokenizer SD-2 ships", 0.8
    sched = read_json(root / "scheduler" / "scheduler_config.json")
    if sched is not None and sched.get("prediction_type") == "v_prediction":
        return B.StableDiffusion2, "scheduler prediction_type v_prediction: SD-2 768-v", 0.75
    why = f"no unet/text_encoder config says otherwise and the tokenizer pads with {short(pad)}"
    return B.StableDiffusion1, f"{why}; SD-1 is assumed (as InvokeAI does): override base if wrong", 0.5


def _onnx_pipeline(root: Path, index: dict[str, Any], evidence: str) -> Identification:
    cls = _class_of(index)
    v = Verdict("onnx_pipeline", True, ModelType.Main, ModelFormat.ONNX)
    v.why(f"type: main (model_index.json _class_name {cls!r})")
    v.why(f"format: onnx ({evidence})")
    unet = read_json(root / "unet" / "config.json")  # optimum exports keep it; diffusers' do not
    base, why, v.confidence = _onnx_base(root, index, unet)
    v.base, v.compatible_bases = base, {base}
    v.why(f"base: {base} ({why})")
    in_ch = _int(unet, "in_channels") if unet is not None else None
    if in_ch is not None:
        v.variant = _VARIANT_BY_IN.get(in_ch, ModelVariantType.Normal).value
        v.why(f"variant: {v.variant} (unet/config.json in_channels {in_ch})")
    else:
        v.variant = (ModelVariantType.Inpaint if "Inpaint" in cls else ModelVariantType.Normal).value
        v.why(f"variant: {v.variant} (pipeline class {cls!r})")
    if unet is not None and isinstance(unet.get("upcast_attention"), bool):
        v.extra["upcast_attention"] = unet["upcast_attention"]
    sched = read_json(root / "scheduler" / "scheduler_config.json")
    raw = sched.get("prediction_type") if sched is not None else None
    if isinstance(raw, str) and raw in {p.value for p in SchedulerPredictionType}:
        v.prediction_type = SchedulerPredictionType(raw)
        v.why(f"prediction_type: {raw} (scheduler/scheduler_config.json prediction_type)")
    kinds = {s.value for s in SubModelType}
    submodels = {
        SubModelType(name): name
        for name, entry in index.items()
        if isinstance(entry, list) and None not in entry and name in kinds and (root / name).exists()
    }
    result = finish([v], Declared(), folder=True, extra={"class_name": cls})
    result.submodels = submodels
    result.repo_variant = ModelRepoVariant.ONNX
    result.reasons.append(f"repo_variant: onnx ({evidence})")
    return result


def _component(root: Path, cfg: dict[str, Any], where: str) -> Identification:
    cls = _class_of(cfg)
    rule = "diffusers_config"
    fmt = ModelFormat.Diffusers
    src = f"{where} class {cls!r}"
    if cls in ("AutoencoderKL", "AutoencoderTiny"):
        v = Verdict(rule, True, ModelType.VAE, fmt, confidence=0.9)
        latent = cfg.get("latent_channels", 4)
        scaling = _num(cfg, "scaling_factor")
        latent = short(latent) if type(latent) is not int else latent
        if latent == 16:
            v.base = B.StableDiffusion3 if scaling is not None and abs(scaling - 1.5305) < 1e-3 else B.Flux
            v.why(f"base: {v.base} (16 latent channels, scaling_factor {scaling})")
        elif (scaling is not None and abs(scaling - 0.13025) < 1e-6) or "xl" in root.name.lower():
            v.base = B.StableDiffusionXL
            v.why(f"base: sdxl (scaling_factor {scaling} is SDXL's 0.13025, or the folder name says xl)")
        else:
            v.base = B.StableDiffusion1
            v.why(
                f"base: sd-1 ({latent} latent channels, scaling_factor {scaling}: SD-family, works with sd-1 and sd-2)"
            )
        v.compatible_bases = compatible_for(ModelType.VAE, v.base)
    elif cls in ("ControlNetModel", "FluxControlNetModel", "SD3ControlNetModel"):
        v = Verdict(rule, True, ModelType.ControlNet, fmt, confidence=0.9)
        cad = _int(cfg, "cross_attention_dim")
        v.base = {"FluxControlNetModel": B.Flux, "SD3ControlNetModel": B.StableDiffusion3}.get(cls) or {
            768: B.StableDiffusion1,
            1024: B.StableDiffusion2,
            2048: B.StableDiffusionXL,
        }.get(cad or 0, B.Unknown)
        v.why(f"base: {v.base} ({f'class {cls}' if cls != 'ControlNetModel' else f'cross_attention_dim {cad}'})")
    elif cls == "T2IAdapter":
        v = Verdict(rule, True, ModelType.T2IAdapter, fmt, confidence=0.9)
        kind = cfg.get("adapter_type")
        v.base = {
            "full_adapter_xl": B.StableDiffusionXL,
            "full_adapter": B.StableDiffusion1,
            "light_adapter": B.StableDiffusion1,
        }.get(kind if isinstance(kind, str) else "", B.Unknown)
        v.why(f"base: {v.base} (adapter_type {short(kind)})")
    elif cls in ("CLIPVisionModelWithProjection", "CLIPVisionModel", "CLIPModel"):
        v = Verdict(rule, True, ModelType.CLIPVision, fmt, B.Any, compatible_bases={B.Any}, confidence=0.9)
        nested = cfg.get("vision_config")
        vc: dict[str, Any] = nested if isinstance(nested, dict) else cfg
        width = _int(vc, "hidden_size")
        variant = {1024: ClipVariantType.L, 1280: ClipVariantType.H, 1664: ClipVariantType.G}.get(width or 0)
        v.variant = variant.value if variant else None
        v.why("base: any (an image encoder is used by adapters of every base)")
        v.why(f"variant: {v.variant} (vision hidden_size {width}, {short(vc.get('num_hidden_layers'))} layers)")
        if cls == "CLIPModel":
            # No record type holds a two-tower CLIP; clip_vision keeps existing records valid, and
            # the loader builds the class config.json names, so both towers load.
            v.why("note: a full CLIP model (CLIPModel: text and vision towers); it loads as CLIPModel")
    elif cls in _CAPTIONERS:
        v = Verdict(rule, True, ModelType.Captioner, fmt, B.Any, compatible_bases={B.Any}, confidence=0.9)
        v.extra["architecture"] = cls
        v.why("base: any (a captioner reads images, whatever model made them)")
    elif cls == "StableDiffusionSafetyChecker":
        v = Verdict(rule, True, ModelType.SafetyChecker, fmt, B.Any, compatible_bases={B.Any}, confidence=0.9)
        v.why("base: any (the safety checker judges images, whatever model made them)")
    elif cls in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        v = Verdict(rule, True, ModelType.CLIPEmbed, fmt, B.Any, compatible_bases={B.Any}, confidence=0.9)
        width = _int(cfg, "hidden_size")
        variant = {768: ClipVariantType.L, 1024: ClipVariantType.H, 1280: ClipVariantType.G}.get(width or 0)
        v.variant = variant.value if variant else None
        v.why("base: any (a text encoder serves every base that uses it)")
        v.why(f"variant: {v.variant} (hidden_size {width})")
    elif cls == "T5EncoderModel":
        v = Verdict(
            rule, True, ModelType.T5Encoder, ModelFormat.T5Encoder, B.Any, compatible_bases={B.Any}, confidence=0.9
        )
        d = _int(cfg, "d_model")
        v.extra["architecture"] = {4096: "T5-XXL", 2048: "T5-XL", 1024: "T5-large", 768: "T5-base"}.get(d or 0, "T5")
        v.why("base: any (a text encoder serves every base that uses it)")
        v.reasons.append(f"architecture: {v.extra['architecture']} (d_model {d})")
    else:
        why = f"{src} is not a model kind modeldepot manages on its own"
        if cls in ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel"):
            why += " (a bare diffusion model: register the whole pipeline folder)"
        return unknown([f"type: unknown ({why})"], [], {"class_name": cls})
    v.reasons.insert(0, f"type: {v.type} ({src})")
    v.reasons.insert(1, f"format: {v.format} ({where} folder)")
    if not v.compatible_bases:
        v.compatible_bases = {v.base or B.Unknown}
    result = finish([v], Declared(), folder=True, extra={"class_name": cls})
    result.repo_variant, line = _repo_variant(root)
    result.reasons.append(line)
    return result


def _weights_folder(
    root: Path, weights: Path, rule: Callable[[KeyView], Verdict], fmt: ModelFormat, load: ViewLoader
) -> Identification:
    verdict = rule(load(weights))
    if verdict.matched:
        verdict.format = fmt
        verdict.reasons = [r for r in verdict.reasons if not r.startswith("format: ")]
        verdict.reasons.insert(1, f"format: {fmt} (folder holding {weights.name})")
    result = finish([verdict], Declared(), folder=True, unknown_reason=f"{weights.name}: {verdict.reasons[0]}")
    result.extra["weights"] = weights.name
    return result


def identify_folder(root: Path, load: ViewLoader) -> Identification:
    try:
        top = sorted(p.name for p in root.iterdir())
    except OSError as exc:
        raise IdentificationError(f"{root}: cannot list folder: {exc.strerror or exc}", root) from exc
    if not top:
        return unknown(["type: unknown (the folder is empty)"], [])
    index = read_json(root / "model_index.json")
    if index is not None:
        evidence = _onnx_evidence(root, index)
        return _pipeline(root, index) if evidence is None else _onnx_pipeline(root, index, evidence)
    cfg = read_json(root / "config.json")
    if cfg is not None and _class_of(cfg):
        return _component(root, cfg, "config.json")
    te2 = read_json(root / "text_encoder_2" / "config.json")
    if te2 is not None and _class_of(te2) == "T5EncoderModel":
        return _component(root, te2, "text_encoder_2/config.json")
    for name in ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"):
        if name in top:
            return _weights_folder(root, root / name, lora, ModelFormat.Diffusers, load)
    for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
        if name in top:
            return _weights_folder(root, root / name, textual_inversion, ModelFormat.EmbeddingFolder, load)
    if "image_encoder.txt" in top:
        for name in ("ip_adapter.safetensors", "ip_adapter.bin"):
            if name in top:
                result = _weights_folder(root, root / name, ip_adapter, ModelFormat.InvokeAI, load)
                encoder = _read_text_head(root / "image_encoder.txt").strip()[:200]
                result.extra["image_encoder_model_id"] = encoder
                return result
    weights = [p.relative_to(root).as_posix() for p in walk_files(root) if has_suffix(p.name, WEIGHT_SUFFIXES)]
    looked = "no model_index.json, config.json, pytorch_lora_weights.*, learned_embeds.* or image_encoder.txt"
    if weights:
        shown = ", ".join(weights[:3]) + (" ..." if len(weights) > 3 else "")
        why = f"{looked}; found {len(weights)} weight file(s) ({shown}): identify a file directly"
    else:
        why = f"{looked}, and no weight files: a folder of unrelated files"
    return unknown([f"type: unknown ({why})"], [], {"weight_files": weights[:20]})
