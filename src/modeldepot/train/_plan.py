"""What a training run would do, without loading a model: ``--dry-run``.

Parameter counts come from the base model's safetensors headers (the same shapes the run will see), so
the adapter size is exact for the layers named like diffusers' / transformers' modules; the memory figure
adds the weights at the depot's load precision, the private copy of each trained part, the adapters with
their gradients and AdamW moments, and a rough activation term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldepot._fs import human_size
from modeldepot.identify.safetensors import read_safetensors_header
from modeldepot.train._loop import TEXT_ENCODER_TARGETS, UNET_TARGETS

#: single-file checkpoints: key prefix -> part
_PREFIXES = (
    ("model.diffusion_model.", "unet"),
    ("first_stage_model.", "vae"),
    ("cond_stage_model.", "text_encoder"),
    ("conditioner.embedders.0.", "text_encoder"),
    ("conditioner.embedders.1.", "text_encoder_2"),
)
_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
#: activation bytes per (unet parameter x latent pixel x element byte) without checkpointing: fitted to
#: SD-1.5 LoRA training at 512 px, batch 1 (about 3.5 GB of activations); checkpointing keeps about a quarter
_ACTIVATION_FACTOR = 5e-4
_CHECKPOINTING_SAVES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: ``weights`` of every part, ``trained_copies`` of the parts adapters go into, ``adapters`` with
    gradients and optimizer state, ``activations`` (rough)."""

    weights: int
    trained_copies: int
    adapters: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.trained_copies + self.adapters + self.activations


@dataclass(frozen=True)
class TrainingPlan:
    """A run's plan: what ``train_lora`` / ``train_dreambooth_lora`` would do with these arguments."""

    kind: str
    base_key: str
    base_name: str
    base: str
    output_name: str
    run_dir: Path
    steps: int
    batch_size: int
    resolution: int
    samples_per_epoch: int
    epochs: int
    buckets: dict[str, int]
    rank: int
    alpha: float
    text_encoder: bool
    trainable_parameters: int
    part_parameters: dict[str, int]
    precision: str
    memory: MemoryEstimate
    class_images_to_generate: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["memory"]["total"] = self.memory.total
        return out


def _weight_files(path: Path) -> dict[str, list[Path]]:
    """Part -> its safetensors files (a diffusers folder), or ``{"": [file]}`` for a single file."""
    if path.is_file():
        return {"": [path]}
    return {part: sorted((path / part).glob("*.safetensors")) for part in _PARTS if (path / part).is_dir()}


def part_shapes(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Part -> tensor name -> shape of a base model's files (a diffusers folder or a single file), from
    headers only."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for part, files in _weight_files(path).items():
        for file in files:
            for name, shape in read_safetensors_header(file).shapes.items():
                owner = part or next((p for prefix, p in _PREFIXES if name.startswith(prefix)), "")
                if owner:
                    out.setdefault(owner, {})[name] = shape
    return out


def text_width(shapes: dict[str, dict[str, tuple[int, ...]]]) -> int | None:
    """The first text encoder's width, from its token embedding's shape, if found."""
    for name, shape in shapes.get("text_encoder", {}).items():
        if name.endswith("token_embedding.weight") and len(shape) == 2:
            return shape[1]
    return None


def adapter_parameters(shapes: dict[str, tuple[int, ...]], targets: tuple[str, ...], rank: int) -> int:
    """Parameters LoRA of ``rank`` adds to the layers named ``<...>.<target>.weight``: r x (in + out) each."""
    total = 0
    for name, shape in shapes.items():
        layer = name.removesuffix(".weight")
        if layer != name and len(shape) in (2, 4) and any(layer.endswith("." + t) for t in targets):
            total += rank * (shape[0] + shape[1])
    return total


def estimate(
    shapes: dict[str, dict[str, tuple[int, ...]]],
    *,
    rank: int,
    text_encoder: bool,
    batch_size: int,
    resolution: int,
    precision: str,
    gc: bool,
) -> tuple[dict[str, int], int, MemoryEstimate, list[str]]:
    """(parameters per part, trainable parameters, memory estimate, notes) from :func:`part_shapes`."""
    notes: list[str] = []
    params = {part: sum(math.prod(s) for s in tensors.values()) for part, tensors in shapes.items()}
    if not shapes:
        notes.append("no safetensors weights found: sizes unknown")
    trained = ["unet"] + ([p for p in ("text_encoder", "text_encoder_2") if p in shapes] if text_encoder else [])
    trainable = sum(
        adapter_parameters(shapes.get(p, {}), UNET_TARGETS if p == "unet" else TEXT_ENCODER_TARGETS, rank)
        for p in trained
    )
    if text_encoder and "text_encoder_2" in shapes and not any("q_proj" in k for k in shapes["text_encoder_2"]):
        notes.append("text_encoder_2 is in the OpenCLIP layout here: its adapters are not counted")
    width = {"float16": 2, "bfloat16": 2}.get(precision, 4)
    latent_pixels = (resolution // 8) ** 2
    activations = int(_ACTIVATION_FACTOR * width * batch_size * latent_pixels * params.get("unet", 0))
    memory = MemoryEstimate(
        weights=width * sum(params.values()),
        trained_copies=width * sum(params.get(p, 0) for p in trained),
        adapters=4 * 4 * trainable,  # float32 factors, their gradients, AdamW's two moments
        activations=activations // _CHECKPOINTING_SAVES if gc else activations,
    )
    return params, trainable, memory, notes


def plan_lines(plan: TrainingPlan) -> list[str]:
    """The plan as the CLI prints it."""
    m = plan.memory
    buckets = ", ".join(f"{k} x{n}" for k, n in plan.buckets.items())
    lines = [
        f"train {plan.kind} {plan.output_name!r} on {plan.base_name} ({plan.base}, key {plan.base_key[:8]})",
        f"  steps {plan.steps}, batch {plan.batch_size}, {plan.samples_per_epoch} samples per epoch"
        f" -> {plan.epochs} epoch(s); resolution {plan.resolution}; buckets {buckets}",
        f"  LoRA rank {plan.rank}, alpha {plan.alpha:g}: {plan.trainable_parameters:,} trainable parameters"
        f" ({'unet + text encoder' if plan.text_encoder else 'unet only'})",
        f"  memory (estimate, {plan.precision}): {human_size(m.total)} = weights {human_size(m.weights)}"
        f" + trained copies {human_size(m.trained_copies)} + adapters and optimizer {human_size(m.adapters)}"
        f" + activations {human_size(m.activations)} (rough)",
        f"  checkpoints and output in {plan.run_dir}",
    ]
    if plan.class_images_to_generate:
        lines.append(f"  class images to generate first: {plan.class_images_to_generate}")
    lines += [f"  note: {n}" for n in plan.notes]
    return lines
