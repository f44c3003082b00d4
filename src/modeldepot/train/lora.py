"""``train_lora``: LoRA adapters trained on a depot model, installed back into the depot.

A run lives in ``<home>/train/<output name>/``: its checkpoints (``checkpoints/step-NNNNNN``), written every
``checkpoint_every`` steps and on Ctrl-C, and ``resume=`` continues one. The finished LoRA is written in
kohya's layout with ``ss_*`` and ``modelspec.*`` metadata, then moved into the store by
``install_path``, which identifies it (lora, for the base it was trained on) and records the run as its
source.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._fs import safe_dir_name
from modeldepot.errors import TrainingError
from modeldepot.taxonomy import ModelSourceType, ModelType
from modeldepot.train._files import now_iso, save_tensors
from modeldepot.train._progress import StepCallback, step_bar

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.manager import ModelManager
    from modeldepot.train._plan import TrainingPlan
    from modeldepot.train.dataset import CaptionedImageDataset

#: the training resolution when none is given: each family's native size
NATIVE_RESOLUTION = {"sd-1": 512, "sd-2": 512, "sd-2-v": 768, "sdxl": 1024}

ProgressArg = bool | StepCallback


def run_folder(depot: ModelManager, output_name: str) -> Path:
    """Where a run keeps its checkpoints and writes its output before the install."""
    return Path(depot.config.home) / "train" / safe_dir_name(output_name)


def check_settings(rank: int, alpha: float, steps: int, lr: float, batch_size: int) -> None:
    """TrainingError for a setting no run can use."""
    if rank < 1:
        raise TrainingError(f"rank must be at least 1 (got {rank})")
    if alpha <= 0:
        raise TrainingError(f"alpha must be positive (got {alpha})")
    if steps < 1:
        raise TrainingError(f"steps must be at least 1 (got {steps})")
    if not lr > 0:
        raise TrainingError(f"lr must be positive (got {lr})")
    if batch_size < 1:
        raise TrainingError(f"batch_size must be at least 1 (got {batch_size})")


def check_free_name(depot: ModelManager, name: str, base: str) -> None:
    """Refuse an output name a LoRA of the same base already holds, before any training time is spent."""
    for record in depot.store.search_by_attr(name=name, base=base, type=ModelType.LoRA):
        if record.name == name and record.base.value == base:
            raise TrainingError(
                f"a {base} LoRA named {name!r} is already installed (key {record.key}): choose another output_name"
                " or remove that model first"
            )


def open_dataset(data: str | Path | CaptionedImageDataset, resolution: int, **options: Any) -> CaptionedImageDataset:
    from modeldepot.train.dataset import CaptionedImageDataset

    if isinstance(data, CaptionedImageDataset):
        return data
    options.setdefault("bucket_step", bucket_step(resolution))
    return CaptionedImageDataset(Path(data), resolution=resolution, **options)


def bucket_step(resolution: int) -> int:
    """kohya's 64 px bucket step, or the resolution itself below that (tiny test models train at 32)."""
    return min(64, resolution)


def train_lora(
    depot: ModelManager,
    *,
    base: str,
    data: str | Path | CaptionedImageDataset,
    output_name: str | None = None,
    rank: int = 4,
    alpha: float = 4.0,
    steps: int = 500,
    lr: float = 1e-4,
    text_encoder: bool = False,
    text_encoder_lr: float | None = None,
    batch_size: int = 1,
    resolution: int | None = None,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    mixed_precision: str = "auto",
    checkpoint_every: int | None = None,
    resume: str | Path | bool | None = None,
    progress: ProgressArg = False,
    description: str | None = None,
    dataset_options: Mapping[str, Any] | None = None,
) -> ModelConfigBase:
    """Train a LoRA on the main model ``base`` (key, name or key prefix) and install it; returns its record.

    Args:
        depot: the ModelManager holding ``base``; the LoRA is installed into it.
        base: an SD-1, SD-2 or SDXL main model.
        data: a folder of images with captions (see :class:`CaptionedImageDataset`) or a dataset built with
            your own options.
        output_name: the LoRA's name (default ``<base name>-lora``); also names the run folder
            ``<home>/train/<output_name>``.
        rank, alpha: the adapters' rank and alpha (the update is scaled by alpha / rank).
        steps, lr, batch_size: optimisation steps, AdamW learning rate, images per step.
        text_encoder: also train the text encoder(s), at ``text_encoder_lr`` (default ``lr``).
        resolution: training size (default the family's: 512, 768 for SD-2 768-v, 1024 for SDXL).
        seed: fixes the adapters' initialisation, the data order, crops and every noise draw.
        gradient_checkpointing: trade compute for activation memory.
        mixed_precision: ``auto`` (fp16 on CUDA, none elsewhere), ``no``, ``fp16`` (CUDA) or ``bf16``.
        checkpoint_every: save a checkpoint every N steps (Ctrl-C always saves one).
        resume: a checkpoint folder, or True for the run's latest; training continues at its step.
        progress: True for a progress bar with the loss, or ``callback(step, steps, loss)``.
        description: the record's description (default: what was trained, on what).
        dataset_options: keywords for :class:`CaptionedImageDataset` when ``data`` is a folder (repeats,
            shuffle_tags, keep_tokens, crop, flip, caption_ext, default_caption, buckets, bucket_step).

    Raises:
        TrainingError: a base that is not SD-1/SD-2/SDXL, a taken output name, a checkpoint of another run.
        TrainingDataError: the dataset's problems (empty folder, missing captions, unreadable images).
    """
    return _train(
        depot,
        base=base,
        data=data,
        output_name=output_name,
        rank=rank,
        alpha=alpha,
        steps=steps,
        lr=lr,
        text_encoder=text_encoder,
        text_encoder_lr=text_encoder_lr,
        batch_size=batch_size,
        resolution=resolution,
        seed=seed,
        gradient_checkpointing=gradient_checkpointing,
        mixed_precision=mixed_precision,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
        description=description,
        dataset_options=dataset_options,
    )


