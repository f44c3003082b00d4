"""Refusing what is not a model: a README, a script, a folder of notes or a login page never
becomes a record."""

from __future__ import annotations

import os
from pathlib import Path

from modeldepot.errors import InvalidSourceError
from modeldepot.identify import WEIGHT_CONTENTS, Identification, content_kind
from modeldepot.taxonomy import WEIGHT_SUFFIXES, ModelType

_FORCE_HINT = "use --force (force=True) to register it anyway"
#: What an HTML error page starts with (after whitespace), case-insensitively.
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<?xml")


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


def check_looks_like_model(path: Path) -> None:
    """Refuse a download that is an HTML (or XML) page rather than model weights.

    Raises:
        InvalidSourceError: naming the file.
    """
    if not path.is_file():
        return
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith(_HTML_MARKERS):
        raise InvalidSourceError(
            f"the download {path.name!r} is a web page, not a model file (a login page or a wrong link?)"
        )
