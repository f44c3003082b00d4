"""Blobs: ``blobs/<2 hex>/<blake3 hex>``, immutable and read-only (0444).

A blob is written into ``blobs/tmp/`` (same filesystem as its final place) while being hashed,
fsynced, chmodded 0444 and renamed into its shard; a digest already present costs no space (the
temp is dropped). Publishing happens under an inter-process lock shared with gc, and the caller's
``register`` callback (a "pending" row in the database) runs inside it before the blob becomes
visible, so gc can never delete a blob an install is about to reference.
"""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH116

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import blake3
from filelock import FileLock

from modeldepot._fs import NO_SPACE_ERRNOS, free_bytes, fsync_dir, no_space_text, start_writeback
from modeldepot.errors import BlobCorruptError, InsufficientSpaceError, StorageError
from modeldepot.storage.base import BlobInfo, crashpoint

log = logging.getLogger(__name__)

#: Copy window: small enough that the write re-reads pages the hasher just pulled into CPU cache
#: (measured on 1 GiB: 4 MiB windows 0.93 s vs 64 MiB 1.87 s; ``cp`` + fsync 0.91-1.25 s).
CHUNK = 4 << 20
TMP_PREFIX = "incoming-"
_HEX = frozenset("0123456789abcdef")


def new_hasher() -> blake3.blake3:
    """The one place choosing the blob hash (blake3, multi-threaded for big updates)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def is_digest(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


#: ``tap(offset, piece)``: also sees every byte of a file as it is hashed (the part hashes).
Tap = Callable[[int, memoryview], None]


class KnownDigest(NamedTuple):
    """A blake3 the caller took of a file's bytes itself (a download hashes what it writes), valid
    while the file's ``(inode, size, mtime_ns)`` is still ``identity``."""

    digest: str
    identity: tuple[int, int, int]

    def holds_for(self, st: os.stat_result) -> bool:
        return (st.st_ino, st.st_size, st.st_mtime_ns) == self.identity


def hash_path(path: Path, tap: Tap | None = None) -> str:
    """blake3 of a file read by mmap (no copy through Python buffers); ``tap`` sees the same pages."""
    h = new_hasher()
    size = path.stat().st_size
    if size and tap is None:
        h.update_mmap(str(path))
    elif size and tap is not None:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                for off in range(0, size, CHUNK):
                    piece = view[off : off + CHUNK]
                    try:
                        h.update(piece)
                        tap(off, piece)
                    finally:
                        piece.release()
            finally:
                view.release()
    return str(h.hexdigest())


def no_space(where: Path, need: int | None, what: Path) -> InsufficientSpaceError:
    """The disk-full error of the store (``_fs.no_space_text``, naming what was being stored)."""
    return InsufficientSpaceError(f"{no_space_text(where, need)} (storing {what})")


def _space_error(
    exc: OSError, what: Path, where: Path | None = None, need: int | None = None
) -> StorageError | InsufficientSpaceError:
    if exc.errno in NO_SPACE_ERRNOS:
        return no_space(where or what.parent, need, what)
    return StorageError(f"cannot store {what}: {exc}", path=what)


#: Start writeback every this many bytes, so the final fsync finds little left to flush.
WRITEBACK_EVERY = 64 << 20


def _write_all(fd: int, data: memoryview) -> None:
    rest = data
    try:
        while rest:
            n = os.write(fd, rest)
            rest = rest[n:]
    finally:
        # A failed write's traceback keeps this frame alive: a slice still exported from the
        # source mmap would make closing it raise BufferError, hiding the real error (ENOSPC).
        if rest is not data:
            rest.release()


