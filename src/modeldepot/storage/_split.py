"""Single-file checkpoints split into one safetensors file per component, and joined back exactly.

Fine-tunes of one family often carry the very same VAE or text encoder; stored as parts, the
content store keeps each shared part once (the normalized store's space saving), and ``export``
rebuilds the original single file byte for byte. A split folder holds::

    split.json                  what the join needs: the original header bytes, the tensors in
                                data order with their component and CRC, uncovered bytes inline
    unet.safetensors            model.diffusion_model.*
    vae.safetensors             first_stage_model.*
    text_encoder.safetensors    cond_stage_model.* (SD-1/SD-2), conditioner.embedders.0.* (SDXL)
    text_encoder_2.safetensors  conditioner.embedders.1.* (SDXL)
    rest.safetensors            every other tensor, if any

Part files are canonical (names, dtypes, shapes and bytes of the original tensors; keys sorted,
packed without gaps, compact sorted-key JSON header padded with spaces to 8 bytes, no
``__metadata__``) so the same tensors give the same bytes whichever checkpoint they came from and
however it was laid out: that is what lets the content store keep a shared VAE once. Files are read
with ``pread`` in bounded chunks, never whole (checkpoints are 2-7 GB). No torch here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, TypeGuard

from modeldepot._fs import NO_SPACE_ERRNOS, atomic_write_bytes, fsync_dir, no_space_text
from modeldepot.errors import InsufficientSpaceError, InvalidSafetensorsError, StorageError

#: Key prefixes of the original (LDM / SGM) layout; the single-file loader reads by these too.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."

#: Key prefix -> component of SD-1 / SD-2 / SDXL single-file checkpoints (prefixes are disjoint).
COMPONENT_PREFIXES: Mapping[str, str] = MappingProxyType(
    {
        UNET_PREFIX: "unet",
        VAE_PREFIX: "vae",
        "cond_stage_model.": "text_encoder",
        "conditioner.embedders.0.": "text_encoder",
        "conditioner.embedders.1.": "text_encoder_2",
    }
)
REST = "rest"
#: Every component a split folder can hold, in the order its parts are written.
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", REST)
SPLIT_MANIFEST = "split.json"
SPLIT_FORMAT = "modeldepot.split"
SPLIT_VERSION = 1
#: split.json carries bytes no tensor covers inline; real files have none, so a file with more than
#: this outside its tensors is not a checkpoint worth splitting (and would bloat the manifest).
MAX_INLINE_BYTES = 16 * 1024 * 1024
_CHUNK = 16 * 1024 * 1024
#: Builds the error for a malformed split.json from the reason.
_Bad = Callable[[str], StorageError]
_TENSOR_FIELDS = ("name", "component", "dtype", "shape", "begin", "end", "crc32")


def component_of(key: str) -> str:
    """The component a checkpoint key belongs to: ``unet``, ``vae``, ``text_encoder``,
    ``text_encoder_2`` or ``rest``."""
    for prefix, component in COMPONENT_PREFIXES.items():
        if key.startswith(prefix):
            return component
    return REST


def part_file_name(component: str) -> str:
    return f"{component}.safetensors"


def is_split_dir(path: str | Path) -> bool:
    """True for a folder holding ``split.json`` (a split single-file checkpoint)."""
    p = Path(path)
    return p.is_dir() and (p / SPLIT_MANIFEST).is_file()


@dataclass(frozen=True)
class SplitTensor:
    """One tensor of the original file: where its bytes were, and which part holds them now."""

    name: str
    component: str
    dtype: str
    shape: tuple[int, ...]
    #: offsets in the original data section (after the header)
    begin: int
    end: int
    #: zlib CRC-32 of the bytes, so a join notices a part altered since the split
    crc32: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SplitGap:
    """Bytes of the original data section that no tensor covers (padding, trailing bytes)."""

    begin: int
    data: bytes

    @property
    def end(self) -> int:
        return self.begin + len(self.data)


@dataclass(frozen=True)
class PartLayout:
    """A canonical part file: its first bytes (length + padded header) and each tensor's offset."""

    prefix: bytes
    offsets: tuple[tuple[SplitTensor, int], ...]
    size: int


