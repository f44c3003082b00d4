"""Use models: ``run upscale | restore | caption | interrogate | txt2img | img2img | inpaint | depth2img | predict``.

A thin face over ``modeldepot.services``: each command checks its files first (inputs readable, outputs
free), opens the depot, builds the service with ``from_key`` (loading through the cache) and writes PNGs
whose ``parameters`` text chunk says how they were made (A1111's format for generations, so other tools
read them). torch, PIL and the services are imported inside the commands: ``modeldepot list`` stays light.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from modeldepot._stepbar import step_bar
from modeldepot.cli._app import HomeOption, JsonOption, app, console, err_console, fail
from modeldepot.cli._run_files import depot, outputs, parse_lora, read_depth, read_image, save
from modeldepot.services import SCHEDULER_NAMES  # torch-free: the services load on first use

if TYPE_CHECKING:
    pass

run_app = typer.Typer(
    help="Use models: upscale, restore faces, caption, interrogate, generate images (txt2img, img2img, ...), score.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")


ModelOption = Annotated[
    str, typer.Option("--model", "-m", metavar="KEY", help="Model key, name or key prefix (see `modeldepot list`)")
]
ImageOption = Annotated[
    Path, typer.Option("--image", "-i", metavar="PATH", help="Input image file (PNG, JPEG, WebP, ...)")
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="PNG file to write, or an existing folder to write the default name into "
        "(default: a name made from the command, written in the current folder)",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite output files that already exist")]
PromptOption = Annotated[str, typer.Option("--prompt", "-p", metavar="TEXT", help="What to draw")]
NegativeOption = Annotated[str, typer.Option("--negative", metavar="TEXT", help="What not to draw (negative prompt)")]
StepsOption = Annotated[int, typer.Option("--steps", help="Denoising steps")]
GuidanceOption = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale (CFG)")]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Random seed; the same seed gives the same image (default: random)")
]
LoraOption = Annotated[
    list[str] | None,
    typer.Option(
        "--lora", metavar="KEY[:WEIGHT]", help="LoRA to apply, as KEY or KEY:WEIGHT (weight default 1.0); repeatable"
    ),
]
EmbeddingOption = Annotated[
    list[str] | None,
    typer.Option(
        "--embedding", metavar="KEY", help="Textual-inversion embedding KEY; its name is the prompt trigger; repeatable"
    ),
]
VaeOption = Annotated[
    str | None, typer.Option("--vae", metavar="KEY", help="VAE KEY to decode with instead of the model's own")
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler", metavar="NAME", help=f"Scheduler (default: the model's own): {', '.join(SCHEDULER_NAMES)}"
    ),
]
NumImagesOption = Annotated[
    int, typer.Option("--num-images", "-n", help="Images to make; written as OUT.png, OUT-1.png, OUT-2.png, ...")
]
CompileOption = Annotated[bool, typer.Option("--compile", help="Run the unet through torch.compile (slow first run)")]
StrengthHelp = "How much to change the input image: 0 keeps it, 1 repaints it entirely"


@dataclass(frozen=True)
class _GenerationOptions:
    """The options every generation command shares, as given on the command line."""

    prompt: str
    negative: str
    steps: int
    guidance: float
    seed: int | None
    loras: list[str]
    embeddings: list[str]
    vae: str | None
    scheduler: str | None
    num_images: int
    compile: bool


def _model_name(service: Any, key: str) -> str:
    config = service.bound.config
    return str(config.name) if config is not None else key


def _generate(
    task: str,
    model: str,
    home: Path | None,
    gen: _GenerationOptions,
    output: Path | None,
    force: bool,
    inputs: list[tuple[str, Path]],
    **task_options: Any,
) -> None:
    """Read ``inputs``, run the ``task`` service, write its images; ``task_options`` go to ``generate``."""
    seed = gen.seed if gen.seed is not None else random.randrange(2**32)  # chosen here to name the file
    loras = [parse_lora(text) for text in gen.loras]
    paths = outputs(output, f"{task}-{seed}.png", gen.num_images, force)
    pictures = [read_depth(path) if what == "depth map" else read_image(path, what) for what, path in inputs]
    from modeldepot.services import diffusion

    service_class: Any = {
        "txt2img": diffusion.Txt2Img,
        "img2img": diffusion.Img2Img,
        "inpaint": diffusion.Inpaint,
        "depth2img": diffusion.Depth2Img,
    }[task]
    with depot(home, ("transformers", "diffusers")) as mm, step_bar(task, err_console) as progress:
        service = service_class.from_key(mm, model, compile=gen.compile)
        images = service.generate(
            gen.prompt,
            *pictures,
            negative_prompt=gen.negative,
            steps=gen.steps,
            guidance=gen.guidance,
            seed=seed,
            loras=loras,
            embeddings=list(gen.embeddings),
            vae=gen.vae,
            scheduler=gen.scheduler,
            num_images=gen.num_images,
            progress=progress,
            **task_options,
        )
    for image, path in zip(images, paths, strict=False):
        save(image, path, note=f" (seed {seed})")


@run_app.command("upscale")
def upscale(
    model: ModelOption,
    image: ImageOption,
    output: OutputOption = None,
    tile: Annotated[int, typer.Option("--tile", help="Input pixels per tile (0: the whole image at once)")] = 512,
    overlap: Annotated[int, typer.Option("--overlap", help="Pixels of context around each tile")] = 32,
    outscale: Annotated[
        float | None, typer.Option("--outscale", help="Final scale, resized from the model's own (default: its own)")
    ] = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Upscale an image with an ESRGAN-family model (tiled, so big images fit in memory).

    Writes IMAGE-upscaled.png in the current folder unless -o is given."""
    paths = outputs(output, f"{image.stem}-upscaled.png", 1, force)
    picture = read_image(image)
    from modeldepot.services.upscale import Upscaler

    with depot(home) as mm:
        service = Upscaler.from_key(mm, model)
        result = service(picture, tile=tile, overlap=overlap, outscale=outscale)
    text = f"Upscaled with {_model_name(service, model)} (x{service.scale}), tile {tile}, overlap {overlap}"
    save(result, paths[0], text + (f", outscale {outscale:g}" if outscale is not None else ""))


@run_app.command("restore")
def restore(
    model: ModelOption,
    image: ImageOption,
    output: OutputOption = None,
    weight: Annotated[
        float,
        typer.Option(
            "--weight",
            help="CodeFormer: fidelity, 0 restores the most and 1 keeps the most of the input; "
            "GFPGAN: how much of the restored face shows, 0 none and 1 all",
        ),
    ] = 0.5,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed, where the model draws noise")] = None,
    aligned: Annotated[
        bool, typer.Option("--aligned", help="The image is one square aligned face crop: restore it without detection")
    ] = False,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Restore faces with a GFPGAN or CodeFormer model: an aligned 512x512 face crop, or a whole image when a
    face detector is installed.

    Writes IMAGE-restored.png in the current folder unless -o is given."""
    paths = outputs(output, f"{image.stem}-restored.png", 1, force)
    picture = read_image(image)
    from modeldepot.services.face import FaceRestorer

    with depot(home) as mm:
        service = FaceRestorer.from_key(mm, model)
        result = service(picture, weight=weight, seed=seed, aligned=True if aligned else None)
    text = f"Faces restored with {_model_name(service, model)}, weight {weight:g}"
    save(result, paths[0], text + (f", seed {seed}" if seed is not None else ""))


@run_app.command("caption")
def caption(
    model: ModelOption,
    image: ImageOption,
    max_length: Annotated[int, typer.Option("--max-length", help="Most tokens in the caption")] = 30,
    num_beams: Annotated[int, typer.Option("--num-beams", help="1: greedy decoding; more: beam search")] = 1,
    home: HomeOption = None,
) -> None:
    """Print a caption of an image, written by a BLIP captioner."""
    picture = read_image(image)
    from modeldepot.services.blip import BlipCaptioner

    with depot(home, ("transformers",)) as mm:
        text = BlipCaptioner.from_key(mm, model)(picture, max_length=max_length, num_beams=num_beams)
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _labels(labels: list[str], labels_file: Path | None) -> list[str]:
    """``--label``s, then the lines of ``--labels-file`` (blank lines and ``#`` comments skipped)."""
    found = list(labels)
    if labels_file is not None:
        try:
            text = labels_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(escape(f"cannot read labels file {labels_file}: {exc}")) from exc
        lines = [line.strip() for line in text.splitlines()]
        found += [line for line in lines if line and not line.startswith("#")]
    if not found:
        raise fail("give labels to rank: --label (repeatable) or --labels-file with one label a line", code=2)
    return found


@run_app.command("interrogate")
def interrogate(
    model: ModelOption,
    image: ImageOption,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", metavar="TEXT", help="A label to rank; repeatable")
    ] = None,
    labels_file: Annotated[
        Path | None,
        typer.Option("--labels-file", metavar="PATH", help="Text file of labels, one a line (# starts a comment)"),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many of the best labels to print")] = 5,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rank labels for an image with a CLIP model (zero-shot): the best first, with scores summing to 1."""
    labels = _labels(label or [], labels_file)
    picture = read_image(image)
    from modeldepot.services.clip import ClipInterrogator

    with depot(home, ("transformers",)) as mm:
        ranked = ClipInterrogator.from_key(mm, model)(picture, labels, top_k=top_k)
    if as_json:
        console.print_json(json.dumps([{"label": name, "score": score} for name, score in ranked]))
        return
    for name, score in ranked:
        console.print(f"{score:.4f}  {name}", highlight=False, markup=False)


@run_app.command("txt2img")
def txt2img(
    model: ModelOption,
    prompt: PromptOption,
    negative: NegativeOption = "",
    steps: StepsOption = 30,
    guidance: GuidanceOption = 7.5,
    width: Annotated[int | None, typer.Option("--width", help="Image width in px (default: the model's)")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Image height in px (default: the model's)")] = None,
    seed: SeedOption = None,
    lora: LoraOption = None,
    embedding: EmbeddingOption = None,
    vae: VaeOption = None,
    scheduler: SchedulerOption = None,
    num_images: NumImagesOption = 1,
    compile_: CompileOption = False,
    output: OutputOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Generate images from a prompt with a Stable Diffusion model.

    Writes txt2img-SEED.png in the current folder unless -o is given."""
    gen = _GenerationOptions(
        prompt, negative, steps, guidance, seed, lora or [], embedding or [], vae, scheduler, num_images, compile_
    )
    _generate("txt2img", model, home, gen, output, force, [], width=width, height=height)


@run_app.command("img2img")
def img2img(
    model: ModelOption,
    prompt: PromptOption,
    image: ImageOption,
    strength: Annotated[float, typer.Option("--strength", help=StrengthHelp)] = 0.75,
    negative: NegativeOption = "",
    steps: StepsOption = 30,
    guidance: GuidanceOption = 7.5,
    seed: SeedOption = None,
    lora: LoraOption = None,
    embedding: EmbeddingOption = None,
    vae: VaeOption = None,
    scheduler: SchedulerOption = None,
    num_images: NumImagesOption = 1,
    compile_: CompileOption = False,
    output: OutputOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Redraw an image guided by a prompt (the output has the input's size).

    Writes img2img-SEED.png in the current folder unless -o is given."""
    gen = _GenerationOptions(
        prompt, negative, steps, guidance, seed, lora or [], embedding or [], vae, scheduler, num_images, compile_
    )
    _generate("img2img", model, home, gen, output, force, [("image", image)], strength=strength)


@run_app.command("inpaint")
def inpaint(
    model: ModelOption,
    prompt: PromptOption,
    image: ImageOption,
    mask: Annotated[
        Path, typer.Option("--mask", metavar="PATH", help="Mask image of the same size: white is repainted")
    ],
    strength: Annotated[float, typer.Option("--strength", help=StrengthHelp + " (masked area)")] = 1.0,
    negative: NegativeOption = "",
    steps: StepsOption = 30,
    guidance: GuidanceOption = 7.5,
    seed: SeedOption = None,
    lora: LoraOption = None,
    embedding: EmbeddingOption = None,
    vae: VaeOption = None,
    scheduler: SchedulerOption = None,
    num_images: NumImagesOption = 1,
    compile_: CompileOption = False,
    output: OutputOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Repaint the white part of a mask with an inpainting (or normal) Stable Diffusion model.

    Writes inpaint-SEED.png in the current folder unless -o is given."""
    gen = _GenerationOptions(
        prompt, negative, steps, guidance, seed, lora or [], embedding or [], vae, scheduler, num_images, compile_
    )
    _generate("inpaint", model, home, gen, output, force, [("image", image), ("mask", mask)], strength=strength)


@run_app.command("depth2img")
def depth2img(
    model: ModelOption,
    prompt: PromptOption,
    image: ImageOption,
    depth: Annotated[
        Path,
        typer.Option(
            "--depth", metavar="PATH", help="Depth map of the same size, near = bright (8 or 16-bit grayscale)"
        ),
    ],
    strength: Annotated[float, typer.Option("--strength", help=StrengthHelp)] = 0.8,
    negative: NegativeOption = "",
    steps: StepsOption = 30,
    guidance: GuidanceOption = 7.5,
    seed: SeedOption = None,
    lora: LoraOption = None,
    embedding: EmbeddingOption = None,
    vae: VaeOption = None,
    scheduler: SchedulerOption = None,
    num_images: NumImagesOption = 1,
    compile_: CompileOption = False,
    output: OutputOption = None,
    force: ForceOption = False,
    home: HomeOption = None,
) -> None:
    """Redraw an image keeping its depth layout, with a Stable Diffusion 2 depth model (no depth estimator is
    bundled: give the depth map).

    Writes depth2img-SEED.png in the current folder unless -o is given."""
    gen = _GenerationOptions(
        prompt, negative, steps, guidance, seed, lora or [], embedding or [], vae, scheduler, num_images, compile_
    )
    inputs = [("image", image), ("depth map", depth)]
    _generate("depth2img", model, home, gen, output, force, inputs, strength=strength)


@run_app.command("predict")
def predict(
    model: ModelOption,
    image: Annotated[list[Path], typer.Option("--image", "-i", metavar="PATH", help="Image file to score; repeatable")],
    clip: Annotated[
        str | None,
        typer.Option("--clip", metavar="KEY", help="CLIP model to embed with (required for a released LAION file)"),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score images with a CLIP+MLP predictor (trained with `modeldepot train predictor`, or LAION's)."""
    pictures = [read_image(path) for path in image]
    from modeldepot.train.predictor import ClipPredictor

    with depot(home, ("transformers",)) as mm:
        values = ClipPredictor.from_key(mm, model, clip=clip).predict(pictures)
    if as_json:
        console.print_json(json.dumps({str(path): value for path, value in zip(image, values, strict=True)}))
        return
    for path, value in zip(image, values, strict=True):
        console.print(escape(f"{value:.4f}  {path}"), highlight=False)
