"""Where served bytes live (a spool directory the hub owns) and the hashes the fake services publish."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3

_HASH_BLOCK = 8 * 1024 * 1024
_cache_lock = threading.Lock()
# (realpath, size, mtime_ns, inode, algo) -> hex digest; hashing a 1 GiB file once per process is enough.
_hash_cache: dict[tuple[str, int, int, int, str], str] = {}


class Spool:
    """A private temp directory holding ``bytes`` handed to the hub, stored by content."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._lock = threading.Lock()

    def put(self, data: bytes) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="modeldepot-fakehub-"))
            target = self._dir / hashlib.sha256(data).hexdigest()
            if not target.exists():
                fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                Path(tmp).replace(target)
            return target

    def cleanup(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


def materialise(spool: Spool, data: bytes | Path | str) -> Path:
    """A real file holding ``data`` (``Path`` data is served in place, never copied)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return spool.put(bytes(data))
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"fakehub: no such file to serve: {path}")
    return path


def _key(path: Path, algo: str) -> tuple[str, int, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, algo)


def _cached(path: Path, algo: str, compute: Callable[[], str]) -> str:
    key = _key(path, algo)
    with _cache_lock:
        hit = _hash_cache.get(key)
    if hit is not None:
        return hit
    value = compute()
    with _cache_lock:
        _hash_cache[key] = value
    return value


def _stream(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            block = f.read(_HASH_BLOCK if left is None else min(_HASH_BLOCK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


def sha256_file(path: Path) -> str:
    def compute() -> str:
        h = hashlib.sha256()
        for block in _stream(path):
            h.update(block)
        return h.hexdigest()

    return _cached(path, "sha256", compute)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: sha1 over ``b"blob <len>\\0" + content`` (what the HF cache names blobs)."""

    def compute() -> str:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % path.stat().st_size)
        for block in _stream(path):
            h.update(block)
        return h.hexdigest()

    return _cached(path, "gitsha1", compute)


def git_blob_sha1_bytes(data: bytes) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file a repo stores in place of a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def civitai_hashes(path: Path, name: str) -> dict[str, str]:
    """The hashes Civitai publishes for a file called ``name``, uppercase hex (civitai/model-scanner ``HashTask``)."""

    def compute() -> str:
        sha = hashlib.sha256()
        b3 = blake3.blake3()
        crc = 0
        for block in _stream(path):
            sha.update(block)
            b3.update(block)
            crc = zlib.crc32(block, crc)
        return f"{sha.hexdigest()}:{b3.hexdigest()}:{crc:08x}"

    sha256, b3hex, crc32 = _cached(path, "civitai", compute).split(":")
    size = path.stat().st_size
    out = {"SHA256": sha256.upper(), "AutoV2": sha256[:10].upper(), "BLAKE3": b3hex.upper(), "CRC32": crc32.upper()}
    # Civitai computes AutoV1 (A1111's old hash: 64 KiB at offset 1 MiB) only for files of 2 MiB or more.
    if size >= 2 * 1024 * 1024:
        h = hashlib.sha256()
        for block in _stream(path, 0x100000, 0x10000):
            h.update(block)
        out["AutoV1"] = h.hexdigest()[:8].upper()
    if name.lower().endswith(".safetensors"):
        v3 = _autov3(path, size)
        if v3 is not None:
            out["AutoV3"] = v3
    return out


def _autov3(path: Path, size: int) -> str | None:
    """sha256 of everything after the safetensors header (kohya's addnet hash), or None if not safetensors."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if 8 + n > size:
        return None
    h = hashlib.sha256()
    for block in _stream(path, 8 + n):
        h.update(block)
    return h.hexdigest().upper()
