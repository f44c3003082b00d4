"""Link modes: put a blob's content at a path by reflink, hardlink, symlink or copy.

Each mode falls through to the next only on errors meaning "not supported here" (cross-device,
filesystem without the feature, link limit reached); anything else (permission denied, disk
full) is a real error and stops the build.

A hardlink shares the blob's inode, hence its mode (0444): a user who chmods such a file and
edits it edits the blob. ``verify`` detects it (the blob no longer hashes to its name) and can
restore the blob from another good materialised copy.
"""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH211

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from modeldepot.storage._blobs import BlobStore

#: ioctl FICLONE (linux/fs.h): clone all extents of src_fd into dst_fd.
FICLONE = 0x40049409
_UNSUPPORTED = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS})
#: FICLONE on a filesystem without reflinks answers ENOTTY or EINVAL as well.
_REFLINK_UNSUPPORTED = _UNSUPPORTED | {errno.ENOTTY, errno.EINVAL}


class Unsupported(Exception):
    """This link mode cannot work here; try the next one."""


def _reflink(blobs: BlobStore, digest: str, dst: Path, final_dst: Path) -> None:
    src = blobs.path_for(digest)
    with open(src, "rb") as s:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if os.fstat(s.fileno()).st_size:
                fcntl.ioctl(fd, FICLONE, s.fileno())
        except OSError as exc:
            os.close(fd)
            os.unlink(dst)
            if exc.errno in _REFLINK_UNSUPPORTED:
                raise Unsupported(str(exc)) from exc
            raise
        os.close(fd)
    os.chmod(dst, 0o444)


def _hardlink(blobs: BlobStore, digest: str, dst: Path, final_dst: Path) -> None:
    try:
        os.link(blobs.path_for(digest), dst)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise Unsupported(str(exc)) from exc
        raise


def _symlink(blobs: BlobStore, digest: str, dst: Path, final_dst: Path) -> None:
    # Relative to where the file will finally live (the temp build folder has the same depth),
    # so the tree survives moving the whole home folder, like the Hugging Face cache.
    target = os.path.relpath(blobs.path_for(digest), final_dst.parent)
    try:
        os.symlink(target, dst)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise Unsupported(str(exc)) from exc
        raise


def _copy(blobs: BlobStore, digest: str, dst: Path, final_dst: Path) -> None:
    blobs.write_to(digest, dst, 0o444, final_dst)


LINKERS = {"reflink": _reflink, "hardlink": _hardlink, "symlink": _symlink, "copy": _copy}


def place(blobs: BlobStore, digest: str, dst: Path, final_dst: Path, modes: Sequence[str], start: int = 0) -> int:
    """Put blob ``digest`` at ``dst`` using the first mode that works; returns its index in ``modes``.

    ``start`` lets a build skip modes already found unsupported for earlier files.
    """
    last: Unsupported | None = None
    for i in range(start, len(modes)):
        try:
            LINKERS[modes[i]](blobs, digest, dst, final_dst)
            return i
        except Unsupported as exc:
            last = exc
    raise OSError(errno.EOPNOTSUPP, f"no configured link mode works for {final_dst}: {last}")
