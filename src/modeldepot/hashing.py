"""Content hashes of model files and folders, Civitai-compatible hashes, and a streaming hasher.

Algorithms (``ModelHash(algorithm=...)``, ``DepotConfig.hashing_algorithm``):

* ``blake3`` (alias ``blake3_multi``): BLAKE3 over a memory map, multi-threaded. Fastest on SSDs
  and in the page cache; on spinning disks prefer ``blake3_single`` (parallel page faults seek).
* ``blake3_single``: the same digest from one thread. Both print the prefix ``blake3:``.
* ``sha256`` and any other :mod:`hashlib` name: sequential reads into one reusable 4 MiB buffer.
  ``shake_128`` / ``shake_256`` produce 32 / 64 bytes.

Output is ``"<prefix>:<lowercase hex>"``, e.g. ``blake3:af13...``.

Memory-mapped hashing must not be used on a file another process may truncate at the same time
(a read past the new end kills the process with SIGBUS); files being written are hashed with
:class:`StreamingHasher` by whoever writes them.

**Folder rule** (a diffusers folder, a multi-file model):

1. Walk the folder recursively, following symlinks to files and folders. Names starting with
   ``.`` are skipped (``.git``, ``.cache``, macOS ``._x.safetensors`` shadows). A symlink to a
   folder that is one of its own ancestors is skipped, so loops end.
2. Keep *weight files*: by default the suffixes in :data:`WEIGHT_SUFFIXES` (case-insensitive);
   pass ``file_filter(relpath) -> bool`` to choose differently. ``relpath`` is the POSIX path
   relative to the folder.
3. Sort them by the UTF-8 bytes of ``relpath`` and hash each file with the chosen algorithm.
4. Feed ``relpath`` + NUL + per-file hex + NUL for each file into one BLAKE3 (whatever the
   per-file algorithm) and print ``"<prefix>:<composite hex>"``.

Because the relative path is part of the composite, **renaming or moving a weight file changes
the folder hash**. This deliberately differs from InvokeAI, which hashes only the digests, so
that two folders whose files swap names (``unet`` vs ``vae`` weights) cannot collide. Configs,
tokenizers and READMEs do not affect the hash. A folder with no weight file is an error, and so
is a weight-file symlink whose target is missing.

**Civitai hashes** (:func:`civitai_hashes`), as defined by civitai/model-scanner ``HashTask.cs``:
SHA256 of the file; AutoV1 = first 8 hex of SHA-256 over the 0x10000 bytes at offset 0x100000
(only for files of at least 2 MiB, as on Civitai); AutoV2 = first 10 hex of SHA256; AutoV3 =
SHA-256 of a safetensors file's bytes after its header (kohya's ``sshs_model_hash``); CRC32 and
BLAKE3 of the file. All are uppercase hex like Civitai's API. Civitai's CRC32 is written in
.NET's little-endian byte order (``System.IO.Hashing.Crc32``), so it is the byte-reversed form of
``zlib.crc32``; :attr:`CivitaiHashes.crc32_zlib` gives the usual spelling.

With a :class:`HashCache`, a file whose ``(device, inode, size, mtime_ns)`` has not changed is
never read twice; folders are cached per file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from blake3 import blake3

from modeldepot._hashcache import HashCache
from modeldepot.errors import (
    ConfigurationError,
    HashingError,
    HashingPathNotFoundError,
    HashingPermissionError,
    IdentificationError,
)

# WEIGHT_SUFFIXES (the default folder-hash filter) is re-exported: install/ and tests import it from here.
from modeldepot.taxonomy import SAFETENSORS_SUFFIXES, WEIGHT_SUFFIXES, has_suffix

StrPath = str | os.PathLike[str]
FileFilter = Callable[[str], bool]

BLAKE3_ALGORITHMS = {"blake3": blake3.AUTO, "blake3_multi": blake3.AUTO, "blake3_single": 1}
SHAKE_LENGTHS = {"shake_128": 32, "shake_256": 64}
BUFFER_SIZE = 4 << 20
_AUTOV1_START, _AUTOV1_LEN = 0x100000, 0x10000
_AUTOV1_MIN_SIZE = 2 * 0x100000
_CIVITAI_CACHE_KEY = "civitai"


class _Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...


def _error(path: StrPath, exc: OSError, what: str = "cannot hash") -> HashingError:
    """Translate an OSError into the HashingError subclass matching its kind."""
    reason = exc.strerror or str(exc)
    cls: type[HashingError] = HashingError
    if isinstance(exc, FileNotFoundError):
        cls, reason = HashingPathNotFoundError, "no such file or directory"
    elif isinstance(exc, PermissionError):
        cls, reason = HashingPermissionError, "permission denied"
    err = cls(f"{what} {os.fspath(path)}: {reason}", Path(path))
    err.errno, err.filename = exc.errno, os.fspath(path)
    return err


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and path.is_symlink():
            err = HashingPathNotFoundError(f"cannot hash {path}: broken symlink", path)
            err.errno, err.filename = errno.ENOENT, str(path)
            raise err from exc
        raise _error(path, exc) from exc


def _regular_file(path: StrPath) -> tuple[Path, os.stat_result]:
    """Stat ``path`` and insist on a regular file (opening a FIFO would block forever)."""
    path = Path(path)
    st = _stat(path)
    if not stat_mod.S_ISREG(st.st_mode):
        raise HashingError(f"cannot hash {path}: not a regular file", path)
    return path, st


def normalize_algorithm(algorithm: str) -> tuple[str, str]:
    """Return ``(algorithm, prefix)`` for a supported name.

    Raises:
        ConfigurationError: naming the algorithm when it is unknown.
    """
    name = algorithm.strip().lower()
    if name in BLAKE3_ALGORITHMS:
        return name, "blake3"
    if name in {a.lower() for a in hashlib.algorithms_available}:
        try:
            return name, hashlib.new(name).name.lower()
        except ValueError:
            pass  # listed by OpenSSL but disabled (FIPS); report like an unknown name
    raise ConfigurationError(
        f"unknown hashing algorithm {algorithm!r}: use blake3, blake3_single, sha256 or a hashlib name "
        f"({', '.join(sorted(hashlib.algorithms_guaranteed))})"
    )


def _hexdigest(h: Any, name: str) -> str:
    if name in SHAKE_LENGTHS:
        return str(h.hexdigest(SHAKE_LENGTHS[name]))
    return str(h.hexdigest())


_local = threading.local()


def _buffer() -> memoryview:
    # One buffer per thread, reused across files: no 4 MiB allocation per file.
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(BUFFER_SIZE))
    return buf


def _read_into(path: Path, hasher: _Hasher, offset: int = 0) -> None:
    buf = _buffer()
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        f.seek(offset)
        while n := f.readinto(buf):
            hasher.update(buf[:n])


def _file_hex(path: Path, algorithm: str) -> str:
    """Hex digest of one regular file; OSErrors come out as HashingError."""
    try:
        if algorithm in BLAKE3_ALGORITHMS:
            h = blake3(max_threads=BLAKE3_ALGORITHMS[algorithm])
            try:
                h.update_mmap(os.fspath(path))
            except (FileNotFoundError, PermissionError):
                raise
            except OSError:
                # Some file systems (FUSE, /proc-like) cannot be mapped: read instead.
                h = blake3(max_threads=BLAKE3_ALGORITHMS[algorithm])
                _read_into(path, h)
            return str(h.hexdigest())
        hl = hashlib.new(algorithm)
        _read_into(path, hl)
        return _hexdigest(hl, algorithm)
    except OSError as exc:
        raise _error(path, exc) from exc


def _default_filter(relpath: str) -> bool:
    return has_suffix(PurePosixPath(relpath).name, WEIGHT_SUFFIXES)


def _sort_key(relpath: str) -> bytes:
    return relpath.encode("utf-8", "surrogateescape")


def _weight_files(
    root: Path, root_st: os.stat_result, file_filter: FileFilter
) -> list[tuple[str, Path, os.stat_result]]:
    """``(relpath, path, stat)`` of the weight files under ``root``, sorted by relpath bytes."""
    found: list[tuple[str, Path, os.stat_result]] = []
    stack: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [
        (root, "", frozenset({(root_st.st_dev, root_st.st_ino)}))
    ]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise _error(folder, exc, "cannot list") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            entry_path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                st = _stat(entry_path)
                ident = (st.st_dev, st.st_ino)
                if ident not in ancestors:  # else a symlink loop
                    stack.append((entry_path, rel + "/", ancestors | {ident}))
                continue
            if not file_filter(rel):
                continue
            st = _stat(entry_path)
            if not stat_mod.S_ISREG(st.st_mode):
                raise HashingError(f"cannot hash {entry_path}: not a regular file", entry_path)
            found.append((rel, entry_path, st))
    found.sort(key=lambda item: _sort_key(item[0]))
    return found


class ModelHash:
    """Hash a model file or folder: ``ModelHash("blake3").hash(path) -> "blake3:<hex>"``.

    Args:
        algorithm: ``blake3`` (default), ``blake3_multi``, ``blake3_single``, ``sha256`` or any
            hashlib name.
        file_filter: for folders, ``(relative POSIX path) -> keep?``; default: weight suffixes.
        cache: remember digests of unchanged files in the database.

    Raises:
        ConfigurationError: unknown algorithm.
    """

    def __init__(
        self, algorithm: str = "blake3", file_filter: FileFilter | None = None, cache: HashCache | None = None
    ) -> None:
        self.algorithm, self.prefix = normalize_algorithm(algorithm)
        self.file_filter: FileFilter = file_filter or _default_filter
        self.cache = cache

    def __repr__(self) -> str:
        return f"ModelHash(algorithm={self.algorithm!r}, cache={'on' if self.cache else 'off'})"

    def hash(self, path: StrPath) -> str:
        """``"<prefix>:<hex>"`` of a file, or of a folder by the folder rule (module docstring).

        Raises:
            HashingError: missing path (also ``FileNotFoundError``), unreadable file (also
                ``PermissionError``), a folder without weight files, a broken weight symlink.
        """
        path = Path(path)
        st = _stat(path)
        if stat_mod.S_ISDIR(st.st_mode):
            return self._hash_folder(path, st)
        if not stat_mod.S_ISREG(st.st_mode):
            raise HashingError(f"cannot hash {path}: not a regular file or folder", path)
        return self._hash_file(path, st)

    def _hash_file(self, path: Path, st: os.stat_result) -> str:
        if self.cache is not None:
            hit = self.cache.lookup(st, self.prefix)
            if hit is not None:
                return hit
        started = time.time_ns()
        digest = f"{self.prefix}:{_file_hex(path, self.algorithm)}"
        if self.cache is not None:
            self.cache.record(path, st, started, {self.prefix: digest})
        return digest

    def _hash_folder(self, root: Path, root_st: os.stat_result) -> str:
        files = _weight_files(root, root_st, self.file_filter)
        if not files:
            if self.file_filter is _default_filter:
                why = "no weight files in it (looked for " + " ".join(sorted(WEIGHT_SUFFIXES)) + ")"
            else:
                why = "no file in it matches the file filter"
            raise HashingError(f"cannot hash folder {root}: {why}", root)
        return composite_hash(
            [(rel, self._hash_file(path, st).split(":", 1)[1]) for rel, path, st in files],
            self.prefix,
            file_filter=lambda _rel: True,  # already filtered by _weight_files
        )


def composite_hash(
    entries: list[tuple[str, str]], prefix: str = "blake3", file_filter: FileFilter | None = None
) -> str:
    """The folder hash from ``(relpath, per-file hex)`` pairs, by the folder rule.

    Lets a caller that already knows every file's digest (the content store's manifest) get the
    folder hash without reading a byte. Entries the filter rejects (default: non-weight files)
    and hidden names are ignored.

    Raises:
        HashingError: when no entry is a weight file.
    """
    keep = file_filter or _default_filter
    chosen = sorted(
        ((rel, hex_) for rel, hex_ in entries if keep(rel) and not any(p.startswith(".") for p in rel.split("/"))),
        key=lambda item: _sort_key(item[0]),
    )
    if not chosen:
        raise HashingError("cannot hash a folder without weight files")
    composite = blake3()
    for rel, hex_part in chosen:
        composite.update(_sort_key(rel) + b"\0" + hex_part.encode("ascii") + b"\0")
    return f"{prefix}:{composite.hexdigest()}"


class StreamingHasher:
    """Hash bytes as they flow past (a copy or a download), e.g. ``"blake3:<hex>"`` at the end.

    ``blake3`` uses several threads for large updates; small updates are gathered into 1 MiB
    batches first, because threading small pieces costs more than it gains.
    """

    _BATCH = 1 << 20

    def __init__(self, algorithm: str = "blake3") -> None:
        self.algorithm, self.prefix = normalize_algorithm(algorithm)
        self.bytes_hashed = 0
        self._pending = bytearray()
        self._batching = BLAKE3_ALGORITHMS.get(self.algorithm) == blake3.AUTO
        if self.algorithm in BLAKE3_ALGORITHMS:
            self._h: Any = blake3(max_threads=BLAKE3_ALGORITHMS[self.algorithm])
        else:
            self._h = hashlib.new(self.algorithm)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.bytes_hashed += n
        if not self._batching or (not self._pending and n >= self._BATCH):
            # Read-only views let blake3 release the GIL (it keeps it for mutable buffers).
            self._h.update(memoryview(data).toreadonly())
        else:
            self._pending += data
            if len(self._pending) >= self._BATCH:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._h.update(memoryview(self._pending).toreadonly())
            self._pending.clear()

    def hexdigest(self) -> str:
        self._flush()
        return _hexdigest(self._h, self.algorithm)

    def prefixed(self) -> str:
        return f"{self.prefix}:{self.hexdigest()}"


@dataclass(frozen=True)
class CivitaiHashes:
    """The hashes Civitai lists per file (``files[].hashes``), uppercase hex."""

    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None
    crc32: str
    blake3: str

    def as_dict(self) -> dict[str, str]:
        """Civitai's key spelling; hashes a file does not have are left out."""
        pairs = {"SHA256": self.sha256, "AutoV1": self.autov1, "AutoV2": self.autov2, "AutoV3": self.autov3}
        pairs |= {"CRC32": self.crc32, "BLAKE3": self.blake3}
        return {k: v for k, v in pairs.items() if v is not None}

    @property
    def crc32_zlib(self) -> str:
        """The CRC-32 in the usual big-endian spelling (``zlib.crc32``, ``crc32`` tools)."""
        return bytes.fromhex(self.crc32)[::-1].hex().upper()

    def matches(self, value: str) -> bool:
        """True when ``value`` equals any of these hashes (case-insensitive), like Civitai's by-hash."""
        wanted = value.strip().upper()
        return wanted in self.as_dict().values() or wanted == self.crc32_zlib

    def _encode(self) -> str:
        return ",".join(v or "" for v in (self.sha256, self.autov1, self.autov2, self.autov3, self.crc32, self.blake3))

    @classmethod
    def _decode(cls, text: str) -> CivitaiHashes | None:
        parts = text.split(",")
        if len(parts) != 6:
            return None
        s, v1, v2, v3, crc, b3 = parts
        return cls(sha256=s, autov1=v1 or None, autov2=v2, autov3=v3 or None, crc32=crc, blake3=b3)


def autov2(sha256_hex: str) -> str:
    """Civitai AutoV2 (= A1111's short checkpoint hash): the first 10 hex of the SHA-256, uppercase."""
    text = sha256_hex.strip().removeprefix("sha256:")
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return text[:10].upper()


def autov1(path: StrPath) -> str | None:
    """Civitai AutoV1 (A1111's old short hash); None for files under 2 MiB, as on Civitai."""
    path, st = _regular_file(path)
    if st.st_size < _AUTOV1_MIN_SIZE:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(_AUTOV1_START)
            return hashlib.sha256(f.read(_AUTOV1_LEN)).hexdigest()[:8].upper()
    except OSError as exc:
        raise _error(path, exc) from exc


def autov3(path: StrPath) -> str | None:
    """Civitai AutoV3 alone: SHA-256 of a safetensors file's tensor bytes; None for other files."""
    path, _ = _regular_file(path)
    offset = _data_offset(path)
    if offset is None:
        return None
    sha = hashlib.sha256()
    try:
        _read_into(path, sha, offset)
    except OSError as exc:
        raise _error(path, exc) from exc
    return sha.hexdigest().upper()


def _data_offset(path: StrPath) -> int | None:
    """Where a safetensors file's tensor data starts; None for other files or a broken header."""
    path = Path(path)
    if not has_suffix(path.name, SAFETENSORS_SUFFIXES):
        return None
    from modeldepot.identify.safetensors import read_safetensors_header

    try:
        return read_safetensors_header(path).data_offset
    except IdentificationError:
        # The other hashes are still well defined (and useful to find the file on Civitai).
        return None


