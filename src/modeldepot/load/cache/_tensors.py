"""Size and placement of cached objects: torch modules, tensor dicts, and objects holding either.

Torch is imported only when an object actually holds tensors: tokenizers and schedulers are cached
without ever touching torch here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any


def _torch_loaded() -> bool:
    return sys.modules.get("torch") is not None


def _is_tensor(obj: Any) -> bool:
    if not _torch_loaded():
        return False
    import torch

    return isinstance(obj, torch.Tensor)


def _is_module(obj: Any) -> bool:
    if not _torch_loaded():
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(_is_tensor(v) for v in obj.values())


def _inner_module(obj: Any) -> Any:
    """An object that wraps a module (an upscaler descriptor, an IP-Adapter holder) exposes ``.model``."""
    inner = getattr(obj, "model", None)
    return inner if _is_module(inner) else None


def _unique_tensors(obj: Any) -> Iterator[Any]:
    seen: set[int] = set()
    if _is_module(obj):
        items: Iterator[Any] = iter([*obj.parameters(), *obj.buffers()])
    elif isinstance(obj, dict):
        items = iter(_flatten_tensors(obj))
    else:
        inner = _inner_module(obj)
        items = _unique_tensors(inner) if inner is not None else iter(())
    for t in items:
        if t is None:
            continue
        # Tied weights share one tensor object: count it once.
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t


def _flatten_tensors(d: dict[Any, Any]) -> list[Any]:
    out: list[Any] = []
    for v in d.values():
        if isinstance(v, dict):
            out.extend(_flatten_tensors(v))
        elif _is_tensor(v):
            out.append(v)
    return out


def model_size(obj: Any) -> int:
    """Bytes held by ``obj``: parameters and buffers of a module, the tensors of a (nested) dict, else 0.

    Tokenizers and schedulers count as 0: their Python objects are small next to any weight file.
    """
    if hasattr(obj, "calc_size") and callable(obj.calc_size):
        return int(obj.calc_size())
    return sum(int(t.numel()) * int(t.element_size()) for t in _unique_tensors(obj))


def has_tensors(obj: Any) -> bool:
    return _is_module(obj) or _inner_module(obj) is not None or (isinstance(obj, dict) and bool(_flatten_tensors(obj)))


class Placement:
    """The RAM copy of an object's tensors, taken before a move to the device.

    ``restore()`` re-points the object at those CPU tensors: moving back from the device costs no
    copy, and anything patched on the device (LoRA weights) is undone for free.
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        # Every (module, name) slot holding a parameter / buffer, with the original object. Moving
        # puts new device tensors in the slots; restoring puts the originals back: the original
        # CPU parameters are never mutated, so they *are* the RAM copy (tied weights stay tied).
        self._params: list[tuple[Any, str, Any]] = []
        self._buffers: list[tuple[Any, str, Any]] = []
        self._dict_items: list[tuple[dict[Any, Any], Any, Any]] = []
        self._dict_names: list[str] = []
        target = obj if _is_module(obj) else _inner_module(obj)
        if target is not None:
            for module in target.modules():
                for name, p in module._parameters.items():
                    if p is not None:
                        self._params.append((module, name, p))
                for name, buf in module._buffers.items():
                    if buf is not None:
                        self._buffers.append((module, name, buf))
        elif isinstance(obj, dict):
            self._snapshot_dict(obj, "")

    def _snapshot_dict(self, d: dict[Any, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                self._snapshot_dict(v, f"{prefix}{k}.")
            elif _is_tensor(v):
                self._dict_items.append((d, k, v))
                self._dict_names.append(f"{prefix}{k}")

    def move(self, device: str, non_blocking: bool = True) -> None:
        """Put device copies of every tensor in place (the RAM originals stay referenced here)."""
        import torch

        moved: dict[int, Any] = {}
        for module, name, p in self._params:
            new = moved.get(id(p))
            if new is None:
                new = torch.nn.Parameter(p.data.to(device, non_blocking=non_blocking), requires_grad=p.requires_grad)
                moved[id(p)] = new
            module._parameters[name] = new
        bufs: dict[int, Any] = {}
        for module, name, buf in self._buffers:
            new = bufs.get(id(buf))
            if new is None:
                new = bufs[id(buf)] = buf.to(device, non_blocking=non_blocking)
            module._buffers[name] = new
        for d, k, v in self._dict_items:
            d[k] = v.to(device, non_blocking=non_blocking)

    def restore(self) -> None:
        for module, name, p in self._params:
            module._parameters[name] = p
        for module, name, buf in self._buffers:
            module._buffers[name] = buf
        for d, k, v in self._dict_items:
            d[k] = v

    def cpu_state_dict(self) -> dict[str, Any]:
        return cpu_state_dict(self.obj)


def cpu_state_dict(obj: Any) -> dict[str, Any]:
    """``name -> tensor`` of the RAM copy (what ``model_on_device()`` yields for patch/unpatch)."""
    target = _inner_module(obj) if not _is_module(obj) and _inner_module(obj) is not None else obj
    if _is_module(target):
        return dict(target.state_dict(keep_vars=False))
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        _flat_named(obj, "", out)
        return out
    return {}


def _flat_named(d: dict[Any, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            _flat_named(v, name + ".", out)
        elif _is_tensor(v):
            out[name] = v


def release_memory() -> Callable[[], None] | None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise; see the RSS test)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = libc.malloc_trim

    def _trim() -> None:
        trim(0)

    return _trim


__all__ = ["Placement", "cpu_state_dict", "has_tensors", "model_size", "release_memory"]
