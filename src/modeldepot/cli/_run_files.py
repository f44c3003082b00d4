"""Files and surroundings of the ``run`` commands: outputs checked before any work, input images read
upright, LoRA arguments, quiet libraries, the depot, a step bar, PNGs with their parameters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from modeldepot.cli._app import console, fail, open_manager

if TYPE_CHECKING:
    from PIL import Image


def outputs(output: Path | None, default: str, count: int, force: bool) -> list[Path]:
    """The files a command will write (``out.png``, ``out-1.png``, ...), refused up front if one exists."""
    base = Path(default) if output is None else output / default if output.is_dir() else output
    if base.suffix.lower() != ".png":
        raise fail(escape(f"output {base} must be a .png file (the parameters are kept in PNG text chunks)"), code=2)
    paths = [base, *(base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(1, count))]
    for path in paths:
        if path.is_dir():
            raise fail(escape(f"output {path} is a folder"))
        if path.exists() and not force:
            raise fail(escape(f"output {path} already exists: choose another --output or add --force"))
    return paths


def check_input(path: Path, what: str) -> None:
    if not path.exists():
        raise fail(escape(f"{what} file {path} does not exist"))
    if path.is_dir():
        raise fail(escape(f"{what} {path} is a folder, not an image file"))


def read_image(path: Path, what: str = "image") -> Image.Image:
    """An image file, upright (EXIF orientation applied, as cameras and phones expect), fully read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from modeldepot.errors import InvalidImageError

    check_input(path, what)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"cannot read {what} {path}: {exc}") from exc
    return image


def read_depth(path: Path) -> Any:
    """A depth map file: 8-bit images as they are; 16-bit and float ones (how depth is usually saved) as a
    ``[1, H, W]`` tensor, which keeps their precision where an 8-bit conversion would clip it."""
    image = read_image(path, "depth map")
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32)
    top = float(array.max())
    return torch.from_numpy(array / top if top > 0 else array).unsqueeze(0)


def parse_lora(text: str) -> tuple[str, float]:
    """``KEY`` or ``KEY:WEIGHT``; a tail that is not a number is part of the key (names may have colons)."""
    key, sep, tail = text.rpartition(":")
    if sep and key:
        try:
            return key, float(tail)
        except ValueError:
            pass
    return text, 1.0


@contextmanager
def quiet_libraries(libraries: tuple[str, ...]) -> Iterator[None]:
    """Silence the warnings and tqdm bars of ``libraries`` (transformers, diffusers) while a command runs:
    they mean nothing to a user here and would break the one-line errors. Restored afterwards; a library's
    own ``<NAME>_VERBOSITY`` variable wins. Only the libraries a command uses are imported (upscaling
    needs neither: importing them would cost a second)."""
    import importlib

    logs = [(importlib.import_module(f"{name}.utils.logging"), f"{name.upper()}_VERBOSITY") for name in libraries]
    saved = [(log, log.get_verbosity(), log.is_progress_bar_enabled()) for log, _ in logs]
    for log, env in logs:
        if not os.environ.get(env):
            log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        yield
    finally:
        for log, verbosity, bar in saved:
            log.set_verbosity(verbosity)
            if bar:
                log.enable_progress_bar()


@contextmanager
def depot(home: Path | None, libraries: tuple[str, ...] = ()) -> Iterator[Any]:
    """The depot, with ``libraries`` quiet and running out of memory turned into one clear line."""
    import torch

    with quiet_libraries(libraries), open_manager(home) as mm:
        try:
            yield mm
        except (MemoryError, torch.OutOfMemoryError) as exc:
            raise fail(
                "out of memory running the model: try a smaller image or --width/--height, a smaller --tile, "
                "or fewer --num-images"
            ) from exc


def save(image: Image.Image, path: Path, parameters: str | None = None, note: str = "") -> None:
    from modeldepot.services._parameters import save_png

    save_png(image, path, parameters)
    console.print(f"wrote {path}{note}", highlight=False, markup=False)


__all__ = [
    "check_input",
    "depot",
    "outputs",
    "parse_lora",
    "quiet_libraries",
    "read_depth",
    "read_image",
    "save",
]
