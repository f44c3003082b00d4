"""The files of the predictor workflow: metadata keys, and reading safetensors metadata (written with
``modeldepot.train._files.save_tensors``).

A prepared-scores file and a trained predictor both name the CLIP model their embeddings came
from, under the same keys, so a predictor can find its CLIP again when it is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase

CLIP_KEY = "predictor.clip_key"
CLIP_NAME = "predictor.clip_name"
CLIP_HASH = "predictor.clip_hash"
EMBEDDING_DIM = "predictor.embedding_dim"
#: Prepared-scores files only: the image file names, in row order (JSON list).
IMAGES = "predictor.images"


def clip_metadata(config: ModelConfigBase) -> dict[str, str]:
    """The metadata naming the CLIP record ``config`` (its hash empty when the record has none)."""
    return {CLIP_KEY: config.key, CLIP_NAME: config.name, CLIP_HASH: config.hash or ""}


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty for a pickle or a file without any)."""
    from modeldepot.identify.safetensors import read_safetensors_header
    from modeldepot.load.loaders._common import is_safetensors

    if not is_safetensors(path):
        return {}
    return dict(read_safetensors_header(path).metadata)


def dumps(value: Any) -> str:
    """JSON for a metadata value (compact: headers are read whole)."""
    return json.dumps(value, separators=(",", ":"))
