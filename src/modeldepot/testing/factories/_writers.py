"""Low-level writers for test files, without torch: safetensors by hand, torch pickles opcode by opcode.

Safetensors files are written by hand (8-byte length, JSON header, data); their data region is
zeros written sparsely, plus a few seeded random bytes per tensor when ``seed`` is given, so two
writes with the same arguments are byte-identical and different seeds give different content.
Pickle checkpoints are real PyTorch zip archives (``archive/data.pkl`` + ``archive/data/N``) whose
pickle is assembled opcode by opcode, referencing ``torch._utils._rebuild_tensor_v2`` and
``torch.HalfStorage`` the way ``torch.save`` does. Every write goes to a temp file then a rename.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Union

from modeldepot.taxonomy import PICKLE_SUFFIXES, has_suffix

Shape = tuple[int, ...]
#: A pickle tree: nested dicts whose leaves are tensor shapes (tuples) or plain scalars.
Tree = Mapping[str, Union["Tree", Shape, int, float, str, bool, None]]
_ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1, "BOOL": 1}


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, Shape],
    *,
    metadata: Mapping[str, str] | None = None,
    dtype: str = "F16",
    dtypes: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Path:
    """Write a valid safetensors file with these tensor shapes (data: zeros, or seeded bytes)."""
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    spans: list[tuple[int, int]] = []
    for name, shape in tensors.items():
        dt = (dtypes or {}).get(name, dtype)
        n = math.prod(shape) * _ITEMSIZE[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + n]}
        spans.append((offset, n))
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8-byte alignment
    with _atomic(path) as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        start = f.tell()
        if seed is not None:
            rng = random.Random(seed)
            for begin, n in spans:
                if n:
                    f.seek(start + begin)
                    f.write(rng.randbytes(min(n, 64)))
        f.truncate(start + offset)
    return path


# -- pickles ---------------------------------------------------------------------------------------
class _Pickle:
    """Just enough of pickle protocol 2 to write what ``torch.save`` writes."""

    def __init__(self, storage_key: Iterator[str], legacy: bool = False) -> None:
        self.out = bytearray(b"\x80\x02")
        self.storages: list[tuple[str, int]] = []
        self._keys = storage_key
        self._legacy = legacy

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def value(self, v: Any) -> None:
        o = self.out
        if v is None:
            o += b"N"
        elif isinstance(v, bool):
            o += b"\x88" if v else b"\x89"
        elif isinstance(v, int) and -(2**31) <= v < 2**31:
            o += b"J" + struct.pack("<i", v)
        elif isinstance(v, int):
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            o += b"\x8a" + bytes([len(raw)]) + raw
        elif isinstance(v, float):
            o += b"G" + struct.pack(">d", v)
        elif isinstance(v, str):
            raw = v.encode()
            o += b"X" + struct.pack("<I", len(raw)) + raw
        elif isinstance(v, tuple):
            self.tensor(v)
        elif isinstance(v, Mapping):
            o += b"}("
            for k, item in v.items():
                self.value(str(k))
                self.value(item)
            o += b"u"
        else:
            raise TypeError(f"cannot pickle {type(v).__name__}")

    def _tuple(self, items: tuple[Any, ...]) -> None:
        self.out += b"("
        for item in items:
            self.value(item) if not isinstance(item, tuple) else self._tuple(item)
        self.out += b"t"

    def tensor(self, shape: Shape) -> None:
        key = next(self._keys)
        numel = math.prod(shape)
        self.storages.append((key, numel))
        stride = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("
        self.value("storage")
        self.glob("torch", "HalfStorage")
        self.value(key)
        self.value("cpu")
        self.value(numel)
        if self._legacy:
            self.value(None)
        self.out += b"tQ"  # persistent id: the storage lives outside the pickle
        self.value(0)
        self._tuple(shape)
        self._tuple(stride)
        self.value(False)
        self.glob("collections", "OrderedDict")
        self.out += b")Rt"
        self.out += b"R"

    def done(self) -> bytes:
        return bytes(self.out + b".")


def _counter() -> Iterator[str]:
    i = 0
    while True:
        yield str(i)
        i += 1


def write_torch_pickle(path: str | Path, tree: Tree, *, legacy: bool = False) -> Path:
    """Write ``tree`` the way ``torch.save`` does (zip format; ``legacy=True`` for the pre-1.6 format)."""
    path = Path(path)
    p = _Pickle(_counter(), legacy=legacy)
    p.value(tree)
    body = p.done()
    with _atomic(path) as f:
        if legacy:
            f.write(b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".")
            f.write(b"\x80\x02M\xe9\x03.")  # protocol version 1001
            sys_info = _Pickle(_counter())
            sys_info.value({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4, "long": 4}})
            f.write(sys_info.done())
            f.write(body)
            keys = _Pickle(_counter())
            keys.out += b"("
            for key, _ in p.storages:
                keys.value(key)
            keys.out += b"l"
            f.write(keys.done())
            for _, numel in p.storages:
                f.write(struct.pack("<q", numel) + bytes(numel * 2))
            return path
        archive = path.stem or "archive"
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{archive}/data.pkl", body)
            zf.writestr(f"{archive}/byteorder", "little")
            for key, numel in p.storages:
                zf.writestr(f"{archive}/data/{key}", bytes(numel * 2))
            zf.writestr(f"{archive}/version", "3\n")
            zf.writestr(f"{archive}/.data/serialization_id", "0" * 40)
    return path


def write_malicious_pickle(
    path: str | Path, command: str = "true", *, target: str = "os.system", zip_format: bool = True
) -> Path:
    """A checkpoint whose pickle calls ``target(command)`` on load. Only ever read it restrictedly."""
    path = Path(path)
    module, _, name = target.rpartition(".")
    p = _Pickle(_counter())
    p.out += b"}"
    p.value("state_dict")
    p.glob(module, name)
    p.value(command)
    p.out += b"\x85Rs"  # (command,) -> REDUCE -> dict["state_dict"] = result
    body = p.done()
    with _atomic(path) as f:
        if not zip_format:
            f.write(body)
            return path
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("archive/data.pkl", body)
            zf.writestr("archive/version", "3\n")
    return path


def write_weights(
    path: str | Path,
    tensors: Mapping[str, Shape],
    *,
    metadata: Mapping[str, str] | None = None,
    seed: int | None = None,
    wrap: str | None = "state_dict",
    top: Mapping[str, Any] | None = None,
) -> Path:
    """Safetensors for ``.safetensors``; a torch pickle (nested under ``wrap``) for .ckpt/.pt/.pth/.bin."""
    path = Path(path)
    if has_suffix(path.name, PICKLE_SUFFIXES):
        tree: dict[str, Any] = {wrap: dict(tensors)} if wrap else dict(tensors)
        tree.update(top or {})
        return write_torch_pickle(path, tree)
    return write_safetensors(path, tensors, metadata=metadata, seed=seed)


# -- malformed files -------------------------------------------------------------------------------
BAD_SAFETENSORS_KINDS = (
    "empty",
    "truncated_length",
    "header_longer_than_file",
    "huge_header_length",
    "not_json",
    "not_object",
    "unknown_dtype",
    "overlapping",
    "truncated_data",
)


def write_bad_safetensors(path: str | Path, kind: str) -> Path:
    """A malformed safetensors file of one of :data:`BAD_SAFETENSORS_KINDS`."""
    path = Path(path)
    good = {"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}

    def framed(header: bytes, data: bytes = b"\0" * 8, length: int | None = None) -> bytes:
        return struct.pack("<Q", len(header) if length is None else length) + header + data

    blobs = {
        "empty": b"",
        "truncated_length": b"\x10\x00\x00",
        "header_longer_than_file": framed(json.dumps(good).encode(), length=10_000),
        "huge_header_length": framed(b"{}", length=4 * 1024**3),
        "not_json": framed(b"this is not json at all!"),
        "not_object": framed(b"[1, 2, 3]"),
        "unknown_dtype": framed(json.dumps({"a": {"dtype": "F12", "shape": [4], "data_offsets": [0, 8]}}).encode()),
        "overlapping": framed(
            json.dumps(
                {
                    "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
                    "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
                }
            ).encode(),
            b"\0" * 12,
        ),
        "truncated_data": framed(
            json.dumps({"a": {"dtype": "F16", "shape": [1024], "data_offsets": [0, 2048]}}).encode(), b"\0" * 100
        ),
    }
    if kind not in blobs:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(BAD_SAFETENSORS_KINDS)}")
    with _atomic(path) as f:
        f.write(blobs[kind])
    return path


def write_json(path: str | Path, doc: Mapping[str, Any]) -> Path:
    path = Path(path)
    with _atomic(path) as f:
        f.write((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with _atomic(path) as f:
        f.write(text.encode())
    return path
