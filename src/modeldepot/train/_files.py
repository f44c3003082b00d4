"""What every training output shares: an atomic safetensors write with metadata, and the time stamp."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from modeldepot._fs import atomic_write_bytes

if TYPE_CHECKING:
    import torch


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` as safetensors with ``metadata``; readers never see a half-written file
    (temp file in the same folder, fsync, rename)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata)))
    return path


def now_iso() -> str:
    """Now, UTC, to the second: the ``modelspec.date`` / ``ss_training_*_at`` form."""
    return datetime.now(UTC).isoformat(timespec="seconds")
