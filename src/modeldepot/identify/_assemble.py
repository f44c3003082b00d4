"""Turn rule verdicts (plus declared metadata) into one :class:`Identification`.

Priority: rules run in a fixed order (main models first - a checkpoint with merged LoRA keys also
looks like a LoRA - then LoRA, the other adapters, components, upscalers) and the first that
matches wins; every other verdict is kept as a candidate with the reason it lost. Declared metadata
then sets base / variant / prediction type (it is written by the trainer and beats shape
heuristics), except that a structural match decides the *type*: a file whose keys are a LoRA stays
a LoRA whatever its metadata claims.
"""

from __future__ import annotations

from typing import Any

from modeldepot.configs import CONFIG_CLASSES
from modeldepot.identify._declared import Declared
from modeldepot.identify._result import Candidate, Identification
from modeldepot.identify._view import Verdict
from modeldepot.taxonomy import SD_FAMILY_LATENT_BASES, BaseModelType, ModelFormat, ModelType

B = BaseModelType

#: Format to use when only declared metadata names the type of a single file.
DEFAULT_FILE_FORMAT: dict[ModelType, ModelFormat] = {
    ModelType.Main: ModelFormat.Checkpoint,
    ModelType.VAE: ModelFormat.Checkpoint,
    ModelType.LoRA: ModelFormat.LyCORIS,
    ModelType.ControlNet: ModelFormat.Checkpoint,
    ModelType.TextualInversion: ModelFormat.EmbeddingFile,
    ModelType.IPAdapter: ModelFormat.Checkpoint,
    ModelType.CLIPVision: ModelFormat.Checkpoint,
    ModelType.CLIPEmbed: ModelFormat.Checkpoint,
    ModelType.T5Encoder: ModelFormat.Checkpoint,
    ModelType.SpandrelImageToImage: ModelFormat.Checkpoint,
    ModelType.T2IAdapter: ModelFormat.Diffusers,
    ModelType.Unknown: ModelFormat.Unknown,
}
DEFAULT_FOLDER_FORMAT: dict[ModelType, ModelFormat] = {
    ModelType.TextualInversion: ModelFormat.EmbeddingFolder,
    ModelType.IPAdapter: ModelFormat.InvokeAI,
    ModelType.T5Encoder: ModelFormat.T5Encoder,
    ModelType.SpandrelImageToImage: ModelFormat.Checkpoint,
    ModelType.Unknown: ModelFormat.Unknown,
}


def has_record_class(type_: ModelType, format_: ModelFormat) -> bool:
    return f"{type_.value}.{format_.value}" in CONFIG_CLASSES


def compatible_for(type_: ModelType, base: BaseModelType) -> set[BaseModelType]:
    """Bases a model of this type and base works with (VAEs share latent spaces)."""
    if type_ == ModelType.VAE and base in SD_FAMILY_LATENT_BASES:
        return set(SD_FAMILY_LATENT_BASES)
    if type_ == ModelType.VAE and base == B.StableDiffusionXL:
        return {B.StableDiffusionXL, B.StableDiffusionXLRefiner}
    return {base}


def _field_line(reasons: list[str], name: str) -> str | None:
    return next((r[len(name) + 2 :] for r in reasons if r.startswith(name + ": ")), None)


def _apply_declared(win: Verdict, declared: Declared) -> None:
    """Let declared base / variant / prediction type override the shape-based guesses."""
    if declared.type is not None and declared.type != win.type:
        win.reasons.append(
            f"note: declared type {declared.type} ({declared.why['type']}) ignored: the keys say {win.type}"
        )
        return
    if declared.base is not None and win.base != B.Any:
        found = _field_line(win.reasons, "base")
        win.reasons = [r for r in win.reasons if not r.startswith("base: ")]
        src = f"declared: {declared.why['base']}"
        if win.base in (None, B.Unknown):
            line = f"base: {declared.base} ({src})"
        elif win.base == declared.base:
            line = f"base: {declared.base} ({src}; keys agree: {found})"
            win.confidence = max(win.confidence, 0.98)
        else:
            line = f"base: {declared.base} ({src}; wins over the keys, which suggest {win.base}: {found})"
            win.confidence = min(win.confidence, 0.7)
        win.reasons.insert(min(2, len(win.reasons)), line)
        win.base = declared.base
        win.compatible_bases = compatible_for(win.type or ModelType.Unknown, declared.base)
    if win.type == ModelType.Main:
        if declared.variant is not None and declared.variant != win.variant:
            win.reasons = [r for r in win.reasons if not r.startswith("variant: ")]
            win.reasons.append(f"variant: {declared.variant} (declared: {declared.why['variant']})")
            win.variant = declared.variant
        if declared.prediction_type is not None:
            win.reasons = [r for r in win.reasons if not r.startswith("prediction_type: ")]
            win.reasons.append(
                f"prediction_type: {declared.prediction_type} (declared: {declared.why['prediction_type']})"
            )
            win.prediction_type = declared.prediction_type


