"""``CaptionedImageDataset``: a folder of images with captions, in aspect-ratio buckets, as LoRA and
Dreambooth training read it.

The layout is the one kohya's sd-scripts and EveryDream users already have::

    photos/                 images here repeat ``repeats=`` times
        a.png  a.txt        the caption of a.png (else a.caption; else default_caption=)
        10_mycat/           a kohya sub-folder: its images repeat 10 times
            b.jpg  b.txt
            multiply.txt    EveryDream: multiplies this folder's repeats (rounded half up)

Images are checked when the dataset is built and decoded only when a sample is asked for. Every random
choice (order, crops, flips, tag order) comes from ``seed``, the epoch and the sample index, never from
a global generator, so a run can be repeated exactly.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeldepot.errors import TrainingDataError
from modeldepot.train import _captions
from modeldepot.train._buckets import BucketPlan, Size, fit_to_bucket, load_rgb, nearest_bucket, upright_size

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
# independent random streams, so that turning one augmentation on does not change the others' draws
_ORDER, _CROP, _FLIP, _TAGS = 1, 2, 3, 4
_SHOWN = 5  # file names listed in one message


@dataclass(frozen=True)
class DatasetItem:
    """One image file: its caption as written, upright size, bucket (width, height), repeats and the
    label of the folder it came from (``10_mycat``, or the top folder's name)."""

    path: Path
    caption: str
    size: Size
    bucket: Size
    repeats: int
    folder: str


@dataclass(frozen=True)
class Batch:
    """Samples of one bucket: ``pixel_values`` is float32 ``(B, 3, h, w)`` in [-1, 1]; ``size`` is the
    bucket's (width, height)."""

    pixel_values: torch.Tensor
    captions: list[str]
    paths: list[Path]
    size: Size


@dataclass(frozen=True)
class _Folder:
    path: Path
    label: str
    repeats: int


class CaptionedImageDataset:
    """Captioned images of a folder and its ``<repeats>_<name>`` sub-folders, bucketed by aspect ratio.

    Args:
        folder: the training folder.
        resolution: the side of the square bucket; every bucket has at most this squared in pixels.
        bucket_step: bucket sides are multiples of this.
        buckets: False puts every image in the ``resolution`` square.
        min_bucket: the shortest bucket side (default half ``resolution``).
        max_bucket: the longest bucket side (default twice ``resolution``).
        repeats: how often each image directly in ``folder`` is seen per epoch.
        shuffle_tags: shuffle a caption's comma-separated tags in every sample.
        keep_tokens: how many leading tags stay in place when shuffling.
        crop: "center" or "random" (where the bucket is cut from the scaled image).
        flip: mirror half of the samples horizontally.
        caption_ext: the caption file extension; None reads no caption files (Dreambooth).
        default_caption: the caption of images without a caption file.
        seed: the root of every random choice, an integer in [0, 2**64).

    Raises:
        TrainingDataError: a missing or empty folder, an unreadable image or caption, images without
            captions and no ``default_caption``, or an option out of range.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        resolution: int = 512,
        bucket_step: int = 64,
        buckets: bool = True,
        min_bucket: int | None = None,
        max_bucket: int | None = None,
        repeats: int = 1,
        shuffle_tags: bool = False,
        keep_tokens: int = 0,
        crop: str = "center",
        flip: bool = False,
        caption_ext: str | None = ".txt",
        default_caption: str | None = None,
        seed: int = 0,
    ) -> None:
        self._plan = BucketPlan.build(resolution, bucket_step, min_bucket, max_bucket, enabled=buckets)
        _check_options(repeats, keep_tokens, crop, caption_ext, default_caption, seed)
        self.folder = Path(folder).expanduser().resolve()
        self.resolution = resolution
        self.bucket_step = bucket_step
        self.min_bucket = self._plan.min_side
        self.max_bucket = self._plan.max_side
        self.bucketing = buckets
        self.repeats = repeats
        self.shuffle_tags = shuffle_tags
        self.keep_tokens = keep_tokens
        self.crop = crop
        self.flip = flip
        self.caption_ext = caption_ext
        self.default_caption = default_caption
        self.seed = seed
        self.notes: list[str] = []
        self._items = self._scan()
        self._starts: list[int] = []  # expanded index of each item's first sample
        total = 0
        for item in self._items:
            self._starts.append(total)
            total += item.repeats
        self._length = total

    # What the folder holds ------------------------------------------------------------------------
    @property
    def items(self) -> list[DatasetItem]:
        """One entry per image file, in folder then file-name order (repeats not expanded)."""
        return list(self._items)

    def __len__(self) -> int:
        """Samples per epoch: every image times its repeats."""
        return self._length

    @property
    def buckets(self) -> dict[Size, int]:
        """Samples per epoch in each bucket (width, height) in use."""
        counts: dict[Size, int] = {}
        for item in self._items:
            counts[item.bucket] = counts.get(item.bucket, 0) + item.repeats
        return dict(sorted(counts.items()))

    def tag_frequencies(self) -> dict[str, dict[str, int]]:
        """Lower-cased tag counts per folder label, each image counted once (kohya's ``ss_tag_frequency``)."""
        captions: dict[str, list[str]] = {}
        for item in self._items:
            captions.setdefault(item.folder, []).append(item.caption)
        return {label: _captions.count_tags(texts) for label, texts in captions.items()}

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """``{label: {"n_repeats": ..., "img_count": ...}}`` per folder with images (kohya's ``ss_dataset_dirs``)."""
        dirs: dict[str, dict[str, int]] = {}
        for item in self._items:
            entry = dirs.setdefault(item.folder, {"n_repeats": item.repeats, "img_count": 0})
            entry["img_count"] += 1
        return dirs

    def steps_per_epoch(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields per epoch (each bucket's last one may be short)."""
        _check_count("batch_size", batch_size, 1)
        return sum(-(-count // batch_size) for count in self.buckets.values())

    # Samples --------------------------------------------------------------------------------------
    def sample(self, index: int, *, epoch: int = 0) -> tuple[torch.Tensor, str]:
        """Sample ``index`` (of ``len(self)``) of ``epoch``: a float32 ``(3, h, w)`` tensor in [-1, 1] and
        its caption, with the crop, flip and tag order that epoch gives it."""
        _check_count("epoch", epoch, 0)
        if not 0 <= index < self._length:
            raise IndexError(f"sample {index} out of range: the dataset has {self._length} samples per epoch")
        item = self._item(index)
        image = fit_to_bucket(load_rgb(item.path), item.bucket, self._crop_pick(epoch, index))
        if self.flip and self._rng(_FLIP, epoch, index).random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        caption = item.caption
        if self.shuffle_tags:
            caption = _captions.shuffle_tags(caption, self.keep_tokens, self._rng(_TAGS, epoch, index))
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return pixels.to(torch.float32).div_(127.5).sub_(1.0), caption

    def batches(self, batch_size: int, *, epoch: int = 0) -> Iterator[Batch]:
        """Every sample of ``epoch`` once, in batches of one bucket each, in an order drawn from the seed
        and epoch; images are decoded as each batch is made."""
        _check_count("batch_size", batch_size, 1)
        _check_count("epoch", epoch, 0)
        return self._batches(self._epoch_order(batch_size, epoch), epoch)

    def __repr__(self) -> str:
        return (
            f"CaptionedImageDataset({str(self.folder)!r}, images={len(self._items)}, samples={self._length}, "
            f"buckets={len(self.buckets)})"
        )

    def _batches(self, order: list[list[int]], epoch: int) -> Iterator[Batch]:
        # a generator of its own, so that batches() checks its arguments when called, not at the first batch
        for indices in order:
            samples = [self.sample(i, epoch=epoch) for i in indices]
            yield Batch(
                pixel_values=torch.stack([pixels for pixels, _ in samples]),
                captions=[caption for _, caption in samples],
                paths=[self._item(i).path for i in indices],
                size=self._item(indices[0]).bucket,
            )

    def _item(self, index: int) -> DatasetItem:
        return self._items[bisect.bisect_right(self._starts, index) - 1]

    def _epoch_order(self, batch_size: int, epoch: int) -> list[list[int]]:
        # kohya's order: shuffle within each bucket, cut into batches, then shuffle the batches
        rng = self._rng(_ORDER, epoch, 0)
        by_bucket: dict[Size, list[int]] = {}
        for item, start in zip(self._items, self._starts, strict=True):
            by_bucket.setdefault(item.bucket, []).extend(range(start, start + item.repeats))
        cut: list[list[int]] = []
        for bucket in sorted(by_bucket):
            indices = by_bucket[bucket]
            shuffled = [indices[i] for i in rng.permutation(len(indices))]
            cut.extend(shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size))
        return [cut[i] for i in rng.permutation(len(cut))]

    def _crop_pick(self, epoch: int, index: int) -> tuple[float, float] | None:
        if self.crop == "center":
            return None
        u, v = self._rng(_CROP, epoch, index).random(2)
        return float(u), float(v)

    def _rng(self, stream: int, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([stream, self.seed, epoch, index])

    # Reading the folder ---------------------------------------------------------------------------
    def _scan(self) -> list[DatasetItem]:
        folders = self._folders()
        candidates = self._plan.sizes()
        items: list[DatasetItem] = []
        missing: list[Path] = []
        for folder in folders:
            images, others = self._folder_files(folder)
            used: set[Path] = set()
            for image in images:
                caption, caption_path = self._caption(image)
                if caption is None:
                    missing.append(image)
                    continue
                if caption_path is not None:
                    used.add(caption_path)
                size = upright_size(image)
                bucket = nearest_bucket(size, candidates)
                items.append(DatasetItem(image, caption, size, bucket, folder.repeats, folder.label))
            self._note_unused(folder, others, used)
        if missing:
            raise self._missing_captions(missing)
        if not items:
            raise TrainingDataError(
                f"no images in {self.folder} or its <repeats>_<name> sub-folders "
                f"(looked for {', '.join(IMAGE_SUFFIXES)} files)",
                path=self.folder,
            )
        return items

    def _folders(self) -> list[_Folder]:
        top = self.folder
        if not top.exists():
            raise TrainingDataError(f"training data folder {top} does not exist", path=top)
        if not top.is_dir():
            raise TrainingDataError(f"training data {top} is a file: pass the folder that holds the images", path=top)
        subs: list[_Folder] = []
        for entry in _listing(top):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            match = _KOHYA_FOLDER.match(entry.name)
            if match is None:
                self.notes.append(
                    f"skipped folder {entry.name}: its name does not start with a repeat count (like 10_{entry.name})"
                )
            elif int(match[1]) == 0:
                self.notes.append(f"skipped folder {entry.name}: 0 repeats")
            else:
                subs.append(_Folder(entry, entry.name, self._multiplied(entry, int(match[1]))))
        # a sub-folder named like the top folder would merge with it in the per-folder counts
        label = "." if any(sub.label == top.name for sub in subs) else top.name or str(top)
        return [_Folder(top, label, self._multiplied(top, self.repeats)), *subs]

    def _multiplied(self, folder: Path, repeats: int) -> int:
        path = folder / _captions.MULTIPLY_FILE
        if not path.is_file():
            return repeats
        multiplier = _captions.read_multiplier(path)
        scaled = _captions.scaled_repeats(repeats, multiplier)
        if scaled != repeats * multiplier:
            self.notes.append(f"{path}: {repeats} x {multiplier} repeats rounded to {scaled}")
        return scaled

    def _folder_files(self, folder: _Folder) -> tuple[list[Path], list[Path]]:
        """The images of ``folder`` and its other visible files, sorted by name."""
        images: list[Path] = []
        others: list[Path] = []
        for entry in _listing(folder.path):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if folder.path != self.folder:
                    self.notes.append(
                        f"skipped folder {folder.label}/{entry.name}: images are read from the top folder "
                        "and its <repeats>_<name> sub-folders only"
                    )
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                images.append(entry)
            elif entry.name != _captions.MULTIPLY_FILE:
                others.append(entry)
        return images, others

    def _caption(self, image: Path) -> tuple[str | None, Path | None]:
        if self.caption_ext is None:
            return self.default_caption, None
        path = _captions.caption_file(image, self.caption_ext)
        if path is None:
            return self.default_caption, None
        caption, ignored = _captions.read_caption(path)
        if ignored:
            self.notes.append(f"{path}: only the first line is the caption ({ignored} more ignored)")
        return caption, path

    def _note_unused(self, folder: _Folder, others: list[Path], used: set[Path]) -> None:
        unused = [p.name for p in others if p not in used]
        if unused:
            shown = ", ".join(unused[:_SHOWN]) + (", ..." if len(unused) > _SHOWN else "")
            self.notes.append(
                f"skipped {len(unused)} file(s) in {folder.label} that are neither images nor their captions: {shown}"
            )

    def _missing_captions(self, missing: list[Path]) -> TrainingDataError:
        ext = self.caption_ext or ".txt"
        names = [str(p.with_name(p.stem + ext).relative_to(self.folder)) for p in missing[:_SHOWN]]
        shown = ", ".join(names) + (", ..." if len(missing) > _SHOWN else "")
        return TrainingDataError(
            f"{len(missing)} image(s) in {self.folder} have no caption file ({shown}): add <name>{ext} files, "
            "pass caption_ext= (CLI --caption-ext) or default_caption= (CLI --default-caption)",
            path=self.folder,
        )


def _check_options(
    repeats: int, keep_tokens: int, crop: str, caption_ext: str | None, default_caption: str | None, seed: int
) -> None:
    _check_count("repeats", repeats, 1)
    _check_count("keep_tokens", keep_tokens, 0)
    if crop not in ("center", "random"):
        raise TrainingDataError(f"crop must be 'center' or 'random', not {crop!r}")
    _captions.check_caption_ext(caption_ext)
    if caption_ext is None and default_caption is None:
        raise TrainingDataError(
            "caption_ext=None reads no caption files: pass default_caption= (CLI --default-caption), "
            "the prompt every image is trained with"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise TrainingDataError(f"seed must be an integer in [0, 2**64), not {seed!r}")


def _check_count(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TrainingDataError(f"{name} must be a whole number, {minimum} or more, not {value!r}")


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise TrainingDataError(f"cannot list {folder}: {exc.strerror or exc}", path=folder) from exc


__all__ = ["IMAGE_SUFFIXES", "Batch", "CaptionedImageDataset", "DatasetItem"]
