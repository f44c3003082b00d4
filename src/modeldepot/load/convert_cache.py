"""A size-capped folder of converted model files (``home/convert_cache``).

Used where converting once pays: a pickle ``.ckpt`` is unpickled (after the scan) a single time and
kept as ``.safetensors``, so later loads are plain reads and never unpickle again. Entries are
written to a temp name in the same folder and renamed into place; the least recently used entries
(by mtime, refreshed on every hit) are deleted when the folder grows past ``max_bytes``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from modeldepot._fs import safe_relpath

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 20 * 1024**3  # InvokeAI's old convert_cache default (20 GB)
_TMP_PREFIX = ".tmp-"


class ConvertCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def path_for(self, name: str) -> Path:
        return self.root / safe_relpath(name)

    def get(self, name: str) -> Path | None:
        """The converted file for ``name`` if present (its mtime is refreshed: LRU)."""
        path = self.path_for(name)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def put(self, name: str, write: Callable[[Path], None]) -> Path:
        """Run ``write(temp_path)``, then rename the result to ``name`` and trim the folder."""
        path = self.path_for(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}"
        try:
            write(tmp)
            for f in [tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]:
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.exists():  # a folder entry written by another process meanwhile is as good
                    raise
        finally:
            _remove(tmp)
        self.make_room(0, keep=path)
        return path

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[Path, int, float]]:
        """Top-level entries (a file, or a folder counted as a whole) with size and mtime."""
        out: list[tuple[Path, int, float]] = []
        if not self.root.is_dir():
            return out
        for p in self.root.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                continue
            try:
                st = p.stat()
                size = st.st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            except FileNotFoundError:
                continue
            out.append((p, size, st.st_mtime))
        return out

    def make_room(self, nbytes: int, keep: Path | None = None) -> int:
        """Delete least recently used entries until ``nbytes`` more fit; returns bytes freed."""
        with self._lock:
            entries = sorted(self._entries(), key=lambda e: e[2])
            total = sum(size for _, size, _ in entries)
            freed = 0
            for p, size, _ in entries:
                if total + nbytes <= self.max_bytes:
                    break
                if keep is not None and p == keep:
                    continue
                _remove(p)
                total -= size
                freed += size
                log.info("convert cache: removed %s (%d bytes)", p.name, size)
            return freed

    def clear(self) -> None:
        with self._lock:
            for p, _, _ in self._entries():
                _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


__all__ = ["DEFAULT_MAX_BYTES", "ConvertCache"]
