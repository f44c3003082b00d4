"""The text files of a training folder: captions beside the images, EveryDream's ``multiply.txt``, and
the comma-separated tags a caption is made of (kohya's ``shuffle_caption`` / ``keep_tokens``)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from modeldepot.errors import TrainingDataError

if TYPE_CHECKING:
    import numpy as np

# EveryDream writes "<stem>.caption" when "<stem>.txt" is absent: it is always the second choice.
FALLBACK_CAPTION_EXT = ".caption"
MULTIPLY_FILE = "multiply.txt"


def check_caption_ext(caption_ext: str | None) -> None:
    """Refuse an extension that cannot name a caption file beside an image (``txt``, ``.``, ``a/.txt``)."""
    if caption_ext is None:
        return
    if (
        not isinstance(caption_ext, str)
        or not caption_ext.startswith(".")
        or len(caption_ext) < 2
        or any(c in caption_ext for c in "/\\")
    ):
        raise TrainingDataError(
            f"caption_ext must be a file extension starting with '.', like '.txt', not {caption_ext!r}"
        )


def caption_file(image: Path, caption_ext: str) -> Path | None:
    """The caption file of ``image``: ``<stem><caption_ext>``, else ``<stem>.caption``, else None."""
    for ext in (caption_ext, FALLBACK_CAPTION_EXT):
        candidate = image.with_name(image.stem + ext)
        if candidate.is_file():
            return candidate
    return None


def read_text(path: Path) -> str:
    """A small text file as UTF-8 (a BOM, as Windows editors write, is dropped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainingDataError(f"cannot read {path}: {exc.strerror or exc}", path=path) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): save it as UTF-8",
            path=path,
        ) from exc


def read_caption(path: Path) -> tuple[str, int]:
    """The caption in ``path`` and how many further non-blank lines were ignored.

    As in kohya's sd-scripts, a caption is one line: the first non-blank line, stripped. An empty file is
    an empty caption (unconditional samples are legitimate).
    """
    lines = [line.strip() for line in read_text(path).splitlines()]
    lines = [line for line in lines if line]
    return (lines[0] if lines else ""), max(0, len(lines) - 1)


def read_multiplier(path: Path) -> Decimal:
    """The number in an EveryDream ``multiply.txt`` (``2``, ``1.5``), which must be above 0."""
    text = read_text(path).strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise TrainingDataError(f"{path} must hold one number above 0 (like 2 or 1.5), not {text[:40]!r}", path=path)
    return value


def scaled_repeats(base: int, multiplier: Decimal) -> int:
    """``base`` repeats times a ``multiply.txt`` value, rounded half up, at least 1.

    EveryDream draws a random share of a folder's images for the fraction in every epoch; whole repeats
    keep the epoch length fixed and each image's count known (kohya's ``ss_dataset_dirs``), so the
    fraction is rounded instead.
    """
    return max(1, int((base * multiplier).to_integral_value(rounding=ROUND_HALF_UP)))


def split_tags(caption: str) -> list[str]:
    """The comma-separated tags of a caption, stripped, blanks dropped."""
    return [tag for tag in (part.strip() for part in caption.split(",")) if tag]


def shuffle_tags(caption: str, keep_tokens: int, rng: np.random.Generator) -> str:
    """``caption`` with its tags after the first ``keep_tokens`` in the order ``rng`` draws, joined by ", "."""
    tags = split_tags(caption)
    fixed, rest = tags[:keep_tokens], tags[keep_tokens:]
    order = rng.permutation(len(rest))
    return ", ".join([*fixed, *(rest[i] for i in order)])


def count_tags(captions: list[str]) -> dict[str, int]:
    """How often each tag appears over ``captions``, lower-cased as kohya's ``ss_tag_frequency`` counts."""
    counts: dict[str, int] = {}
    for caption in captions:
        for tag in split_tags(caption):
            key = tag.lower()
            counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = [
    "FALLBACK_CAPTION_EXT",
    "MULTIPLY_FILE",
    "caption_file",
    "check_caption_ext",
    "count_tags",
    "read_caption",
    "read_multiplier",
    "read_text",
    "scaled_repeats",
    "shuffle_tags",
    "split_tags",
]
