"""The size-capped conversion cache (no torch needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modeldepot.errors import UnsafePathError
from modeldepot.load import ConvertCache


def _writer(size: int):  # type: ignore[no-untyped-def]
    return lambda dest: dest.write_bytes(b"x" * size)


def test_put_get_and_lru_trim(tmp_path: Path) -> None:
    cache = ConvertCache(tmp_path / "cc", max_bytes=250)
    a = cache.put("a.safetensors", _writer(100))
    b = cache.put("b.safetensors", _writer(100))
    os.utime(a, (1, 1))
    os.utime(b, (2, 2))
    assert cache.get("a.safetensors") == a  # a hit refreshes a: b is now least recently used
    cache.put("c.safetensors", _writer(100))
    assert cache.get("b.safetensors") is None and cache.get("a.safetensors") is not None
    assert cache.total_bytes() == 200
    assert not [p for p in (tmp_path / "cc").iterdir() if p.name.startswith(".tmp-")]


def test_folder_entries_and_oversized_entry_kept(tmp_path: Path) -> None:
    cache = ConvertCache(tmp_path / "cc", max_bytes=50)

    def folder(dest: Path) -> None:
        dest.mkdir()
        (dest / "vocab.json").write_bytes(b"y" * 80)

    p = cache.put("vocab", folder)
    assert (p / "vocab.json").is_file()  # larger than the cap, but the entry just written stays
    cache.put("other", _writer(10))
    assert cache.get("vocab") is None  # trimmed as a whole folder once something else comes


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    cache = ConvertCache(tmp_path / "cc")

    def boom(dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        cache.put("x.safetensors", boom)
    assert list((tmp_path / "cc").iterdir()) == []


def test_unsafe_names_rejected(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        ConvertCache(tmp_path).path_for("../escape")
