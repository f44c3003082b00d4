"""Errors of the load service. They subclass the shared tree in :mod:`modeldepot.errors`."""

from __future__ import annotations

from modeldepot.errors import ModelDepotError


class SubmodelRequiredError(ModelDepotError, ValueError):
    """A main (pipeline) model was asked for without naming the part to load."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidSubmodelError(ModelDepotError, ValueError):
    """The submodel asked for does not exist in that model (or makes no sense for its type)."""

    def __init__(self, message: str, key: str | None = None, submodel: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.submodel = submodel


class ModelLoadError(ModelDepotError):
    """A foreign library (diffusers, transformers, torch) failed to build the model from its files."""

    def __init__(self, message: str, key: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path


class DeviceOutOfMemoryError(ModelDepotError, MemoryError):
    """The execution device cannot hold the model even after offloading every unlocked model."""


class TorchNotInstalledError(ModelDepotError, ImportError):
    """Loading models needs the ``torch`` extra: ``pip install 'modeldepot[torch]'``."""


__all__ = [
    "DeviceOutOfMemoryError",
    "InvalidSubmodelError",
    "ModelLoadError",
    "SubmodelRequiredError",
    "TorchNotInstalledError",
]