def part_layout(tensors: Iterable[SplitTensor]) -> PartLayout:
    """The canonical file of these tensors: sorted by name, packed, compact sorted-key header."""
    ordered = sorted(tensors, key=lambda t: t.name)
    header: dict[str, Any] = {}
    offsets: list[tuple[SplitTensor, int]] = []
    pos = 0
    for t in ordered:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, pos + t.nbytes]}
        offsets.append((t, pos))
        pos += t.nbytes
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # as the reference writer pads: data starts 8-byte aligned
    prefix = struct.pack("<Q", len(raw)) + raw
    return PartLayout(prefix=prefix, offsets=tuple(offsets), size=len(prefix) + pos)


@dataclass(frozen=True)
class SplitManifest:
    """The content of ``split.json``: everything but the tensor bytes of the original file."""

    #: the original header JSON bytes exactly as they were (key order, spacing, padding)
    header: bytes
    #: size of the original file in bytes
    size: int
    #: every tensor, in original data order
    tensors: tuple[SplitTensor, ...]
    gaps: tuple[SplitGap, ...] = ()

    @property
    def data_offset(self) -> int:
        return 8 + len(self.header)

    @property
    def components(self) -> tuple[str, ...]:
        present = {t.component for t in self.tensors}
        return tuple(c for c in COMPONENTS if c in present)

    def tensors_of(self, component: str) -> tuple[SplitTensor, ...]:
        return tuple(t for t in self.tensors if t.component == component)

    def layout(self, component: str) -> PartLayout:
        return part_layout(self.tensors_of(component))

    def file_names(self) -> tuple[str, ...]:
        """Every file of the split folder: the parts, then ``split.json``."""
        return (*(part_file_name(c) for c in self.components), SPLIT_MANIFEST)

    @property
    def metadata(self) -> dict[str, Any]:
        """The original file's ``__metadata__`` (the parts carry none)."""
        meta = _header_doc(self.header, Path(SPLIT_MANIFEST)).get("__metadata__")
        return dict(meta) if isinstance(meta, dict) else {}

    def to_json(self) -> bytes:
        doc = {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "size": self.size,
            "header": base64.b64encode(self.header).decode("ascii"),
            "tensors": [{f: getattr(t, f) for f in _TENSOR_FIELDS} for t in self.tensors],
            "gaps": [{"offset": g.begin, "data": base64.b64encode(g.data).decode("ascii")} for g in self.gaps],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> SplitManifest:
        """Parse and check a ``split.json``: every byte of the original is accounted for exactly once."""

        def bad(why: str) -> StorageError:
            return StorageError(f"{where}: not a valid split manifest: {why}", where)

        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"not JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
            raise bad(f"format is not {SPLIT_FORMAT!r}")
        version = doc.get("version")
        if version != SPLIT_VERSION:
            raise bad(f"version {version!r} is not {SPLIT_VERSION} (written by another modeldepot version?)")
        header = _b64(doc.get("header"), "header", bad)
        size = doc.get("size")
        if not _is_int(size) or size < 8 + len(header):
            raise bad(f"size {size!r} is smaller than the header")
        tensors = tuple(_tensor_from(entry, bad) for entry in _list(doc.get("tensors"), "tensors", bad))
        gaps = tuple(_gap_from(entry, bad) for entry in _list(doc.get("gaps", []), "gaps", bad))
        _check_tiling(tensors, gaps, size - 8 - len(header), bad)
        return cls(header=header, size=size, tensors=tensors, gaps=gaps)


def read_split_manifest(split_dir: str | Path) -> SplitManifest:
    """The checked manifest of a split folder."""
    where = Path(split_dir) / SPLIT_MANIFEST
    try:
        raw = where.read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(f"{split_dir}: not a split checkpoint folder (no {SPLIT_MANIFEST})", where) from exc
    except OSError as exc:
        raise StorageError(f"{where}: cannot read: {exc.strerror or exc}", where) from exc
    return SplitManifest.from_json(raw, where)


def write_header_stub(split_dir: str | Path, dest: str | Path) -> Path:
    """A sparse file with the original header at the original size: what header-only
    identification of a split checkpoint reads (its tensor bytes are never needed for that)."""
    manifest = read_split_manifest(split_dir)
    out = Path(dest)
    with out.open("wb") as f:
        f.write(struct.pack("<Q", len(manifest.header)) + manifest.header)
        f.truncate(manifest.size)
    return out


# -- split ---------------------------------------------------------------------------------------
def split_checkpoint(src: str | Path, out_dir: str | Path) -> SplitManifest:
    """Write the components of safetensors checkpoint ``src`` into ``out_dir`` as canonical part
    files plus ``split.json``; ``join_checkpoint`` rebuilds ``src`` from them byte for byte.

    ``split.json`` is written last, so a folder is a split folder only once all its parts are
    complete. Raises :class:`StorageError` for a file whose header is malformed, whose tensors
    overlap or run past its end.
    """
    src, out = Path(src), Path(out_dir)
    try:
        fd = os.open(src, os.O_RDONLY)
    except OSError as exc:
        raise StorageError(f"cannot split {src}: {exc.strerror or exc}", src) from exc
    try:
        header, tensors, data_size = _read_source(src, fd)
        gaps = _gaps(src, fd, 8 + len(header), tensors, data_size)
        try:
            out.mkdir(parents=True, exist_ok=True)
            # The folder must not claim to be a split while its parts are being replaced.
            (out / SPLIT_MANIFEST).unlink(missing_ok=True)
            crcs: dict[str, int] = {}
            buf = memoryview(bytearray(_CHUNK))
            draft = SplitManifest(header=header, size=8 + len(header) + data_size, tensors=tensors, gaps=gaps)
            for component in draft.components:
                crcs |= _write_part(src, fd, draft.data_offset, draft.layout(component), out, component, buf)
            for component in set(COMPONENTS) - set(draft.components):
                (out / part_file_name(component)).unlink(missing_ok=True)  # left by an earlier split
            manifest = replace(draft, tensors=tuple(replace(t, crc32=crcs[t.name]) for t in tensors))
            atomic_write_bytes(out / SPLIT_MANIFEST, manifest.to_json())
        except OSError as exc:
            raise _os_error(exc, out, f"cannot write the parts of {src} into {out}") from exc
    finally:
        os.close(fd)
    return manifest


def _read_source(src: Path, fd: int) -> tuple[bytes, tuple[SplitTensor, ...], int]:
    """The raw header bytes, the tensors in data order (CRC not yet known) and the data size."""
    # Imported here: the identify package costs ~0.4 s to import and only splitting needs it.
    from modeldepot.identify.safetensors import read_safetensors_header

    try:
        # The identify reader validates dtypes, shapes, sizes, bounds and overlaps.
        parsed = read_safetensors_header(src)
    except InvalidSafetensorsError as exc:
        raise StorageError(f"cannot split {src}: {exc}", src) from exc
    size = os.fstat(fd).st_size
    raw = _pread_exact(fd, 8 + parsed.header_len, 0, src)
    if size != parsed.file_size or struct.unpack("<Q", raw[:8])[0] != parsed.header_len:
        raise StorageError(f"cannot split {src}: the file changed while it was being read", src)
    ordered = sorted(parsed.tensors.items(), key=lambda item: (item[1].begin, item[1].end, item[0]))
    tensors = tuple(
        SplitTensor(name, component_of(name), i.dtype, tuple(i.shape), i.begin, i.end, 0) for name, i in ordered
    )
    return raw[8:], tensors, size - 8 - parsed.header_len


def _gaps(
    src: Path, fd: int, data_offset: int, tensors: tuple[SplitTensor, ...], data_size: int
) -> tuple[SplitGap, ...]:
    spans: list[tuple[int, int]] = []
    cursor = 0
    for t in tensors:
        if t.nbytes == 0:
            continue
        if t.begin > cursor:
            spans.append((cursor, t.begin))
        cursor = max(cursor, t.end)
    if data_size > cursor:
        spans.append((cursor, data_size))
    total = sum(end - begin for begin, end in spans)
    if total > MAX_INLINE_BYTES:
        raise StorageError(
            f"cannot split {src}: {total} bytes of its data section belong to no tensor"
            f" (more than the {MAX_INLINE_BYTES} a split keeps inline); store it whole",
            src,
        )
    return tuple(SplitGap(b, _pread_exact(fd, e - b, data_offset + b, src)) for b, e in spans)


def _write_part(
    src: Path, fd: int, data_offset: int, layout: PartLayout, out: Path, component: str, buf: memoryview
) -> dict[str, int]:
    """Write one canonical part (temp name, fsync, rename); the CRC of each tensor copied."""
    dest = out / part_file_name(component)
    crcs: dict[str, int] = {}
    with _atomic_file(dest) as f:
        f.write(layout.prefix)
        for t, _ in layout.offsets:
            crcs[t.name] = _copy(fd, data_offset + t.begin, t.nbytes, f, buf, src)
    return crcs


# -- join ----------------------------------------------------------------------------------------
def join_checkpoint(split_dir: str | Path, dest: str | Path) -> int:
    """Rebuild the original single file of ``split_dir`` at ``dest`` byte for byte; bytes written.

    Every part's header and size are checked against ``split.json`` before anything is written, and
    every tensor's CRC while copying: a missing or altered part raises :class:`StorageError` and
    leaves ``dest`` untouched (the file is written under a temp name, then renamed).
    """
    folder, dest = Path(split_dir), Path(dest)
    manifest = read_split_manifest(folder)
    _check_header(manifest, folder / SPLIT_MANIFEST)
    if dest.is_dir():
        raise StorageError(f"cannot join {folder} into {dest}: it is a folder; name the file to write", dest)
    parts: dict[str, tuple[int, dict[str, int]]] = {}
    try:
        for component in manifest.components:
            parts[component] = _open_part(folder, component, manifest.layout(component))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            return _write_joined(manifest, folder, parts, dest)
        except OSError as exc:
            raise _os_error(exc, dest.parent, f"cannot write {dest}") from exc
    finally:
        for fd, _ in parts.values():
            os.close(fd)


def _open_part(folder: Path, component: str, layout: PartLayout) -> tuple[int, dict[str, int]]:
    """An open part whose header and size are what the manifest expects; each tensor's offset."""
    path = folder / part_file_name(component)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise StorageError(f"{folder}: part {path.name} is missing; cannot rebuild the checkpoint", path) from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(layout.prefix), 0)
        if head != layout.prefix or size != layout.size:
            raise StorageError(
                f"{path}: part does not match {SPLIT_MANIFEST} (header or size differs:"
                f" {size} bytes, expected {layout.size}); it was altered or belongs to another split",
                path,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, {t.name: len(layout.prefix) + offset for t, offset in layout.offsets}


def _write_joined(
    manifest: SplitManifest, folder: Path, parts: dict[str, tuple[int, dict[str, int]]], dest: Path
) -> int:
    segments: list[SplitTensor | SplitGap] = [t for t in manifest.tensors if t.nbytes]
    segments += manifest.gaps
    segments.sort(key=lambda s: s.begin)
    buf = memoryview(bytearray(_CHUNK))
    with _atomic_file(dest) as f:
        f.write(struct.pack("<Q", len(manifest.header)) + manifest.header)
        for seg in segments:
            if isinstance(seg, SplitGap):
                f.write(seg.data)
                continue
            fd, offsets = parts[seg.component]
            where = folder / part_file_name(seg.component)
            if _copy(fd, offsets[seg.name], seg.nbytes, f, buf, where) != seg.crc32:
                raise StorageError(
                    f"{where}: the bytes of tensor {seg.name!r} changed since the split; cannot rebuild", where
                )
        written = f.tell()
        if written != manifest.size:  # unreachable for a checked manifest; never rename a wrong file
            raise StorageError(f"{folder}: rebuilt {written} bytes, expected {manifest.size}", folder)
    return written


def _check_header(manifest: SplitManifest, where: Path) -> None:
    """The stored header must describe exactly the tensors the manifest lists."""
    doc = _header_doc(manifest.header, where)
    doc.pop("__metadata__", None)
    want = {t.name: (t.dtype, list(t.shape), [t.begin, t.end]) for t in manifest.tensors}
    got = {
        k: (v.get("dtype"), v.get("shape"), v.get("data_offsets")) if isinstance(v, dict) else None
        for k, v in doc.items()
    }
    if got != want:
        raise StorageError(
            f"{where}: the stored header does not match the tensor list; the manifest was altered", where
        )


def _header_doc(header: bytes, where: Path) -> dict[str, Any]:
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StorageError(f"{where}: the stored header is not JSON: {exc}", where) from exc
    if not isinstance(doc, dict):
        raise StorageError(f"{where}: the stored header is not a JSON object", where)
    return doc


# -- shared --------------------------------------------------------------------------------------
def _pread_exact(fd: int, n: int, offset: int, where: Path) -> bytes:
    out = io.BytesIO()
    _copy(fd, offset, n, out, memoryview(bytearray(min(n, _CHUNK))), where)
    return out.getvalue()


@contextlib.contextmanager
def _atomic_file(dest: Path) -> Iterator[IO[bytes]]:
    """A new file at ``dest``: written under a temp name in its folder, fsynced, then renamed."""
    tmp_fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(tmp_fd, "wb", buffering=1024 * 1024) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def _copy(fd: int, offset: int, length: int, out: IO[bytes], buf: memoryview, where: Path) -> int:
    """Copy ``length`` bytes at ``offset`` of ``fd`` into ``out`` in bounded chunks; their CRC-32."""
    crc = 0
    while length:
        n = os.preadv(fd, [buf[: min(length, len(buf))]], offset)
        if n <= 0:
            raise StorageError(f"{where}: file ended early (truncated while being read?)", where)
        chunk = buf[:n]
        crc = zlib.crc32(chunk, crc)
        out.write(chunk)
        offset += n
        length -= n
    return crc


def _os_error(exc: OSError, where: Path, what: str) -> StorageError | InsufficientSpaceError:
    if exc.errno in NO_SPACE_ERRNOS:
        return InsufficientSpaceError(f"{what}: {no_space_text(where, None)}")
    return StorageError(f"{what}: {exc.strerror or exc}", where)


def _is_int(v: Any) -> TypeGuard[int]:
    return type(v) is int and v >= 0


def _list(v: Any, what: str, bad: _Bad) -> list[Any]:
    if not isinstance(v, list):
        raise bad(f"{what} is not a list")
    return v


def _b64(v: Any, what: str, bad: _Bad) -> bytes:
    if not isinstance(v, str):
        raise bad(f"{what} is not a base64 string")
    try:
        return base64.b64decode(v.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise bad(f"{what} is not valid base64 ({exc})") from exc


def _tensor_from(entry: Any, bad: _Bad) -> SplitTensor:
    if not isinstance(entry, dict) or set(entry) != set(_TENSOR_FIELDS):
        raise bad(f"a tensor entry does not have exactly the fields {', '.join(_TENSOR_FIELDS)}")
    name, component, dtype, shape, begin, end, crc = (entry[f] for f in _TENSOR_FIELDS)
    valid = isinstance(name, str) and component in COMPONENTS and isinstance(dtype, str)
    valid = valid and isinstance(shape, list) and all(_is_int(d) for d in shape)
    if not (valid and _is_int(begin) and _is_int(end) and _is_int(crc) and begin <= end):
        raise bad(f"tensor entry {str(name)[:80]!r} is invalid")
    return SplitTensor(name, component, dtype, tuple(shape), begin, end, crc)


def _gap_from(entry: Any, bad: _Bad) -> SplitGap:
    if not isinstance(entry, dict) or not _is_int(entry.get("offset")):
        raise bad("a gap entry has no valid offset")
    return SplitGap(entry["offset"], _b64(entry.get("data"), "gap data", bad))


def _check_tiling(tensors: tuple[SplitTensor, ...], gaps: tuple[SplitGap, ...], data_size: int, bad: _Bad) -> None:
    """Tensors and gaps must cover the data section exactly once, so a join is exact or refused."""
    if len({t.name for t in tensors}) != len(tensors):
        raise bad("a tensor is listed twice")
    spans = sorted([(t.begin, t.end) for t in tensors if t.nbytes] + [(g.begin, g.end) for g in gaps if g.data])
    cursor = 0
    for begin, end in spans:
        if begin != cursor:
            raise bad(
                f"bytes {min(begin, cursor)}..{max(begin, cursor)} of the data section are covered twice or never"
            )
        cursor = end
    if cursor != data_size or any(t.end > data_size for t in tensors):
        raise bad(f"tensors and gaps cover {cursor} bytes of a {data_size}-byte data section")


__all__ = [
    "COMPONENTS",
    "COMPONENT_PREFIXES",
    "SPLIT_MANIFEST",
    "SplitGap",
    "SplitManifest",
    "SplitTensor",
    "component_of",
    "is_split_dir",
    "join_checkpoint",
    "part_file_name",
    "read_split_manifest",
    "split_checkpoint",
]
