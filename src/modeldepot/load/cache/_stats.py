"""Value objects of the model cache: budgets and statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CacheBudget:
    """Byte budgets of the two tiers. ``vram_bytes == 0`` disables the VRAM tier's accounting."""

    ram_bytes: int
    vram_bytes: int


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    puts: int
    evictions: int
    vram_loads: int
    vram_offloads: int
    oversized: int
    entries: int
    locked: int
    ram_bytes: int
    vram_bytes: int
    ram_budget: int
    vram_budget: int
    ram_high_water: int
    vram_high_water: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["CacheBudget", "CacheStats"]
