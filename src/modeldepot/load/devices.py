"""Where models run: a small interface so the VRAM tier's logic is testable without a GPU.

* :class:`TorchDevice` is the real thing: ``cuda[:N]`` / ``mps`` move tensors; ``cpu`` means there
  is no separate device memory, so the cache's VRAM tier is bypassed.
* :class:`BudgetedFakeDevice` keeps tensors on the CPU but books the bytes "on device" against a
  capacity and refuses a move that would exceed it, exactly like a full GPU would.

Precision rule (:meth:`ExecutionDevice.resolve_precision`): ``auto`` is float16 on CUDA and MPS and
float32 on CPU, also on CPUs with AVX512-BF16 / AMX: bfloat16 computes about 2x faster there, but
float16 weights (most files) would lose 3 bits of mantissa and the images would change; ask for
``bfloat16`` explicitly to get it. An explicit ``float16`` / ``bfloat16`` is honoured when a one-time probe (a tiny
conv + group-norm + matmul in that dtype) runs on the device, else it falls back to float32 with a
warning. ``bfloat16`` on a CUDA card without bf16 support falls back to float16.
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from typing import Any

from modeldepot.load._errors import DeviceOutOfMemoryError
from modeldepot.load.cache._tensors import Placement

log = logging.getLogger(__name__)
GiB = 1024**3
#: VRAM left free for activations when the budget is derived (InvokeAI's default working memory).
DEFAULT_WORKING_MEMORY = 3 * GiB


class Residency(ABC):
    """A model's presence on the device; ``unload()`` returns it to its RAM copy at no copy cost."""

    nbytes: int

    @abstractmethod
    def unload(self) -> None: ...


class ExecutionDevice(ABC):
    """What the cache needs from a device."""

    #: Label for logs and events, e.g. ``cuda:0``.
    name: str

    @property
    @abstractmethod
    def torch_device(self) -> str:
        """Where tensors really live while "on device" (``cpu`` for the fake)."""

    @property
    @abstractmethod
    def has_own_memory(self) -> bool:
        """False when device memory *is* RAM (plain CPU): no VRAM tier."""

    @abstractmethod
    def total_memory(self) -> int | None:
        """Bytes of device memory, None if unknown."""

    @abstractmethod
    def load(self, obj: Any, nbytes: int) -> Residency:
        """Put ``obj`` on the device; raise :class:`DeviceOutOfMemoryError` if it cannot fit."""

    def empty_cache(self) -> None:  # noqa: B027 - optional hook
        """Return cached allocator blocks to the driver (after evictions)."""

    def default_vram_budget(self) -> int:
        total = self.total_memory()
        if not self.has_own_memory or total is None:
            return 0
        return max(0, total - DEFAULT_WORKING_MEMORY)

    def resolve_precision(self, precision: str) -> str:
        """The dtype name to load weights in, for the setting ``precision`` (see module docstring)."""
        kind = self.torch_device.split(":")[0]
        if precision == "auto":
            return "float16" if kind in ("cuda", "mps") else "float32"
        if precision == "float32":
            return "float32"
        if precision == "bfloat16" and kind == "cuda" and not _cuda_bf16():
            log.warning("bfloat16 is not supported by %s; using float16", self.name)
            precision = "float16"
        if not _dtype_works(self.torch_device, precision):
            log.warning("%s is not supported on %s; loading in float32", precision, self.name)
            return "float32"
        return precision

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_probe_lock = threading.Lock()
_probe_results: dict[tuple[str, str], bool] = {}