def copy_hashing(src_fd: int, dst_fd: int, size: int, tap: Tap | None = None) -> str:
    """Copy ``size`` bytes from ``src_fd`` to ``dst_fd`` and return their blake3, in ONE read pass.

    The source is mapped once; each window is hashed on a worker thread while the main thread
    writes the same pages (both release the GIL), so hashing overlaps the write. The hasher is
    single-threaded here: the write needs the other core (a multi-threaded hasher made the copy
    1.6x slower on 2 cores). ``tap`` (the part hashes) sees each window on a second worker, beside
    the hash and the write, so neither waits for it.
    """
    h = blake3.blake3(max_threads=1)
    if size == 0:
        return str(h.hexdigest())
    flushed = 0
    with mmap.mmap(src_fd, size, access=mmap.ACCESS_READ) as mm:
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mm)
        try:
            with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as tapping:
                for off in range(0, size, CHUNK):
                    piece = view[off : off + CHUNK]
                    try:
                        fut = pool.submit(h.update, piece)
                        tapped = tapping.submit(tap, off, piece) if tap is not None else None
                        try:
                            _write_all(dst_fd, piece)
                            end = off + len(piece)
                            if end - flushed >= WRITEBACK_EVERY:
                                # Asynchronous: the disk writes while we copy on (measured on
                                # 2 GiB: 0.76 s instead of 2.8 s with one fsync at the end).
                                start_writeback(dst_fd, flushed, end - flushed)
                                flushed = end
                        finally:
                            # Both workers must be done with ``piece`` before it is released.
                            pending: list[Future[Any]] = [fut] if tapped is None else [fut, tapped]
                            wait(pending)
                            fut.result()
                            if tapped is not None:
                                tapped.result()
                    finally:
                        piece.release()
        finally:
            view.release()
    return str(h.hexdigest())


