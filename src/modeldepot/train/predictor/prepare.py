"""Prepare a predictor's training data: the CLIP image embeddings of a folder of scored images.

The folder holds the images and (by default) a ``scores.csv`` with a header row naming an image
column (``image``, ``file``, ``filename`` or ``path``) and a score column (``score``, ``rating``,
``aesthetic`` or ``label``), in any case::

    image,score
    beach.jpg,6.5
    night/city.png,4.0

Image paths are relative to the folder and must stay inside it. Each image is embedded once with a
CLIP model of the depot, so training (:func:`~modeldepot.train.predictor.train_predictor`) runs on
small tensors and never opens an image again.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from modeldepot._fs import safe_dir_name, safe_relpath
from modeldepot.errors import IdentificationError, TrainingDataError, TrainingError, UnsafePathError
from modeldepot.services.clip import ClipEmbedder
from modeldepot.train._files import save_tensors
from modeldepot.train.predictor import _files

if TYPE_CHECKING:
    from PIL import Image

    from modeldepot.manager import ModelManager

IMAGE_COLUMNS = ("image", "file", "filename", "path")
SCORE_COLUMNS = ("score", "rating", "aesthetic", "label")


@dataclass(frozen=True)
class PreparedScores:
    """A prepared-scores file: ``embeddings [count, dim]`` and ``scores [count]`` (float32), made with
    the CLIP model ``clip_key`` (named ``clip_name``, content ``clip_hash``)."""

    path: Path
    count: int
    dim: int
    clip_key: str
    clip_name: str = ""
    clip_hash: str = ""

    @classmethod
    def open(cls, path: str | Path) -> PreparedScores:
        """Describe the prepared-scores file at ``path`` (its header only; no tensor is read).

        Raises:
            TrainingDataError: no such file, or not a file :func:`prepare` wrote.
        """
        from modeldepot.identify.safetensors import read_safetensors_header

        path = Path(path)
        if not path.is_file():
            raise TrainingDataError(f"{path}: no such prepared-scores file; make one with prepare()", path=path)
        try:
            header = read_safetensors_header(path)
        except (IdentificationError, OSError) as exc:
            raise TrainingDataError(f"{path}: not a prepared-scores file: {exc}", path=path) from exc
        embeddings, scores = header.shapes.get("embeddings"), header.shapes.get("scores")
        clip_key = header.metadata.get(_files.CLIP_KEY)
        if (
            embeddings is None
            or scores is None
            or len(embeddings) != 2
            or tuple(scores) != (embeddings[0],)
            or set(header.shapes) != {"embeddings", "scores"}
            or not clip_key
        ):
            raise TrainingDataError(
                f"{path}: not a prepared-scores file (it needs tensors 'embeddings' [N, D] and 'scores' [N] and "
                "the CLIP key in its metadata); make one with prepare()",
                path=path,
            )
        return cls(
            path=path,
            count=int(embeddings[0]),
            dim=int(embeddings[1]),
            clip_key=clip_key,
            clip_name=header.metadata.get(_files.CLIP_NAME, ""),
            clip_hash=header.metadata.get(_files.CLIP_HASH, ""),
        )

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [count, dim], scores [count])``, float32."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.path))
        except (OSError, SafetensorError) as exc:
            raise TrainingDataError(f"{self.path}: cannot read the prepared scores: {exc}", path=self.path) from exc
        return tensors["embeddings"].float(), tensors["scores"].float()

    def image_names(self) -> list[str]:
        """The image of each row, as the score file named it."""
        names = json.loads(_files.read_metadata(self.path).get(_files.IMAGES, "[]"))
        return [str(n) for n in names]


class _Row(NamedTuple):
    name: str
    path: Path
    score: float
    line: int


def read_scores(csv_path: Path, folder: Path) -> list[tuple[str, float]]:
    """The ``(image name, score)`` rows of a score file, each image checked to exist in ``folder``.

    Raises:
        TrainingDataError: see :func:`prepare`.
    """
    return [(r.name, r.score) for r in _read_rows(csv_path, folder)]


def _columns(header: list[str], csv_path: Path) -> tuple[int, int]:
    names = [h.strip().lower() for h in header]
    image = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
    score = next((names.index(c) for c in SCORE_COLUMNS if c in names), None)
    if image is not None and score is not None:
        return image, score
    lacking = []
    if image is None:
        lacking.append(f"an image column ({', '.join(IMAGE_COLUMNS)})")
    if score is None:
        lacking.append(f"a score column ({', '.join(SCORE_COLUMNS)})")
    found = ", ".join(repr(h.strip()) for h in header) or "none"
    raise TrainingDataError(
        f"{csv_path}: the header row has no {' and no '.join(lacking)}; its columns are: {found}", path=csv_path
    )


def _image_path(name: str, folder: Path, where: str, csv_path: Path) -> Path:
    if not name:
        raise TrainingDataError(f"{where}: the image name is empty", path=csv_path)
    try:
        # A score file written on Windows separates folders with backslashes.
        rel = safe_relpath(name.replace("\\", "/"))
    except UnsafePathError:
        raise TrainingDataError(
            f"{where}: image path {name!r} must be relative to {folder} and stay inside it (no absolute path, no '..')",
            path=csv_path,
        ) from None
    path = folder.joinpath(*rel.parts)
    if not path.is_file():
        raise TrainingDataError(f"{where}: image {name!r} is not in {folder}", path=path)
    return path


def _read_rows(csv_path: Path, folder: Path) -> list[_Row]:
    if not csv_path.is_file():
        raise TrainingDataError(
            f"{csv_path}: score file not found; put a scores.csv (a header row, then image,score rows) in "
            f"{folder} or pass scores=",
            path=csv_path,
        )
    rows: list[_Row] = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next((r for r in reader if any(c.strip() for c in r)), None)
            if header is None:
                raise TrainingDataError(f"{csv_path}: the score file is empty (it needs a header row)", path=csv_path)
            image_col, score_col = _columns(header, csv_path)
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                where = f"{csv_path}, line {reader.line_num}"
                if len(row) <= max(image_col, score_col):
                    raise TrainingDataError(f"{where}: {len(row)} columns, the header has {len(header)}", path=csv_path)
                name, text = row[image_col].strip(), row[score_col].strip()
                try:
                    score = float(text)
                except ValueError:
                    raise TrainingDataError(
                        f"{where}: score {text!r} for image {name!r} is not a number", path=csv_path
                    ) from None
                if not math.isfinite(score):
                    raise TrainingDataError(
                        f"{where}: score {text!r} for image {name!r} is not a finite number", path=csv_path
                    )
                rows.append(_Row(name, _image_path(name, folder, where, csv_path), score, reader.line_num))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TrainingDataError(f"{csv_path}: not a readable UTF-8 CSV file: {exc}", path=csv_path) from exc
    except OSError as exc:
        raise TrainingDataError(f"{csv_path}: cannot read: {exc.strerror or exc}", path=csv_path) from exc
    if len(rows) < 2:
        raise TrainingDataError(
            f"{csv_path}: {len(rows)} scored image{'s' if len(rows) != 1 else ''}; a predictor needs at least 2",
            path=csv_path,
        )
    return rows


def _open_image(row: _Row, csv_path: Path) -> Image.Image:
    from PIL import Image

    try:
        with Image.open(row.path) as im:
            return im.convert("RGB")  # reads the pixels: a truncated file fails here, not later
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TrainingDataError(
            f"{csv_path}, line {row.line}: image {row.name!r} cannot be read: {exc}", path=row.path
        ) from exc


def _chunks(rows: list[_Row], size: int) -> Iterator[list[_Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def default_output(depot: ModelManager, clip_name: str, folder: Path) -> Path:
    """``<home>/train/predictor/<clip name>-<folder name>.safetensors``."""
    name = f"{safe_dir_name(clip_name)}-{safe_dir_name(folder.resolve().name)}.safetensors"
    return depot.config.home / "train" / "predictor" / name


def prepare(
    depot: ModelManager,
    *,
    clip: str,
    data: str | Path,
    scores: str | Path | None = None,
    output: str | Path | None = None,
    batch_size: int = 16,
) -> PreparedScores:
    """Embed the scored images of ``data`` with the CLIP model ``clip`` and write them for training.

    Args:
        depot: the depot holding the CLIP model (a ``clip_vision`` / ``clip_embed`` record of a full CLIP).
        clip: the CLIP model's key, key prefix or name.
        data: the folder of images.
        scores: the score file (default ``<data>/scores.csv``).
        output: where to write (default ``<home>/train/predictor/<clip name>-<folder name>.safetensors``;
            an existing folder gets that file name inside it).
        batch_size: images embedded per forward pass.

    Returns:
        The :class:`PreparedScores` written (a safetensors file with ``embeddings``, ``scores`` and
        the CLIP's key, name and hash and the image names as metadata).

    Raises:
        TrainingDataError: no such folder, no score file, a header without an image or a score
            column, a score that is not a finite number, an image path outside the folder, an
            image missing or unreadable, fewer than 2 rows.
        TrainingError: ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer, not {batch_size!r}")
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise TrainingDataError(f"{folder}: no such folder of training images", path=folder)
    csv_path = Path(scores).expanduser() if scores is not None else folder / "scores.csv"
    rows = _read_rows(csv_path, folder)  # every row checked before the CLIP model is loaded
    embedder = ClipEmbedder.from_key(depot, clip, batch_size=batch_size)
    config = embedder.bound.config
    assert config is not None  # from_key binds the record
    parts = [embedder.image([_open_image(r, csv_path) for r in chunk]) for chunk in _chunks(rows, batch_size)]
    embeddings = torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False))
    targets = torch.tensor([r.score for r in rows], dtype=torch.float32)
    path = Path(output).expanduser() if output is not None else default_output(depot, config.name, folder)
    if path.is_dir():
        path = path / default_output(depot, config.name, folder).name
    metadata = {
        **_files.clip_metadata(config),
        _files.EMBEDDING_DIM: str(embedder.dim),
        _files.IMAGES: _files.dumps([r.name for r in rows]),
    }
    save_tensors(path, {"embeddings": embeddings, "scores": targets}, metadata)
    return PreparedScores(path, len(rows), int(embeddings.shape[1]), config.key, config.name, config.hash or "")


__all__ = ["IMAGE_COLUMNS", "SCORE_COLUMNS", "PreparedScores", "default_output", "prepare", "read_scores"]
