"""Load models into a RAM/VRAM cache (InvokeAI's ModelLoadService design).

``import modeldepot.load`` never imports torch: loaders import it when they build a model.
"""

from modeldepot.load._errors import (
    DeviceOutOfMemoryError,
    InvalidSubmodelError,
    ModelLoadError,
    SubmodelRequiredError,
    TorchNotInstalledError,
)
from modeldepot.load.base import LoadedModel, ModelLoadService
from modeldepot.load.cache import CacheBudget, CacheRecord, CacheStats, ModelCache, model_size
from modeldepot.load.convert_cache import ConvertCache
from modeldepot.load.devices import (
    BudgetedFakeDevice,
    ExecutionDevice,
    Residency,
    TorchDevice,
    default_ram_budget,
    total_ram_bytes,
)
from modeldepot.load.registry import ModelLoader, ModelLoaderRegistry

__all__ = [
    "BudgetedFakeDevice",
    "CacheBudget",
    "CacheRecord",
    "CacheStats",
    "ConvertCache",
    "DeviceOutOfMemoryError",
    "ExecutionDevice",
    "InvalidSubmodelError",
    "LoadedModel",
    "ModelCache",
    "ModelLoadError",
    "ModelLoadService",
    "ModelLoader",
    "ModelLoaderRegistry",
    "Residency",
    "SubmodelRequiredError",
    "TorchDevice",
    "TorchNotInstalledError",
    "default_ram_budget",
    "model_size",
    "total_ram_bytes",
]
