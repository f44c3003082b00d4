"""Small file-system helpers shared by every layer: atomic writes, safe relative paths, disk-full text."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from modeldepot.errors import UnsafePathError

#: errnos that mean "the disk (or the user's quota) is full".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def remove_any(path: Path) -> None:
    """Remove a file, a symlink (not its target) or a whole folder; nothing there is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def tree_size(path: Path) -> int:
    """Bytes in a file, or in every file under a folder (following links, as a reader would)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def free_bytes(folder: Path) -> int | None:
    """Free bytes on ``folder``'s file system, or None when that cannot be asked."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def human_size(n: int | None) -> str:
    """Bytes as people read them, in binary units (``1.5 GiB``); ``-`` when unknown."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def no_space_text(where: Path, need: int | None) -> str:
    """The one wording of "disk full": where, how much was needed, how much is free."""
    free = free_bytes(where)
    needed = f"need {need} bytes" if need is not None else "need more space"
    have = f"have {free}" if free is not None else "free space unknown"
    return f"no space left on {where}: {needed}, {have}"


_SYNC_FILE_RANGE_WRITE = 2
_sfr: Any = None


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` of ``fd`` to disk, without
    waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; nothing elsewhere). Done as data is
    written, so the fsync that publishes the file finds little left to flush. Only a hint: errors
    are ignored (the fsync reports real ones)."""
    global _sfr
    if _sfr is None:
        _sfr = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                _sfr = fn
            except (OSError, AttributeError):
                pass
    if _sfr and nbytes > 0:
        _sfr(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    """Persist a rename by syncing its directory (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def safe_relpath(name: str) -> PurePosixPath:
    """Validate a relative POSIX path from an untrusted source (manifest, repo listing, header).

    Raises:
        UnsafePathError: for absolute paths, ``..`` parts, backslashes, NULs or empty names.
    """
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"unsafe path {name!r}: empty or contains NUL/backslash")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or name.startswith("/"):
        raise UnsafePathError(f"unsafe path {name!r}: must be relative and stay inside its folder")
    if len(name) >= 2 and name[1] == ":":
        raise UnsafePathError(f"unsafe path {name!r}: drive letters are not allowed")
    return p


def join_inside(root: Path, name: str) -> Path:
    """``root / name`` after checking ``name`` cannot escape ``root``."""
    rel = safe_relpath(name)
    return root.joinpath(*rel.parts)


_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,@]+")


def safe_dir_name(name: str) -> str:
    """A file-system-safe file or folder name from a display name."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip(" .")
    return cleaned[:120] or "model"
