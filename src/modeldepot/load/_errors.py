"""Errors of the load service; defined in :mod:`modeldepot.errors` with the rest of the tree."""

from __future__ import annotations

from modeldepot.errors import (
    DeviceOutOfMemoryError,
    InvalidSubmodelError,
    ModelLoadError,
    SubmodelRequiredError,
    TorchNotInstalledError,
)

__all__ = [
    "DeviceOutOfMemoryError",
    "InvalidSubmodelError",
    "ModelLoadError",
    "SubmodelRequiredError",
    "TorchNotInstalledError",
]
