"""Aspect-ratio buckets (kohya's ``BucketManager``): the sizes images are trained at, which one an image
goes to, and reading an image and resizing and cropping it into its bucket."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from modeldepot.errors import TrainingDataError

Size = tuple[int, int]  # (width, height), as PIL spells sizes

_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)
# EXIF orientations 5-8 turn the picture a quarter: its upright width is the stored height
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class BucketPlan:
    """The bucket sizes of one dataset: multiples of ``step`` with an area up to ``resolution``
    squared and both sides within [``min_side``, ``max_side``] (one square bucket when disabled)."""

    resolution: int
    step: int
    min_side: int
    max_side: int
    enabled: bool

    @classmethod
    def build(
        cls, resolution: int, step: int, min_side: int | None, max_side: int | None, *, enabled: bool
    ) -> BucketPlan:
        """Check the options and fill in the default bounds (half and twice ``resolution``)."""
        for name, value in (("resolution", resolution), ("bucket_step", step)):
            if not _is_int(value) or value <= 0:
                raise TrainingDataError(f"{name} must be a positive whole number of pixels, not {value!r}")
        if resolution % step:
            raise TrainingDataError(
                f"resolution {resolution} must be a multiple of bucket_step {step} "
                f"(try {max(step, resolution // step * step)})"
            )
        low = max(step, resolution // 2 // step * step) if min_side is None else min_side
        high = resolution * 2 if max_side is None else max_side
        for name, value in (("min_bucket", low), ("max_bucket", high)):
            if not _is_int(value) or value <= 0 or value % step:
                raise TrainingDataError(f"{name} must be a positive multiple of bucket_step {step}, not {value!r}")
        if not low <= resolution <= high:
            raise TrainingDataError(
                f"min_bucket {low} and max_bucket {high} must enclose resolution {resolution} "
                "(min_bucket <= resolution <= max_bucket)"
            )
        return cls(resolution, step, low, high, enabled)

    def sizes(self) -> list[Size]:
        """The candidate buckets, sorted.

        For each width only the tallest height that fits the area is kept, plus its transpose and the
        square, as kohya's ``make_bucket_resolutions`` does. Every pair that fits would also offer exact
        but small matches: a 5:4 photo would train at 320x256 instead of 576x448 at resolution 512.
        """
        if not self.enabled:
            return [(self.resolution, self.resolution)]
        area = self.resolution**2
        found = {(self.resolution, self.resolution)}
        for width in range(self.min_side, self.max_side + 1, self.step):
            height = min(self.max_side, area // width // self.step * self.step)
            if height >= self.min_side:
                found.update({(width, height), (height, width)})
        return sorted(found)


def nearest_bucket(size: Size, candidates: list[Size]) -> Size:
    """The candidate whose aspect ratio is closest to ``size``'s.

    Ratios are compared as logarithms so that a tall image and its wide twin land in transposed buckets;
    ties go to the larger area, then to the narrower bucket.
    """
    width, height = size
    target = math.log(width / height)

    def key(bucket: Size) -> tuple[float, int, int]:
        # rounded so that equal ratios computed two ways compare as equal
        return round(abs(math.log(bucket[0] / bucket[1]) - target), 12), -bucket[0] * bucket[1], bucket[0]

    return min(candidates, key=key)


def fit_to_bucket(image: Image.Image, bucket: Size, pick: tuple[float, float] | None) -> Image.Image:
    """``image`` scaled (Lanczos) to cover ``bucket`` and cropped to it.

    ``pick`` places the crop: None centres it, ``(u, v)`` in [0, 1) chooses the left and top offsets
    among all that fit (a random crop when drawn at random).
    """
    width, height = image.size
    bucket_w, bucket_h = bucket
    scale = max(bucket_w / width, bucket_h / height)
    scaled = (max(bucket_w, round(width * scale)), max(bucket_h, round(height * scale)))
    if scaled != image.size:
        # reducing_gap shrinks big photos by whole factors first: as sharp, several times faster
        image = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    spare_w, spare_h = scaled[0] - bucket_w, scaled[1] - bucket_h
    if pick is None:
        left, top = spare_w // 2, spare_h // 2
    else:
        left, top = min(spare_w, int(pick[0] * (spare_w + 1))), min(spare_h, int(pick[1] * (spare_h + 1)))
    if (spare_w, spare_h) == (0, 0):
        return image
    return image.crop((left, top, left + bucket_w, top + bucket_h))


def upright_size(path: Path) -> Size:
    """The size of an image as shown (EXIF orientation applied), read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "PNG":
                # PIL's PNG getexif decodes every pixel to look for an eXIf chunk after them: use the header's
                exif = Image.Exif()
                if raw := image.info.get("exif"):
                    exif.load(raw)
            else:
                exif = image.getexif()
            orientation = exif.get(ExifTags.Base.Orientation)
    except _PIL_ERRORS as exc:
        raise TrainingDataError(f"cannot read image {path}: {_reason(exc)}", path=path) from exc
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def load_rgb(path: Path) -> Image.Image:
    """The decoded image, upright and RGB: transparency over white, 16-bit grey scaled to 8 bits."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # a loaded copy, even without an orientation tag
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
                # PIL's convert clips 16-bit values at 255: nearly everything would turn white
                grey = np.asarray(image, dtype=np.float64) / 257.0
                image = Image.fromarray(grey.clip(0, 255).round().astype(np.uint8), "L")
            if "A" in image.getbands() or "transparency" in image.info:
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                white.alpha_composite(image.convert("RGBA"))
                image = white
            return image.convert("RGB")
    except _PIL_ERRORS as exc:
        raise TrainingDataError(f"cannot read image {path}: {_reason(exc)}", path=path) from exc


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["BucketPlan", "Size", "fit_to_bucket", "load_rgb", "nearest_bucket", "upright_size"]
