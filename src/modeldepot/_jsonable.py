"""Turn report dataclasses (and what they hold) into JSON-able values for ``--json`` output."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any


def plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name in ("ok",):
            if hasattr(type(obj), name) and isinstance(getattr(type(obj), name), property):
                out[name] = getattr(obj, name)
        return out
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(getattr(k, "value", k)): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj
