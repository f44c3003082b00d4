"""Train models: ``train lora | dreambooth | predictor``; the results are installed into the depot.

A thin face over ``modeldepot.train``. ``--dry-run`` prints the plan (steps, epochs, buckets, adapter size, a
memory estimate, the output name and run folder) from file headers, without loading a model. Ctrl-C
finishes the current step, saves a checkpoint and says how to resume. torch and the training modules are
imported inside the commands: ``modeldepot list`` stays light.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modeldepot.cli._app import HomeOption, JsonOption, app, console, fail
from modeldepot.cli._run_files import depot

train_app = typer.Typer(
    help="Train LoRAs (plain or Dreambooth) and the CLIP+MLP predictor; results are installed as models.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")

BaseOption = Annotated[
    str, typer.Option("--base", "-b", metavar="KEY", help="The SD-1, SD-2 or SDXL main model to train on (key or name)")
]
OutputNameOption = Annotated[
    str | None,
    typer.Option("--output-name", "-o", metavar="NAME", help="Name of the installed model (default: BASE-lora)"),
]
RankOption = Annotated[int, typer.Option("--rank", help="LoRA rank (network dim)")]
AlphaOption = Annotated[float, typer.Option("--alpha", help="LoRA alpha; updates are scaled by alpha / rank")]
StepsOption = Annotated[int, typer.Option("--steps", help="Optimisation steps")]
LrOption = Annotated[float, typer.Option("--lr", help="Learning rate (AdamW)")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Images per step")]
ResolutionOption = Annotated[
    int | None,
    typer.Option("--resolution", help="Training size in pixels (default: the base's, 512 / 768 / 1024)"),
]
TextEncoderOption = Annotated[bool, typer.Option("--text-encoder", help="Also train the text encoder(s)")]
TextEncoderLrOption = Annotated[
    float | None, typer.Option("--text-encoder-lr", help="Text encoder learning rate (default: --lr)")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the adapters, the data order and every noise draw")]
CheckpointingOption = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Save activation memory at the cost of compute")
]
PrecisionOption = Annotated[
    str,
    typer.Option("--mixed-precision", help="auto (fp16 on CUDA, none elsewhere), no, fp16 (CUDA) or bf16"),
]
EveryOption = Annotated[
    int | None, typer.Option("--checkpoint-every", metavar="N", help="Save a checkpoint every N steps")
]
ResumeOption = Annotated[
    str | None,
    typer.Option("--resume", metavar="PATH|latest", help="Continue from a checkpoint folder, or the run's latest"),
]
DescriptionOption = Annotated[str | None, typer.Option("--description", help="The installed model's description")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit; nothing is trained")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")]


def _resume(value: str | None) -> str | bool | None:
    return True if value == "latest" else value


def _show_plan(plan: Any, as_json: bool) -> None:
    from modeldepot.train._plan import plan_lines

    if as_json:
        console.print_json(json.dumps(plan.to_dict()))
        return
    for line in plan_lines(plan):
        console.print(escape(line), highlight=False)


def _installed(record: Any, as_json: bool) -> None:
    if as_json:
        console.print_json(record.model_dump_json())
        return
    console.print(
        escape(
            f"installed {record.type.value} {record.name!r} ({record.base.value}, key {record.key}) at {record.path}"
        ),
        highlight=False,
    )


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C: one line saying where the checkpoint is and how to continue, exit 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        checkpoint = getattr(exc, "checkpoint", None)
        if checkpoint is None:
            raise
        raise fail(f"interrupted; checkpoint saved to {checkpoint}: continue with --resume {checkpoint}", 130) from exc


def _train(call: Callable[..., Any], home: Path | None, as_json: bool, **kwargs: Any) -> None:
    with depot(home, ("transformers", "diffusers")) as mm, _interruptible():
        record = call(mm, **kwargs)
    _installed(record, as_json)


@train_app.command("lora")
def lora(
    base: BaseOption,
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", metavar="DIR", help="Folder of images with .txt captions (kohya N_name sub-folders repeat)"
        ),
    ],
    output_name: OutputNameOption = None,
    rank: RankOption = 4,
    alpha: AlphaOption = 4.0,
    steps: StepsOption = 500,
    lr: LrOption = 1e-4,
    batch_size: BatchOption = 1,
    resolution: ResolutionOption = None,
    text_encoder: TextEncoderOption = False,
    text_encoder_lr: TextEncoderLrOption = None,
    seed: SeedOption = 0,
    gradient_checkpointing: CheckpointingOption = False,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: EveryOption = None,
    resume: ResumeOption = None,
    caption_ext: Annotated[
        str, typer.Option("--caption-ext", help="Caption file extension (then .caption is tried)")
    ] = ".txt",
    default_caption: Annotated[
        str | None, typer.Option("--default-caption", help="Caption of images without a caption file")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Times each image of DIR itself is seen per epoch")] = 1,
    shuffle_tags: Annotated[bool, typer.Option("--shuffle-tags", help="Shuffle the comma-separated tags")] = False,
    keep_tokens: Annotated[int, typer.Option("--keep-tokens", help="Leading tags kept in place when shuffling")] = 0,
    crop: Annotated[str, typer.Option("--crop", help="center or random")] = "center",
    flip: Annotated[bool, typer.Option("--flip", help="Mirror half of the samples")] = False,
    no_buckets: Annotated[bool, typer.Option("--no-buckets", help="Square crops only, no aspect buckets")] = False,
    description: DescriptionOption = None,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a LoRA on a folder of captioned images and install it (kohya format, ss_* metadata).

    Checkpoints go to HOME/train/NAME/checkpoints; Ctrl-C saves one and --resume continues it."""
    from modeldepot import train

    dataset_options: dict[str, Any] = {
        "caption_ext": caption_ext,
        "default_caption": default_caption,
        "repeats": repeats,
        "shuffle_tags": shuffle_tags,
        "keep_tokens": keep_tokens,
        "crop": crop,
        "flip": flip,
        "buckets": not no_buckets,
    }
    common: dict[str, Any] = {
        "base": base,
        "data": data,
        "output_name": output_name,
        "rank": rank,
        "alpha": alpha,
        "steps": steps,
        "batch_size": batch_size,
        "text_encoder": text_encoder,
        "resolution": resolution,
        "gradient_checkpointing": gradient_checkpointing,
        "dataset_options": dataset_options,
    }
    if dry_run:
        with depot(home) as mm:
            _show_plan(train.plan_lora(mm, **common), as_json)
        return
    _train(
        train.train_lora,
        home,
        as_json,
        lr=lr,
        text_encoder_lr=text_encoder_lr,
        seed=seed,
        mixed_precision=mixed_precision,
        checkpoint_every=checkpoint_every,
        resume=_resume(resume),
        progress=not quiet and not as_json,
        description=description,
        **common,
    )


