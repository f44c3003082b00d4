"""Bring a local file or folder to a destination for a ``DownloadJobPath``, with progress and stop.

The copy goes to a temporary name beside the destination (``<name>.part``) and is renamed into
place only when complete, so a half copy is never visible under the final name (DESIGN.md §4).
A stop request (pause or cancel) removes the temporary copy: local copies are cheap to redo and
the source may have changed by the time the job is started again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from modeldepot._fs import NO_SPACE_ERRNOS, fsync_dir, no_space_text
from modeldepot.download._parts import part_path
from modeldepot.download._transfer import Stopped
from modeldepot.download.base import DownloadJobPath
from modeldepot.errors import DownloadError, InsufficientSpaceError

_CHUNK = 1024 * 1024

__all__ = ["LocalCopy", "local_target"]


def local_target(job: DownloadJobPath) -> Path:
    """Where the job's source ends up: inside ``destination`` when it is an existing folder."""
    return job.dest / job.source.name if job.dest.is_dir() else job.dest


class LocalCopy:
    """Runs one ``DownloadJobPath`` in the calling (worker) thread; ``run`` returns the final path.

    Args:
        stop: true once the job should stop (pause or cancel); checked between chunks.
        started: called once the size is known, before the first byte is copied.
        tick: called after each chunk (the queue rate-limits the events it sends).
    """

    def __init__(
        self,
        job: DownloadJobPath,
        stop: Callable[[], bool],
        started: Callable[[], None],
        tick: Callable[[], None],
        fsync: bool = True,
    ) -> None:
        self.job = job
        self._stop = stop
        self._started = started
        self._tick = tick
        self._fsync = fsync

    def run(self) -> Path:
        job = self.job
        src = job.source
        if not src.exists() and not src.is_symlink():
            raise DownloadError(f"{src}: no such file or folder to copy", url=str(src))
        final = local_target(job)
        job.download_path = final
        if final.exists() and src.resolve() == final.resolve():
            raise DownloadError(f"{src}: source and destination are the same file", url=str(src))
        if src.is_dir() and final.exists():
            raise DownloadError(f"{final} already exists; refusing to copy the folder {src} over it", url=str(src))
        final.parent.mkdir(parents=True, exist_ok=True)
        job.total_bytes = _size(src)
        job.bytes = 0
        self._started()
        if job.move and self._rename(src, final):
            job.bytes = job.total_bytes
            return final
        tmp = part_path(final)
        _remove(tmp)
        try:
            if src.is_dir():
                self._copy_tree(src, tmp)
            else:
                self._copy_file(src, tmp)
            if self._fsync and tmp.is_file():
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            tmp.replace(final)
        except BaseException:
            _remove(tmp)
            raise
        if self._fsync:
            fsync_dir(final.parent)
        if job.move:
            _remove(src)  # only after the copy is complete under its final name
        return final

    # -- helpers ---------------------------------------------------------------------------------
    def _rename(self, src: Path, final: Path) -> bool:
        """Move by rename when both sides share a file system; False when a copy is needed."""
        try:
            src.rename(final)  # POSIX: replaces an existing file atomically
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False
            raise DownloadError(f"{src}: cannot move to {final}: {exc.strerror or exc}", url=str(src)) from exc
        return True

    def _copy_tree(self, src: Path, dst: Path) -> None:
        dst.mkdir()
        for root, dirs, files in os.walk(src):
            here = Path(root)
            there = dst / here.relative_to(src)
            for name in dirs:
                d = here / name
                if d.is_symlink():  # links are kept as links, never followed out of the tree
                    (there / name).symlink_to(d.readlink())
                else:
                    (there / name).mkdir()
            dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
            for name in files:
                f = here / name
                if f.is_symlink():
                    (there / name).symlink_to(f.readlink())
                else:
                    self._copy_file(f, there / name)
        shutil.copystat(src, dst)

    def _copy_file(self, src: Path, dst: Path) -> None:
        job = self.job
        try:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                while True:
                    if self._stop():
                        raise Stopped()
                    chunk = fin.read(_CHUNK)
                    if not chunk:
                        break
                    fout.write(chunk)
                    job.bytes += len(chunk)
                    self._tick()
            shutil.copystat(src, dst)
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                raise InsufficientSpaceError(no_space_text(dst.parent, job.total_bytes), url=str(src)) from exc
            raise DownloadError(f"{src}: cannot copy to {dst}: {exc.strerror or exc}", url=str(src)) from exc


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