def _declared_only(declared: Declared, folder: bool) -> Verdict | None:
    if declared.type is None:
        return None
    fmt = (DEFAULT_FOLDER_FORMAT if folder else DEFAULT_FILE_FORMAT).get(declared.type, ModelFormat.Diffusers)
    v = Verdict("declared_metadata", True, declared.type, fmt, declared.base or B.Unknown, confidence=0.5)
    v.why(f"type: {declared.type} (declared: {declared.why['type']}; no key signature matched, so unverified)")
    v.why(f"format: {fmt} (default for a {'folder' if folder else 'single-file'} {declared.type})")
    if declared.base is not None:
        v.why(f"base: {declared.base} (declared: {declared.why['base']})")
    else:
        v.why("base: unknown (nothing declared it and no key signature matched)")
    v.compatible_bases = compatible_for(declared.type, v.base or B.Unknown)
    if declared.type == ModelType.Main:
        v.variant, v.prediction_type = declared.variant, declared.prediction_type
    return v


def _declared_candidate(declared: Declared) -> Candidate:
    reasons = [f"{k}: {getattr(declared, k)} ({why})" for k, why in declared.why.items()] + declared.notes
    return Candidate(
        rule="declared_metadata",
        matched=declared.any,
        type=declared.type,
        base=declared.base,
        reasons=reasons or ["no modelspec.* or kohya ss_* metadata"],
        confidence=0.9 if declared.any else 0.0,
    )


def unknown(reasons: list[str], candidates: list[Candidate], extra: dict[str, Any] | None = None) -> Identification:
    return Identification(
        type=ModelType.Unknown,
        format=ModelFormat.Unknown,
        base=B.Unknown,
        compatible_bases={B.Unknown},
        confidence=0.0,
        reasons=reasons,
        candidates=candidates,
        extra=dict(extra or {}),
    )


def finish(
    verdicts: list[Verdict],
    declared: Declared,
    *,
    folder: bool = False,
    extra: dict[str, Any] | None = None,
    unknown_reason: str = "no rule matched",
) -> Identification:
    """Pick the winner, apply declared metadata, check a record class exists, build the result."""
    matched = [v for v in verdicts if v.matched]
    win = matched[0] if matched else _declared_only(declared, folder)
    candidates = [_declared_candidate(declared)] if declared.any or declared.notes else []
    for v in verdicts:
        lost_to = win.rule if win is not None and v.matched and v is not win else None
        reasons = list(v.reasons)
        if lost_to:
            reasons.append(f"lost to {lost_to}: it ranks first in the rule priority")
        candidates.append(
            Candidate(v.rule, v.matched, v.type, v.format, v.base, reasons, v.confidence if v.matched else 0.0, lost_to)
        )
    notes = [f"note: {n}" for n in declared.notes]
    if win is None:
        return unknown([f"type: unknown ({unknown_reason})", *notes], candidates, extra)
    if win.rule != "declared_metadata":
        _apply_declared(win, declared)
    assert win.type is not None and win.format is not None
    if not has_record_class(win.type, win.format):
        why = f"recognised as {win.type}/{win.format}, which no record class accepts"
        if win.type == ModelType.T2IAdapter:
            why += "; single-file T2I-Adapters are not supported - use the diffusers folder"
        return unknown(
            [f"type: unknown ({why})", *win.reasons, *notes],
            candidates,
            {**(extra or {}), **win.extra, "detected": f"{win.type}/{win.format}"},
        )
    return Identification(
        type=win.type,
        format=win.format,
        base=win.base or B.Unknown,
        compatible_bases=set(win.compatible_bases) or {win.base or B.Unknown},
        variant=win.variant,
        prediction_type=win.prediction_type,
        confidence=round(win.confidence, 2),
        reasons=[*win.reasons, *notes],
        candidates=candidates,
        extra={**(extra or {}), **win.extra},
    )