def _dtype_works(device: str, precision: str) -> bool:
    key = (device, precision)
    with _probe_lock:
        if key in _probe_results:
            return _probe_results[key]
        import torch
        import torch.nn.functional as F  # noqa: N812

        dtype = getattr(torch, precision)
        try:
            x = torch.ones(1, 4, 4, 4, dtype=dtype, device=device)
            w = torch.ones(4, 4, 3, 3, dtype=dtype, device=device)
            y = F.group_norm(F.conv2d(x, w, padding=1), 2)
            (y.flatten(1) @ y.flatten(1).T).sum().item()
            ok = True
        except (RuntimeError, NotImplementedError, TypeError):
            ok = False
        _probe_results[key] = ok
        return ok


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def total_ram_bytes() -> int:
    """Physical RAM of the machine (POSIX sysconf; 16 GiB if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * GiB


def default_ram_budget(total: int | None = None) -> int:
    """``max(min(50% of RAM, RAM - 4 GiB), 25% of RAM)``: half the machine, but always leave 4 GiB
    for the OS and the rest of the process on small machines, and never less than a quarter."""
    total = total_ram_bytes() if total is None else total
    return max(min(total // 2, total - 4 * GiB), total // 4)


class _PlacementResidency(Residency):
    def __init__(self, placement: Placement, nbytes: int, device: TorchDevice) -> None:
        self._placement = placement
        self.nbytes = nbytes
        self._device = device

    def unload(self) -> None:
        self._placement.restore()


class TorchDevice(ExecutionDevice):
    """A real torch device. ``TorchDevice.from_setting("auto")`` picks CUDA when present."""

    def __init__(self, device: str = "cpu") -> None:
        self.name = device

    @classmethod
    def from_setting(cls, setting: str = "auto") -> TorchDevice:
        if setting != "auto":
            return cls("cuda:0" if setting == "cuda" else setting)
        try:
            import torch
        except ImportError:
            return cls("cpu")
        if torch.cuda.is_available():
            return cls("cuda:0")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return cls("mps")
        return cls("cpu")

    @property
    def torch_device(self) -> str:
        return self.name

    @property
    def has_own_memory(self) -> bool:
        return self.name != "cpu"

    def total_memory(self) -> int | None:
        if self.name.startswith("cuda"):
            import torch

            return int(torch.cuda.get_device_properties(self.name).total_memory)
        return None

    def load(self, obj: Any, nbytes: int) -> Residency:
        placement = Placement(obj)
        try:
            placement.move(self.name)
        except RuntimeError as exc:  # torch.OutOfMemoryError subclasses RuntimeError
            placement.restore()
            if "out of memory" in str(exc).lower():
                raise DeviceOutOfMemoryError(f"{self.name} cannot hold a model of {nbytes} bytes: {exc}") from exc
            raise
        return _PlacementResidency(placement, nbytes, self)

    def empty_cache(self) -> None:
        if self.name.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class _FakeResidency(Residency):
    def __init__(self, device: BudgetedFakeDevice, token: int, nbytes: int) -> None:
        self._device = device
        self._token = token
        self.nbytes = nbytes

    def unload(self) -> None:
        self._device._release(self._token)


class BudgetedFakeDevice(ExecutionDevice):
    """A stand-in GPU for tests: tensors stay on the CPU, bytes are booked against ``capacity``."""

    def __init__(self, capacity_bytes: int, name: str = "fake") -> None:
        self.name = name
        self.capacity = capacity_bytes
        self._lock = threading.Lock()
        self._resident: dict[int, int] = {}
        self._next = 0
        self.used = 0
        self.peak = 0
        self.loads = 0
        self.unloads = 0

    @property
    def torch_device(self) -> str:
        return "cpu"

    @property
    def has_own_memory(self) -> bool:
        return True

    def total_memory(self) -> int | None:
        return self.capacity

    def default_vram_budget(self) -> int:
        return self.capacity

    def load(self, obj: Any, nbytes: int) -> Residency:
        with self._lock:
            if self.used + nbytes > self.capacity:
                raise DeviceOutOfMemoryError(
                    f"{self.name}: {nbytes} bytes do not fit ({self.used} of {self.capacity} in use)"
                )
            self._next += 1
            self._resident[self._next] = nbytes
            self.used += nbytes
            self.peak = max(self.peak, self.used)
            self.loads += 1
            return _FakeResidency(self, self._next, nbytes)

    def _release(self, token: int) -> None:
        with self._lock:
            nbytes = self._resident.pop(token, None)
            if nbytes is None:
                raise RuntimeError(f"{self.name}: double unload")
            self.used -= nbytes
            self.unloads += 1

    def resolve_precision(self, precision: str) -> str:
        return "float32" if precision == "auto" else super().resolve_precision(precision)


__all__ = [
    "DEFAULT_WORKING_MEMORY",
    "BudgetedFakeDevice",
    "ExecutionDevice",
    "Residency",
    "TorchDevice",
    "default_ram_budget",
    "total_ram_bytes",
]
