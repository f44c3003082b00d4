"""Helpers shared by the record-store tests (a module, so spawned processes can import it)."""

from __future__ import annotations

from typing import Any

from modeldepot.records import ModelRecordServiceBase


def rec(name: str, type: str = "lora", format: str = "lycoris", base: str = "sd-1", **extra: Any) -> dict[str, Any]:
    """A record dict; the path defaults to one derived from the name, so it is unique per name."""
    data: dict[str, Any] = {
        "name": name,
        "type": type,
        "format": format,
        "base": base,
        "path": f"/models/{base}/{type}/{name}.safetensors",
    }
    data.update(extra)
    return data


def add_many(location: str, prefix: str, count: int, barrier: Any) -> None:
    """Process body for the concurrency tests: open the store, wait for the peer, add ``count`` records."""
    store = ModelRecordServiceBase.from_db_file(location)
    try:
        barrier.wait(timeout=120)
        for i in range(count):
            store.add_model(rec(f"{prefix}-{i:03d}"))
    finally:
        store.close()
