"""The record step's choices for a stored model: its hash from the staged blobs, a unique name per
(base, type), and its destination folder under ``models/<base>/<type>/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._fs import safe_dir_name
from modeldepot.configs import ModelConfigBase, parse_config
from modeldepot.hashing import composite_hash, normalize_algorithm
from modeldepot.taxonomy import BaseModelType, ModelType

if TYPE_CHECKING:
    from modeldepot.records import ModelRecordServiceBase
    from modeldepot.storage import StagedModel


def record_hash(staged: StagedModel, algorithm: str) -> str | None:
    """The model hash from the staged blobs' blake3 digests, when that is the configured algorithm.

    For any other algorithm return None and let the caller hash the files (a second read).
    """
    name, prefix = normalize_algorithm(algorithm)
    if name not in ("blake3", "blake3_single"):
        return None
    if staged.kind == "file":
        return f"{prefix}:{staged.entries[0].digest}"
    return composite_hash([(e.relpath, e.digest) for e in staged.entries], prefix)


def unique_name(store: ModelRecordServiceBase, name: str, base: BaseModelType, type: ModelType) -> str:
    """``name``, or ``name (2)``, ``name (3)``... so names are unique per (base, type).

    Asks the store only for ``name`` and its numbered forms (one index range in the SQL store),
    never for every record of that base and type.
    """
    taken = store.taken_names(name, base, type)
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def destination(models_dir: Path, record: ModelConfigBase, staged: StagedModel) -> Path:
    """``models/<base>/<type>/<name>`` for folders, ``.../<name><suffix>`` for single files."""
    folder = models_dir / str(record.base) / str(record.type)
    name = safe_dir_name(record.name)
    if staged.kind == "file":
        suffix = Path(staged.entries[0].relpath).suffix
        return folder / f"{name}{suffix}"
    return folder / name


def with_fields(record: ModelConfigBase, **fields: Any) -> ModelConfigBase:
    data = record.model_dump()
    data.update(fields)
    return parse_config(data)