class BlobStore:
    """The blob folder. ``register(digest, size)`` is called under the publish lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.tmp / ".publish.lock"))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the publish lock (gc holds it while deleting)."""
        with self._lock:
            yield

    def path_for(self, digest: str) -> Path:
        if not is_digest(digest):
            raise StorageError(f"{digest!r} is not a blob digest")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def _tmp_path(self) -> Path:
        return self.tmp / f"{TMP_PREFIX}{uuid.uuid4().hex}"

    # Ingest --------------------------------------------------------------------------------

    def add_file(
        self,
        path: Path,
        *,
        move: bool = False,
        register: Callable[[str, int], None] | None = None,
        keep_source: bool = False,
        distrust: Callable[[str], bool] | None = None,
        tap: Tap | None = None,
        known: KnownDigest | None = None,
    ) -> BlobInfo:
        """Store the content of ``path``; with ``move`` the source is linked into place, not copied.

        ``known``: the file's blake3 as its writer took it; a linked file whose ``stat`` still
        matches is then not read again (a copy reads it anyway, and hashes on the way).

        The source disappears (move mode) only after its blob is in place and fsynced, and not at
        all with ``keep_source`` (a folder import removes its sources once every file is stored).
        ``distrust(digest)`` names blobs known to be damaged: the fresh, verified content replaces
        such a blob instead of being dropped as a duplicate (``BlobInfo.healed`` says so).
        """
        if move:
            info = self._add_by_link(path, register, distrust, tap, known)
            if info is None:
                info = self._add_by_copy(path, register, distrust, tap)
            crashpoint("blob-linked")
            if not keep_source:
                path.unlink()
            return info
        return self._add_by_copy(path, register, distrust, tap)

    def _add_by_copy(
        self,
        path: Path,
        register: Callable[[str, int], None] | None,
        distrust: Callable[[str], bool] | None = None,
        tap: Tap | None = None,
    ) -> BlobInfo:
        tmp = self._tmp_path()
        size: int | None = None
        try:
            with open(path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                free = free_bytes(self.tmp)
                if free is not None and free < size:
                    raise no_space(self.root, size, path)  # refuse before writing a byte
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    digest = copy_hashing(src.fileno(), fd, size, tap)
                    crashpoint("blob-written")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if os.stat(tmp).st_size != size:
                raise StorageError(f"{path} changed size while it was being stored", path=path)
            healed = self._publish(tmp, digest, size, register, distrust)
            return BlobInfo(digest, size, healed)
        except OSError as exc:
            _unlink_quiet(tmp)  # before measuring free space: the partial copy is not ours to count
            if isinstance(exc, StorageError | InsufficientSpaceError):
                raise
            raise _space_error(exc, path, where=self.root, need=size) from exc
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def _add_by_link(
        self,
        path: Path,
        register: Callable[[str, int], None] | None,
        distrust: Callable[[str], bool] | None = None,
        tap: Tap | None = None,
        known: KnownDigest | None = None,
    ) -> BlobInfo | None:
        """Hash by mmap, then hardlink the source into place. ``None`` when linking is impossible."""
        before = os.stat(path)
        trusted = known is not None and tap is None and known.holds_for(before)
        digest = known.digest if trusted and known is not None else hash_path(path, tap)
        tmp = self._tmp_path()
        try:
            os.link(path, tmp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES):
                return None
            raise _space_error(exc, path, where=self.root, need=0) from exc
        try:
            after = os.stat(tmp)
            if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
                raise StorageError(f"{path} changed while it was being stored", path=path)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            healed = self._publish(tmp, digest, before.st_size, register, distrust)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return BlobInfo(digest, before.st_size, healed)

    def _publish(
        self,
        tmp: Path,
        digest: str,
        size: int,
        register: Callable[[str, int], None] | None,
        distrust: Callable[[str], bool] | None = None,
    ) -> bool:
        """Move ``tmp`` (verified content of ``digest``) into place; True if it replaced a damaged blob."""
        final = self.path_for(digest)
        final.parent.mkdir(exist_ok=True)
        with self._lock:
            if register is not None:
                register(digest, size)
            crashpoint("blob-registered")
            existing = _stat_or_none(final)
            damaged = existing is not None and (existing.st_size != size or (distrust is not None and distrust(digest)))
            if existing is not None and not damaged:
                _unlink_quiet(tmp)  # dedup: the content is already stored
                return False
            # Absent, or a blob known to be damaged: this verified content replaces it. Files
            # hardlinked to the old blob keep the damaged inode; the caller rebuilds them.
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
        fsync_dir(final.parent)
        return damaged

    def write_bytes(self, data: bytes, register: Callable[[str, int], None] | None = None) -> BlobInfo:
        """Store small in-memory content (used for synthetic files and tests)."""
        tmp = self._tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, memoryview(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            h = new_hasher()
            h.update(data)
            digest = str(h.hexdigest())
            self._publish(tmp, digest, len(data), register)
            return BlobInfo(digest, len(data))
        except OSError as exc:
            _unlink_quiet(tmp)
            raise _space_error(exc, Path("<bytes>"), where=self.root, need=len(data)) from exc
        except BaseException:
            _unlink_quiet(tmp)
            raise

    # Read back -----------------------------------------------------------------------------

    def copy_out(self, digest: str, dst_fd: int, dest: Path | None = None) -> int:
        """Copy a blob into an open file (``dest``, for messages), re-hashing on the way; a mismatch
        is ``BlobCorruptError``."""
        blob = self.path_for(digest)
        size: int | None = None
        try:
            with open(blob, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                got = copy_hashing(src.fileno(), dst_fd, size)
        except FileNotFoundError as exc:
            raise BlobCorruptError(f"blob {digest} is missing from {self.root}", path=blob) from exc
        except OSError as exc:
            target = dest if dest is not None else blob
            raise _space_error(exc, target, where=target.parent, need=size) from exc
        if got != digest:
            raise BlobCorruptError(f"blob {digest} is corrupt on disk (content hashes to {got})", path=blob)
        return size

    def write_to(self, digest: str, dst: Path, mode: int, final_dst: Path | None = None) -> None:
        """A new file ``dst`` holding blob ``digest`` (re-hashed, fsynced), then ``chmod mode``;
        nothing is left at ``dst`` if that fails. ``final_dst``: where it will live, for messages."""
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.copy_out(digest, fd, final_dst or dst)  # re-hashes: a corrupt blob is never served silently
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(dst)
            raise
        os.close(fd)
        os.chmod(dst, mode)

    def verify(self, digest: str) -> bool | None:
        """True if the blob hashes to its name, False if corrupt, None if missing."""
        p = self.path_for(digest)
        if not p.is_file():
            return None
        return hash_path(p) == digest

    def iter_files(self) -> Iterator[Path]:
        """Every entry of the blob folder except ``tmp/`` (shards and anything unexpected)."""
        for top in sorted(self.root.iterdir()):
            if top == self.tmp:
                continue
            if top.is_dir() and not top.is_symlink():
                yield from sorted(top.iterdir())
            else:
                yield top

    def remove(self, digest: str) -> int:
        p = self.path_for(digest)
        st = _stat_or_none(p)
        if st is None:
            return 0
        p.unlink()
        return st.st_size

    def clean_tmp(self, older_than: float = 600.0) -> list[Path]:
        """Remove temp leftovers of killed ingests whose last change is older than ``older_than`` s.

        ctime (not mtime) because a link made in move mode keeps the source's old mtime.
        """
        import time

        removed = []
        now = time.time()
        for p in self.tmp.glob(f"{TMP_PREFIX}*"):
            st = _stat_or_none(p)
            if st is not None and now - st.st_ctime >= older_than:
                _unlink_quiet(p)
                removed.append(p)
        return removed


def _stat_or_none(p: Path) -> os.stat_result | None:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