@train_app.command("dreambooth")
def dreambooth(
    base: BaseOption,
    instance_data: Annotated[
        Path, typer.Option("--instance-data", "-d", metavar="DIR", help="Folder of images of the subject")
    ],
    instance_prompt: Annotated[
        str, typer.Option("--instance-prompt", metavar="TEXT", help="Prompt naming the subject: 'a photo of sks dog'")
    ],
    class_prompt: Annotated[
        str | None, typer.Option("--class-prompt", metavar="TEXT", help="Prompt of its class: 'a photo of a dog'")
    ] = None,
    class_data: Annotated[
        Path | None,
        typer.Option(
            "--class-data", metavar="DIR", help="Class images; missing ones are generated (default: the run folder)"
        ),
    ] = None,
    no_prior_preservation: Annotated[
        bool, typer.Option("--no-prior-preservation", help="Train on the instance images only")
    ] = False,
    num_class_images: Annotated[int, typer.Option("--num-class-images", help="Class images to use")] = 100,
    prior_loss_weight: Annotated[float, typer.Option("--prior-loss-weight", help="Weight of the class loss")] = 1.0,
    class_steps: Annotated[int, typer.Option("--class-steps", help="Denoising steps per generated class image")] = 25,
    output_name: OutputNameOption = None,
    rank: RankOption = 4,
    alpha: AlphaOption = 4.0,
    steps: StepsOption = 500,
    lr: LrOption = 1e-4,
    batch_size: BatchOption = 1,
    resolution: ResolutionOption = None,
    text_encoder: TextEncoderOption = False,
    text_encoder_lr: TextEncoderLrOption = None,
    seed: SeedOption = 0,
    gradient_checkpointing: CheckpointingOption = False,
    mixed_precision: PrecisionOption = "auto",
    checkpoint_every: EveryOption = None,
    resume: ResumeOption = None,
    description: DescriptionOption = None,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dreambooth-LoRA: teach the base model a subject, with prior preservation (class images made by the
    base model itself) unless --no-prior-preservation; the LoRA is installed."""
    from modeldepot import train

    common: dict[str, Any] = {
        "base": base,
        "instance_data": instance_data,
        "instance_prompt": instance_prompt,
        "class_prompt": class_prompt,
        "class_data": class_data,
        "prior_preservation": not no_prior_preservation,
        "num_class_images": num_class_images,
        "output_name": output_name,
        "rank": rank,
        "alpha": alpha,
        "steps": steps,
        "batch_size": batch_size,
        "text_encoder": text_encoder,
        "resolution": resolution,
        "gradient_checkpointing": gradient_checkpointing,
    }
    if dry_run:
        with depot(home) as mm:
            _show_plan(train.plan_dreambooth_lora(mm, **common), as_json)
        return
    _train(
        train.train_dreambooth_lora,
        home,
        as_json,
        prior_loss_weight=prior_loss_weight,
        class_steps=class_steps,
        lr=lr,
        text_encoder_lr=text_encoder_lr,
        seed=seed,
        mixed_precision=mixed_precision,
        checkpoint_every=checkpoint_every,
        resume=_resume(resume),
        progress=not quiet and not as_json,
        description=description,
        **common,
    )


@train_app.command("predictor")
def predictor(
    clip: Annotated[
        str, typer.Option("--clip", "-c", metavar="KEY", help="The CLIP model whose image embeddings are scored")
    ],
    data: Annotated[Path, typer.Option("--data", "-d", metavar="DIR", help="Folder of the scored images")],
    scores: Annotated[
        Path | None,
        typer.Option("--scores", metavar="CSV", help="Score file: image,score columns (default: DIR/scores.csv)"),
    ] = None,
    output_name: Annotated[
        str | None,
        typer.Option(
            "--output-name", "-o", metavar="NAME", help="Name of the installed model (default: CLIP-predictor)"
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training rows")] = 50,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (Adam)")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per optimisation step")] = 32,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of rows held out for the validation loss")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the weights, the order and dropout")] = 0,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the CLIP+MLP predictor (LAION's aesthetic-predictor layout) on scored images and install it.

    The images' CLIP embeddings are written to HOME/train/predictor/ first; `modeldepot run predict` scores
    an image with the result."""
    from modeldepot.train import predictor as p

    if dry_run:
        _predictor_plan(home, clip, data, scores, output_name, epochs, batch_size, val_fraction, as_json)
        return
    with depot(home, ("transformers",)) as mm:
        prepared = p.prepare(mm, clip=clip, data=data, scores=scores)
        record = p.train_predictor(
            mm,
            data=prepared,
            output_name=output_name,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
            progress=not quiet and not as_json,
        )
    _installed(record, as_json)


def _predictor_plan(
    home: Path | None,
    clip: str,
    data: Path,
    scores: Path | None,
    output_name: str | None,
    epochs: int,
    batch_size: int,
    val_fraction: float,
    as_json: bool,
) -> None:
    """Rows, split and outputs of a predictor run, from the score file and the CLIP's record only."""
    from modeldepot._fs import human_size
    from modeldepot.train.predictor.prepare import default_output, read_scores
    from modeldepot.train.predictor.train import validation_size

    with depot(home) as mm:
        config = mm.store.resolve(clip)
        rows = read_scores(scores or data / "scores.csv", data)
        held = validation_size(len(rows), val_fraction)
        plan = {
            "clip_key": config.key,
            "clip_name": config.name,
            "rows": len(rows),
            "train_rows": len(rows) - held,
            "val_rows": held,
            "epochs": epochs,
            "steps_per_epoch": -(-(len(rows) - held) // batch_size),
            "output_name": output_name or f"{config.name}-predictor",
            "embeddings_file": str(default_output(mm, config.name, data)),
            "clip_bytes": config.file_size,
        }
        dim = _clip_width(Path(config.path))
        # the CLIP's weights while embedding, then the embeddings and the MLP with Adam's state (float32)
        mlp = 1024 * dim + 1024 * 128 + 128 * 64 + 64 * 16 + 16 if dim else 0
        plan["memory_estimate"] = (config.file_size or 0) + 4 * (len(rows) * (dim or 0) + 4 * mlp)
    if as_json:
        console.print_json(json.dumps(plan))
        return
    lines = [
        f"train predictor {plan['output_name']!r} on CLIP {config.name} (key {config.key[:8]})",
        f"  {len(rows)} scored images: {plan['train_rows']} to train on, {held} held out; {epochs} epochs of"
        f" {plan['steps_per_epoch']} step(s)",
        f"  memory (estimate): {human_size(plan['memory_estimate'])} = CLIP weights {human_size(config.file_size)}"
        f" + {dim or '?'}-wide embeddings and the MLP",
        f"  embeddings written to {plan['embeddings_file']}",
    ]
    for line in lines:
        console.print(escape(line), highlight=False)


def _clip_width(path: Path) -> int | None:
    """The CLIP's embedding width (``projection_dim`` of its config.json), when it has one."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        width = config.get("projection_dim")
    except (OSError, ValueError, AttributeError):
        return None
    return width if isinstance(width, int) and width > 0 else None
