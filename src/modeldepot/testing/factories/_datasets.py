"""Training data on disk: captioned images in the EveryDream / kohya layout (PIL only, no torch)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

#: tags the captions are drawn from: a subject, a colour, a style
_SUBJECTS = ("cat", "dog", "lighthouse", "teapot", "tree")
_COLOURS = ("red", "green", "blue", "yellow")
_STYLES = ("photo", "painting", "sketch")


def write_captioned_images(
    dest: str | Path,
    count: int = 4,
    *,
    size: int | tuple[int, int] = 32,
    seed: int = 0,
    captions: Sequence[str] | None = None,
    caption_ext: str | None = ".txt",
    fmt: str = "png",
) -> Path:
    """``count`` images ``img-NN.<fmt>`` of coloured shapes in ``dest``, each with a comma-tagged caption
    file ``img-NN<caption_ext>`` ("sks, red cat, photo"; ``caption_ext=None`` writes none). Deterministic
    for a seed. Returns ``dest``."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    width, height = (size, size) if isinstance(size, int) else size
    for i in range(count):
        colour = _COLOURS[(i + seed) % len(_COLOURS)]
        image = Image.new("RGB", (width, height), tuple(rng.randrange(40, 216) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        x0, y0 = rng.randrange(width // 2), rng.randrange(height // 2)
        fill = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
        draw.ellipse((x0, y0, x0 + width // 2, y0 + height // 2), fill=fill[colour])
        image.save(root / f"img-{i:02d}.{fmt}")
        if caption_ext is not None:
            text = (
                captions[i % len(captions)]
                if captions
                else f"sks, {colour} {rng.choice(_SUBJECTS)}, {rng.choice(_STYLES)}"
            )
            (root / f"img-{i:02d}{caption_ext}").write_text(text, encoding="utf-8")
    return root
