"""Helpers for identification tests: reason lookup and record round-trip."""

from __future__ import annotations

from pathlib import Path

from modeldepot.configs import ModelConfigBase, parse_config
from modeldepot.identify import Identification, record_fields


def reason(ident: Identification, field: str, *needles: str) -> str:
    """The reason line for ``field``; fails unless it exists and contains every needle."""
    lines = [r for r in ident.reasons if r.startswith(f"{field}: ")]
    assert lines, f"no reason for {field!r} in {ident.reasons}"
    for line in lines:
        if all(n in line for n in needles):
            return line
    raise AssertionError(f"no {field!r} reason containing {needles} in {lines}")


def as_record(ident: Identification, path: Path) -> ModelConfigBase:
    """Every identification must turn into a valid record."""
    return parse_config({"name": path.name, "path": str(path), **record_fields(ident)})
