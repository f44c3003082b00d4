"""What a download learned about its files while they arrived, handed on to the install.

The download takes each file's blake3, and every tensor's hash of a safetensors file, in the same
pass over the page cache that checks its sha256 (``download._digests``). The install then moves the
files into the store without reading them again (``ContentStore.stage(known=...)``) and names their
parts from those tensor hashes (``FedTap``): one read of the bytes, while they arrive, instead of
three after. A file whose ``(inode, size, mtime_ns)`` changed since is read and hashed as any other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modeldepot.download import DownloadJobRemoteSource
from modeldepot.download._digests import Tap
from modeldepot.download._parts import PART_SUFFIX
from modeldepot.errors import ModelDepotError
from modeldepot.identify import read_safetensors_header
from modeldepot.storage._blobs import KnownDigest
from modeldepot.storage._parts import TensorTap, per_tensor_tap


@dataclass(frozen=True)
class Received:
    """One downloaded file: its blake3 (and which version of the file it is of), its tensor hashes."""

    known: KnownDigest
    tensors: TensorTap | None


class Handoff:
    """Asks the download jobs of one install for digests and tensor hashes, and collects them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taps: dict[Path, TensorTap] = {}

    def prepare(self, jobs: Iterable[DownloadJobRemoteSource]) -> None:
        """Before the jobs start: take blake3 and the tensor hashes while they download."""
        for job in jobs:
            job.compute_blake3 = True
            job._tap_factory = self._tap_for

    def _tap_for(self, part: Path) -> Tap | None:
        """Called by the download once the ``.part`` file holds its header; None: not safetensors."""
        if not part.name.endswith(".safetensors" + PART_SUFFIX):
            return None
        try:
            tap = per_tensor_tap(read_safetensors_header(part))
        except ModelDepotError:
            return None  # identification will say what is wrong with it
        with self._lock:
            self._taps[part.with_name(part.name.removesuffix(PART_SUFFIX))] = tap  # a new attempt replaces it
        return tap.feed

    def received(self, jobs: Iterable[DownloadJobRemoteSource]) -> dict[int, Received]:
        """After the jobs completed: what each finished file's download took, by inode."""
        out: dict[int, Received] = {}
        for job in jobs:
            identity = job.identity
            if job.blake3 is None or identity is None or job.download_path is None:
                continue
            with self._lock:
                tap = self._taps.get(Path(job.download_path))
            out[identity[0]] = Received(KnownDigest(job.blake3, identity), tap)
        return out


def known_for(files: Iterable[tuple[str, Path]], received: dict[int, Received]) -> dict[str, Received]:
    """The received digests that still hold for these ``(relpath, path)`` files."""
    out: dict[str, Received] = {}
    for rel, path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        r = received.get(st.st_ino)
        if r is not None and r.known.holds_for(st):
            out[rel] = r
    return out


__all__ = ["Handoff", "Received", "known_for"]