def civitai_hashes(path: StrPath, cache: HashCache | None = None) -> CivitaiHashes:
    """All Civitai hashes of one file, computed in one read pass (hashers run on worker threads).

    With ``cache``, an unchanged file is not read again, and the pass also records the file's
    ``sha256:`` and ``blake3:`` digests for :class:`ModelHash`.

    Raises:
        HashingError: missing, unreadable or not a regular file.
    """
    path, st = _regular_file(path)
    if cache is not None:
        hit = cache.lookup(st, _CIVITAI_CACHE_KEY)
        decoded = CivitaiHashes._decode(hit) if hit else None
        if decoded is not None:
            return decoded
    started = time.time_ns()
    try:
        result = _civitai_pass(path, st.st_size, _data_offset(path))
    except OSError as exc:
        raise _error(path, exc) from exc
    if cache is not None:
        cache.record(
            path,
            st,
            started,
            {
                _CIVITAI_CACHE_KEY: result._encode(),
                "sha256": "sha256:" + result.sha256.lower(),
                "blake3": "blake3:" + result.blake3.lower(),
            },
        )
    return result


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


def _civitai_pass(path: Path, size: int, data_offset: int | None) -> CivitaiHashes:
    sha, b3, crc = hashlib.sha256(), blake3(), _Crc32()
    v3 = hashlib.sha256() if data_offset is not None else None
    v1 = bytearray() if size >= _AUTOV1_MIN_SIZE else None
    workers = min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="civitai-hash") if workers > 1 else None
    # Two buffers: the next chunk is read while worker threads hash the current one.
    bufs = [memoryview(bytearray(BUFFER_SIZE)), memoryview(bytearray(BUFFER_SIZE))]
    try:
        with open(path, "rb", buffering=0) as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            pos, i = 0, 0
            n = f.readinto(bufs[0])
            while n:
                # Read-only: blake3 releases the GIL only for immutable buffers.
                chunk = bufs[i][:n].toreadonly()
                jobs: list[tuple[_Hasher, memoryview]] = [(sha, chunk)]
                if v3 is not None and data_offset is not None and pos + n > data_offset:
                    jobs.append((v3, chunk[max(0, data_offset - pos) :]))
                # The two SHA-256 runs are the slow ones: queue them first so they land on different workers.
                jobs += [(b3, chunk), (crc, chunk)]
                if v1 is not None and pos < _AUTOV1_START + _AUTOV1_LEN and pos + n > _AUTOV1_START:
                    v1 += chunk[max(0, _AUTOV1_START - pos) : _AUTOV1_START + _AUTOV1_LEN - pos]
                futures: list[Future[Any]] = [pool.submit(h.update, c) for h, c in jobs] if pool else []
                if pool is None:
                    for h, c in jobs:
                        h.update(c)
                i = 1 - i
                n_next = f.readinto(bufs[i])
                for fut in futures:
                    fut.result()
                pos, n = pos + n, n_next
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if pos != size:
        raise OSError(errno.EIO, f"file changed size while hashing ({size} -> {pos} bytes)")
    sha_hex = sha.hexdigest().upper()
    return CivitaiHashes(
        sha256=sha_hex,
        autov1=hashlib.sha256(v1).hexdigest()[:8].upper() if v1 is not None else None,
        autov2=sha_hex[:10],
        autov3=v3.hexdigest().upper() if v3 is not None else None,
        # .NET's Crc32 (Civitai's scanner) emits the value little-endian.
        crc32=crc.value.to_bytes(4, "little").hex().upper(),
        blake3=b3.hexdigest().upper(),
    )


__all__ = [
    "BLAKE3_ALGORITHMS",
    "WEIGHT_SUFFIXES",
    "CivitaiHashes",
    "HashCache",
    "HashingError",
    "HashingPathNotFoundError",
    "HashingPermissionError",
    "ModelHash",
    "StreamingHasher",
    "autov1",
    "autov2",
    "autov3",
    "civitai_hashes",
    "normalize_algorithm",
]
