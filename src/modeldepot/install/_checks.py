"""Refusing what is not a model: a README, a script or a folder of notes never becomes a record."""

from __future__ import annotations

import os
from pathlib import Path

from modeldepot.errors import InvalidSourceError
from modeldepot.hashing import WEIGHT_SUFFIXES
from modeldepot.identify import WEIGHT_CONTENTS, Identification, content_kind
from modeldepot.taxonomy import ModelType

_FORCE_HINT = "use --force (force=True) to register it anyway"


def _holds_weights(path: Path) -> bool:
    """True for a weights file by name, or by its first bytes (GGUF, safetensors, pickle/zip)."""
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        return True
    try:
        return content_kind(path) in WEIGHT_CONTENTS
    except OSError:
        return False


def _folder_holds_weights(folder: Path) -> bool:
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(Path(name).suffix.lower() in WEIGHT_SUFFIXES for name in filenames):
            return True
    return False


def check_is_model(path: Path, ident: Identification) -> None:
    """Refuse ``path`` when identification found no model and it holds no weights at all.

    A weights file of a type we cannot name (an unusual safetensors) is still a model file and
    passes; overriding ``type`` does not make a text file a model (only ``force`` does).

    Raises:
        InvalidSourceError: naming the file and what it is instead.
    """
    if ident.type != ModelType.Unknown and "type" not in ident.overridden:
        return
    if path.is_dir():
        if _folder_holds_weights(path):
            return
        raise InvalidSourceError(
            f"{path.name} is not a model folder: it holds no weight files "
            f"({', '.join(sorted(WEIGHT_SUFFIXES))}); {_FORCE_HINT}"
        )
    if _holds_weights(path):
        return
    raise InvalidSourceError(
        f"{path.name} is not a model file: not a safetensors, .ckpt/.pt/.pth/.bin, GGUF or ONNX file; {_FORCE_HINT}"
    )
