"""One read-back pass over a download's finished prefix, feeding every digest it needs.

The sinks are sha256 (when the remote names a digest to check), blake3 (when a content store will
take the file: it then never reads it again) and a *tap* (the part hashes of a safetensors file).
The job's thread feeds them the contiguous prefix of the ``.part`` file while later bytes still
arrive, from the page cache, so the network threads never wait for hashing, and at the end only
the last stretch is left. Each sink sees every byte once, in file order.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

import blake3

from modeldepot.errors import DownloadError

#: ``tap(offset, piece)`` sees consecutive pieces of the whole file (as the blob store's taps do).
Tap = Callable[[int, memoryview], None]
#: Called with the ``.part`` file once its first bytes (a safetensors header) are on disk; None: no tap.
TapFactory = Callable[[Path], "Tap | None"]

_BLOCK = 4 * 1024 * 1024


class DigestPass:
    """Feeds sha256 / blake3 / a tap with bytes ``[0, at)`` of the part file, in order."""

    def __init__(self, part: Path, size: int | None, *, sha256: bool, blake3_: bool, tap: TapFactory | None) -> None:
        self.part = part
        self.size = size
        self.at = 0
        self._sha = hashlib.sha256() if sha256 else None
        self._b3 = blake3.blake3(max_threads=1) if blake3_ else None  # the job thread: the cores are busy
        self._factory = tap if size is not None else None  # a tap needs the whole file's size
        self._tap: Tap | None = None
        self._buf: memoryview | None = None

    def feed(self, fd: int, upto: int, budget: int | None = None) -> None:
        """Hash the part file up to ``upto`` (at most ``budget`` more bytes)."""
        if self._factory is not None and not self._open_tap(fd, upto):
            return  # the header is not all there yet; nothing is fed out of order
        if budget is not None:
            upto = min(upto, self.at + budget)
        if upto <= self.at:
            return
        if self._buf is None:
            self._buf = memoryview(bytearray(_BLOCK))
        buf = self._buf
        while self.at < upto:
            view = buf[: min(len(buf), upto - self.at)]
            n = os.preadv(fd, [view], self.at)
            if n <= 0:
                raise DownloadError(f"{self.part}: part file shorter than expected", url=None)
            piece = view[:n]
            if self._sha is not None:
                self._sha.update(piece)
            if self._b3 is not None:
                self._b3.update(piece)
            if self._tap is not None:
                self._tap(self.at, piece)
            self.at += n

    def _open_tap(self, fd: int, upto: int) -> bool:
        """Build the tap once the header is on disk (or the file is whole: it may not be safetensors)."""
        assert self.size is not None and self._factory is not None
        need = 8
        if upto >= 8:
            (n,) = struct.unpack("<Q", os.pread(fd, 8, 0).ljust(8, b"\0"))
            need = 8 + n
        if upto < min(need, self.size):
            return False
        factory, self._factory = self._factory, None
        self._tap = factory(self.part)
        return True

    @property
    def sha256(self) -> str | None:
        return self._sha.hexdigest() if self._sha is not None else None

    @property
    def blake3(self) -> str | None:
        return str(self._b3.hexdigest()) if self._b3 is not None else None


__all__ = ["DigestPass", "Tap", "TapFactory"]