#: resolution -> (training dataset, prior-preservation dataset or None)
DataFactory = Callable[[int], tuple[Any, Any]]


def _train(
    depot: ModelManager,
    *,
    kind: str = "lora",
    datasets: DataFactory | None = None,
    prior_loss_weight: float = 1.0,
    extra: dict[str, Any] | None = None,
    **o: Any,
) -> ModelConfigBase:
    """The run behind ``train_lora`` and ``train_dreambooth_lora``. ``datasets`` builds the data once the
    resolution is known (Dreambooth generates its class images there); ``extra`` holds Dreambooth's facts
    for the metadata."""
    from modeldepot.train import _kohya
    from modeldepot.train._checkpoint import check_compatible, latest_checkpoint, load_checkpoint
    from modeldepot.train._loop import RunSettings, Trainer
    from modeldepot.train._parts import open_base

    check_settings(o["rank"], o["alpha"], o["steps"], o["lr"], o["batch_size"])
    parts = open_base(depot, o["base"])
    try:
        config = parts.config
        name = o["output_name"] or f"{config.name}-{kind}"
        check_free_name(depot, name, FAMILIES_BASE[parts.family_key])
        resolution = o["resolution"] or NATIVE_RESOLUTION[parts.family_key]
        if datasets is None:
            dataset, prior = open_dataset(o["data"], resolution, **(o.get("dataset_options") or {})), None
        else:
            dataset, prior = datasets(resolution)
        run_dir = run_folder(depot, name)
        settings = RunSettings(
            rank=o["rank"],
            alpha=float(o["alpha"]),
            lr=o["lr"],
            text_encoder_lr=o["text_encoder_lr"] if o["text_encoder_lr"] is not None else o["lr"],
            batch_size=o["batch_size"],
            seed=o["seed"],
            text_encoder=o["text_encoder"],
            steps=o["steps"],
            checkpoint_every=o["checkpoint_every"],
            mixed_precision=o["mixed_precision"],
            gradient_checkpointing=o["gradient_checkpointing"],
            prior_loss_weight=prior_loss_weight,
        )
        options = settings.resume_options(config.key, str(Path(dataset.folder).resolve()))
        options |= {"kind": kind, "resolution": resolution, "dataset": dict(o.get("dataset_options") or {})}
        trainer = Trainer(parts, settings, run_dir, options)
        start, session = 0, uuid.uuid4().hex
        started_at = now_iso()
        checkpoint_path = _resume_path(o["resume"], run_dir, latest_checkpoint)
        if checkpoint_path is not None:
            checkpoint = load_checkpoint(checkpoint_path)
            check_compatible(checkpoint, options)
            if checkpoint.step >= settings.steps:
                raise TrainingError(
                    f"the checkpoint {checkpoint.path} is at step {checkpoint.step}; ask for more steps than that"
                )
            trainer.restore(checkpoint)
            start = checkpoint.step
            session = str(checkpoint.options.get("session_id", session))
            started_at = str(checkpoint.options.get("started_at", started_at))
        trainer.options |= {"session_id": session, "started_at": started_at}
        with step_bar(f"train {kind} {name}", o["progress"]) as callback:
            outcome = trainer.run(dataset, start=start, prior=prior, progress=callback)
        source = f"train:{kind}:{run_dir}"
        tensors = _kohya.kohya_state_dict(outcome.adapters, settings.alpha, sdxl=parts.family == "sdxl")
        run = {
            **options,
            "steps": settings.steps,
            "epochs": outcome.epochs,
            "mixed_precision": settings.mixed_precision,
            "gradient_checkpointing": settings.gradient_checkpointing,
            "targets": sorted({t for ts in trainer.targets.values() for t in ts}),
            "session_id": session,
            "started_at": started_at,
            "finished_at": now_iso(),
            "source": source,
            "description": o.get("description"),
            "num_reg_images": len(prior) if prior is not None else 0,
            "prior_loss_weight": prior_loss_weight,
            "dreambooth": extra,
        }
        metadata = _kohya.training_metadata(
            title=name,
            family_key=parts.family_key,
            base=config,
            run=run,
            dataset=dataset,
            tensors_hash=_kohya.tensor_sha256(tensors),
        )
        losses = {str(outcome.first_step + i + 1): round(v, 6) for i, v in enumerate(outcome.losses)}
        out = save_tensors(run_dir / f"{safe_dir_name(name)}.safetensors", tensors, metadata)
    finally:
        parts.close()
    description = o.get("description") or (
        f"{kind} trained on {config.name} ({settings.steps} steps, rank {settings.rank}, alpha {settings.alpha:g})"
    )
    key = depot.install.install_path(
        out,
        {"name": name, "description": description},
        move=True,
        source=source,
        source_type=ModelSourceType.External,
        # The run's facts, the loss of every step included, as the record's raw "source" answer.
        metadata={"source_api_response": json.dumps({**run, "losses": losses}, sort_keys=True)},
    )
    return depot.store.get_model(key)


