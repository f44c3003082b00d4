"""Models that are not registered (``load_local_model``): their cache identity and their record.

A local model is cached under a key made from its resolved path and re-read when its files change
(size or newest mtime), so no hashing is needed; its record is identified like an install's and
kept in memory only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import ModelDepotError, ModelNotFoundException
from modeldepot.taxonomy import BaseModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase


def local_key(path: Path) -> str:
    """The unregistered record key of the model at (resolved) ``path``."""
    return "local-" + hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:24]


def stamp(path: Path) -> tuple[int, int]:
    """(bytes, newest mtime_ns) of a file, or of every file under a folder: a change means a reload."""
    try:
        if path.is_file():
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        if path.is_dir():
            size = newest = 0
            for p in path.rglob("*"):
                if p.is_file():
                    st = p.stat()
                    size, newest = size + st.st_size, max(newest, st.st_mtime_ns)
            return size, newest
    except OSError as exc:
        raise ModelNotFoundException(f"cannot read the model at {path}: {exc}", path) from exc
    raise ModelNotFoundException(f"no model file or folder at {path}", path)


def local_config(path: Path, *, tolerant: bool) -> ModelConfigBase:
    """An in-memory record for ``path``, identified from its headers.

    ``tolerant`` (the caller brings its own loader): a file we cannot identify becomes an
    ``unknown`` record instead of raising.
    """
    from modeldepot.configs import UnknownModelConfig, parse_config
    from modeldepot.identify import identify, record_fields

    fields: dict[str, Any] = {"key": local_key(path), "name": path.stem or path.name, "path": str(path)}
    try:
        return parse_config({**record_fields(identify(path)), **fields})
    except ModelDepotError:
        if not tolerant:
            raise
        return UnknownModelConfig(base=BaseModelType.Any, **fields)


def state_dict(path: Path) -> Any:
    """A weights file as its state dict: InvokeAI's default for ``load_local_model`` (safetensors
    read directly; pickles scanned, then ``torch.load(weights_only=True)``)."""
    from modeldepot.load.loaders._common import load_weights

    return load_weights(path)


__all__ = ["local_config", "local_key", "stamp", "state_dict"]
