"""Validating reader for safetensors headers: reads the 8-byte length and the JSON, never tensor data.

Format: ``<u64 little-endian N><N bytes of UTF-8 JSON><tensor data>``. The JSON maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data section) and may
hold ``"__metadata__"``: a str -> str mapping.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldepot.errors import InvalidSafetensorsError

#: Header length cap. Real headers of 25 GB FLUX checkpoints are a few MB; 100 MB is the
#: limit the safetensors library itself enforces.
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_SIZES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75, "C64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_len: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    file_size: int = 0

    @property
    def data_offset(self) -> int:
        """Byte offset of the tensor data (8 + header length); AutoV3 hashes from here."""
        return 8 + self.header_len

    def shape(self, key: str) -> tuple[int, ...] | None:
        info = self.tensors.get(key)
        return info.shape if info else None


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Read and validate the header of ``path``.

    Raises:
        InvalidSafetensorsError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise InvalidSafetensorsError(f"{path}: truncated safetensors file ({size} bytes, no header)", path)
            (n,) = struct.unpack("<Q", raw_len)
            if n > MAX_HEADER_BYTES:
                raise InvalidSafetensorsError(
                    f"{path}: safetensors header length {n} exceeds the {MAX_HEADER_BYTES} byte limit", path
                )
            if 8 + n > size:
                raise InvalidSafetensorsError(
                    f"{path}: safetensors header length {n} is larger than the file ({size} bytes); truncated?",
                    path,
                )
            raw = f.read(n)
    except OSError as exc:
        if isinstance(exc, InvalidSafetensorsError):
            raise
        raise InvalidSafetensorsError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSafetensorsError(f"{path}: safetensors header is not UTF-8 JSON: {exc}", path) from exc
    if not isinstance(doc, dict):
        raise InvalidSafetensorsError(f"{path}: safetensors header must be a JSON object", path)
    return _validate(path, n, size, doc)


def _validate(path: Path, n: int, size: int, doc: dict[str, Any]) -> SafetensorsHeader:
    metadata_raw = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict):
        raise InvalidSafetensorsError(f"{path}: __metadata__ must be an object", path)
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata_raw.items()}
    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    new_info = object.__new__  # the loop below runs once per tensor (thousands): skip dataclass __init__
    for name, entry in doc.items():
        if type(entry) is not dict:
            raise InvalidSafetensorsError(f"{path}: tensor {name!r} entry is not an object", path)
        dtype = entry.get("dtype")
        itemsize = DTYPE_SIZES.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise InvalidSafetensorsError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}", path)
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        numel = 1
        if type(shape) is not list:
            raise InvalidSafetensorsError(f"{path}: tensor {name!r} has an invalid shape {shape!r}", path)
        for d in shape:
            if type(d) is not int or d < 0:
                raise InvalidSafetensorsError(f"{path}: tensor {name!r} has an invalid shape {shape!r}", path)
            numel *= d
        if (
            type(offsets) is not list
            or len(offsets) != 2
            or type(offsets[0]) is not int
            or type(offsets[1]) is not int
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise InvalidSafetensorsError(
                f"{path}: tensor {name!r} has data_offsets {offsets!r} outside the data section ({data_size} bytes)",
                path,
            )
        begin, end = offsets
        expected = math.ceil(numel * itemsize)
        if end - begin != expected:
            raise InvalidSafetensorsError(
                f"{path}: tensor {name!r} spans {end - begin} bytes but {dtype}{shape} needs {expected}", path
            )
        info = new_info(TensorInfo)
        object.__setattr__(info, "__dict__", {"dtype": dtype, "shape": tuple(shape), "begin": begin, "end": end})
        tensors[name] = info
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_b1, e1, k1), (b2, _e2, k2) in itertools.pairwise(spans):
        if b2 < e1:
            raise InvalidSafetensorsError(f"{path}: tensors {k1!r} and {k2!r} overlap", path)
    return SafetensorsHeader(path=path, header_len=n, tensors=tensors, metadata=metadata, file_size=size)


__all__ = ["MAX_HEADER_BYTES", "SafetensorsHeader", "TensorInfo", "read_safetensors_header"]
