"""modeldepot: a model manager for generative-AI model files.

Heavy modules are imported lazily so ``modeldepot list`` starts fast and never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.manager import ModelManager

_LAZY = {"DepotConfig": "modeldepot.config", "ModelManager": "modeldepot.manager"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modeldepot' has no attribute {name!r}")


__all__ = ["DepotConfig", "ModelManager", "__version__"]