#: family key -> the record base a LoRA for it gets
FAMILIES_BASE = {"sd-1": "sd-1", "sd-2": "sd-2", "sd-2-v": "sd-2", "sdxl": "sdxl"}


def _resume_path(resume: str | Path | bool | None, run_dir: Path, latest: Callable[[Path], Path | None]) -> Path | None:
    if resume is None or resume is False:
        return None
    if resume is True:
        found = latest(run_dir)
        if found is None:
            raise TrainingError(f"no checkpoint to resume in {run_dir / 'checkpoints'}")
        return found
    return Path(resume)


def plan_lora(
    depot: ModelManager,
    *,
    base: str,
    data: str | Path | CaptionedImageDataset,
    output_name: str | None = None,
    rank: int = 4,
    alpha: float = 4.0,
    steps: int = 500,
    batch_size: int = 1,
    text_encoder: bool = False,
    resolution: int | None = None,
    gradient_checkpointing: bool = False,
    kind: str = "lora",
    class_images_to_generate: int = 0,
    dataset_options: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """What :func:`train_lora` would do with these arguments (steps, epochs, buckets, adapter size, a memory
    estimate, the output name and run folder), from file headers only: no model is loaded.

    Raises what ``train_lora`` raises before training: a base it cannot train, a taken output name, bad
    data or settings."""
    from modeldepot.train._parts import base_key
    from modeldepot.train._plan import TrainingPlan, estimate, part_shapes, text_width

    check_settings(rank, alpha, steps, 1e-4, batch_size)
    config = depot.store.resolve(base)
    shapes = part_shapes(Path(config.path))  # headers only, read once
    family_key = base_key(config, text_width(shapes), "text_encoder_2" in shapes)
    name = output_name or f"{config.name}-{kind}"
    check_free_name(depot, name, FAMILIES_BASE[family_key])
    res = resolution or NATIVE_RESOLUTION[family_key]
    dataset = open_dataset(data, res, **(dataset_options or {}))
    precision = depot.load.precision
    params, trainable, memory, notes = estimate(
        shapes,
        rank=rank,
        text_encoder=text_encoder,
        batch_size=batch_size,
        resolution=res,
        precision=precision,
        gc=gradient_checkpointing,
    )
    per_epoch = max(dataset.steps_per_epoch(batch_size), 1)
    return TrainingPlan(
        kind=kind,
        base_key=config.key,
        base_name=config.name,
        base=FAMILIES_BASE[family_key] + (" 768-v" if family_key == "sd-2-v" else ""),
        output_name=name,
        run_dir=run_folder(depot, name),
        steps=steps,
        batch_size=batch_size,
        resolution=res,
        samples_per_epoch=len(dataset),
        epochs=-(-steps // per_epoch),
        buckets={f"{w}x{h}": n for (w, h), n in sorted(dataset.buckets.items())},
        rank=rank,
        alpha=float(alpha),
        text_encoder=text_encoder,
        trainable_parameters=trainable,
        part_parameters=params,
        precision=precision,
        memory=memory,
        class_images_to_generate=class_images_to_generate,
        notes=[*dataset.notes, *notes],
    )
