"""Validating reader for safetensors headers: reads the 8-byte length and the JSON, never tensor data.

Format: ``<u64 little-endian N><N bytes of UTF-8 JSON><tensor data>``. The JSON maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data section) and may
hold ``"__metadata__"``: a str -> str mapping.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import operator
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from modeldepot.errors import InvalidSafetensorsError
from modeldepot.identify._json import MAX_JSON_DEPTH, depth_of, parse_json, short

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
#: Bits per element: sizes are checked in integers, so no shape can overflow a float.
DTYPE_BITS: dict[str, int] = {k: int(v * 8) for k, v in DTYPE_SIZES.items()}
MIN_DTYPE_BITS = min(DTYPE_BITS.values())
#: Entries per header. The largest real checkpoints (FLUX or SDXL with text encoders, big
#: LyCORIS files) hold a few thousand; this keeps a 100 MB header of tiny entries to ~100 MB of RAM.
MAX_TENSORS = 100_000
#: Largest single dimension (safetensors stores shapes as usize).
MAX_DIM = 2**63 - 1
#: JSON values (counted as commas) per header: ~6 per tensor plus the metadata's.
MAX_JSON_VALUES = 20 * MAX_TENSORS
#: Dimensions per tensor (real ones have at most 5 or 6).
MAX_NDIM = 64


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
    """A validated header. ``shapes`` and the parallel ``dtypes`` / ``begins`` / ``ends`` columns keep
    the header's tensor order; ``tensors`` builds one :class:`TensorInfo` per tensor on first use
    (identification reads only ``shapes``, so it never pays for thousands of objects)."""

    path: Path
    header_len: int
    shapes: dict[str, tuple[int, ...]]
    dtypes: list[str] = field(default_factory=list, repr=False)
    begins: list[int] = field(default_factory=list, repr=False)
    ends: list[int] = field(default_factory=list, repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    file_size: int = 0

    @cached_property
    def tensors(self) -> dict[str, TensorInfo]:
        """Name -> :class:`TensorInfo`, in header order."""
        return dict(
            zip(self.shapes, map(_tensor_info, self.dtypes, self.shapes.values(), self.begins, self.ends), strict=True)
        )

    @property
    def data_offset(self) -> int:
        """Byte offset of the tensor data (8 + header length); AutoV3 hashes from here."""
        return 8 + self.header_len

    def shape(self, key: str) -> tuple[int, ...] | None:
        return self.shapes.get(key)


def _tensor_info(dtype: str, shape: tuple[int, ...], begin: int, end: int) -> TensorInfo:
    """A :class:`TensorInfo` without the frozen dataclass ``__init__`` (4 ``object.__setattr__``
    calls): this runs once per tensor, thousands of times per header."""
    info = object.__new__(TensorInfo)
    object.__setattr__(info, "__dict__", {"dtype": dtype, "shape": shape, "begin": begin, "end": end})
    return info


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a header is parsed and checked.

    Parsing builds a dict and two lists per tensor, none in a cycle, all freed by reference
    counting. Left running, the collector walks them every 700 allocations, and those alive across
    two passes are promoted, bringing the next full-heap collection closer (in a process holding
    a large heap, that one costs far more than the parse). Paused, the work is skipped. The switch
    is process-wide: another thread only gets its collections a few milliseconds late, and a
    collector someone else paused is left paused.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    _check_counts(path, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSafetensorsError(f"{path}: safetensors header is not UTF-8 JSON: {exc}", path) from exc
    del raw  # a 100 MB header: hold the bytes or the text while parsing, not both
    with _collector_paused():
        # Entries are validated field by field below, so only the parser's own nesting bound is needed.
        doc = parse_json(
            text,
            path,
            "safetensors header",
            InvalidSafetensorsError,
            max_depth=None,
            syntax="safetensors header is not UTF-8 JSON",
        )
        del text
        if not isinstance(doc, dict):
            raise InvalidSafetensorsError(f"{path}: safetensors header must be a JSON object", path)
        header = _validate(path, n, size, doc)
        del doc  # freed while paused: a collection right after the pause would walk all of it
    return header


def _check_counts(path: Path, raw: bytes) -> None:
    """Refuse headers with more entries or values than any model has, before parsing them.

    Parsing costs memory per JSON value, not per byte: a 100 MB header of tiny entries would
    build ~700,000 dicts. Every object starts with a literal ``{`` and every further member or
    list item with a literal ``,``, so counting those bytes (braces or commas inside strings only
    add to the count) bounds the work from above at the speed of ``bytes.count``.
    """
    objects = raw.count(b"{")
    if objects > MAX_TENSORS + 2:  # the header itself and __metadata__
        raise InvalidSafetensorsError(
            f"{path}: safetensors header holds {objects} JSON objects, more than the {MAX_TENSORS} tensors "
            "this reader accepts (real checkpoints hold a few thousand)",
            path,
        )
    if len(raw) <= MAX_JSON_VALUES:  # cannot hold more commas than bytes: skip the second pass
        return
    values = raw.count(b",")
    if values > MAX_JSON_VALUES:
        raise InvalidSafetensorsError(
            f"{path}: safetensors header holds {values} JSON values, more than the {MAX_JSON_VALUES} "
            "this reader accepts (real checkpoints hold a few tens of thousands)",
            path,
        )


def _metadata(path: Path, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise InvalidSafetensorsError(f"{path}: __metadata__ must be an object", path)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if isinstance(v, str):
            out[k] = v
            continue
        # The format says str -> str; some writers store JSON values: keep them as JSON text.
        if depth_of(v) > MAX_JSON_DEPTH:
            raise InvalidSafetensorsError(
                f"{path}: __metadata__ value {short(k)} nests more than {MAX_JSON_DEPTH} levels deep", path
            )
        out[k] = json.dumps(v)
    return out


def _numel(path: Path, name: str, shape: Any, limit: int) -> tuple[tuple[int, ...], int]:
    """Element count of ``shape``; an error once it is not a list of ints or exceeds ``limit``."""
    if type(shape) is not list or len(shape) > MAX_NDIM:
        raise InvalidSafetensorsError(f"{path}: tensor {short(name)} has an invalid shape {short(shape)}", path)
    for d in shape:
        if type(d) is not int or not 0 <= d <= MAX_DIM:
            raise InvalidSafetensorsError(f"{path}: tensor {short(name)} has an invalid shape {short(shape)}", path)
    if 0 in shape:
        return tuple(shape), 0
    numel = 1
    for d in shape:
        numel *= d
        if numel > limit:
            raise InvalidSafetensorsError(
                f"{path}: tensor {short(name)} has shape {short(shape)}, more elements than the file can hold", path
            )
    return tuple(shape), numel


#: Whole-byte dtypes: the only ones the vectorised check handles (F4 / F6 take the per-tensor path).
_DTYPE_BYTES: dict[str, int] = {k: b // 8 for k, b in DTYPE_BITS.items() if b % 8 == 0}
_ENTRY_FIELDS = operator.itemgetter("dtype", "shape", "data_offsets")
#: Parallel per-tensor columns: dtypes, shapes, begins, ends.
_Columns = tuple[list[str], list[tuple[int, ...]], list[int], list[int]]


def _validate(path: Path, n: int, size: int, doc: dict[str, Any]) -> SafetensorsHeader:
    metadata = _metadata(path, doc.pop("__metadata__", None) or {})
    data_size = size - 8 - n
    # The fast check accepts only what the per-tensor one accepts; anything it does not vouch for
    # (anything malformed, and the legal fractional dtypes F4 / F6) goes through the per-tensor
    # check, which raises the precise error or accepts.
    columns = _fast_columns(doc, data_size) or _checked_columns(path, doc, data_size)
    dtypes, shapes, begins, ends = columns
    return SafetensorsHeader(
        path=path,
        header_len=n,
        shapes=dict(zip(doc, shapes, strict=True)),
        dtypes=dtypes,
        begins=begins,
        ends=ends,
        metadata=metadata,
        file_size=size,
    )


def _fast_columns(doc: dict[str, Any], data_size: int) -> _Columns | None:
    """The columns of a well-formed header, checked a column at a time; None when in any doubt.

    Each test runs over a whole column in C (``map``, ``set``, ``min``, ``sorted``, list ``==``), so
    a header of thousands of tensors costs a few dozen C loops instead of thousands of Python
    iterations (issue 18: the per-tensor loop was ~70 % of ``identify``). It must never accept
    what :func:`_checked_columns` refuses; it may refuse what that accepts.
    """
    if not doc:
        return [], [], [], []
    try:
        # Non-object entries and missing fields raise here (JSON lists, strings, numbers, null).
        fields = list(itertools.chain.from_iterable(map(_ENTRY_FIELDS, doc.values())))
        dtypes, shapes, offsets = fields[0::3], fields[1::3], fields[2::3]
        # Only strings equal the dtype names; an unhashable dtype (list, object) raises TypeError.
        kinds = set(dtypes)
        if not _DTYPE_BYTES.keys() >= kinds:
            return None
        # len() raises for numbers and null; 2-long strings and objects yield strings, refused below.
        if set(map(len, offsets)) != {2} or set(map(type, shapes)) != {list} or max(map(len, shapes)) > MAX_NDIM:
            return None
        flat = list(itertools.chain.from_iterable(offsets))
        dims = list(itertools.chain.from_iterable(shapes))
        if set(map(type, flat + dims)) != {int}:  # exactly int: JSON true/false are bools
            return None
        if dims and (min(dims) < 0 or max(dims) > MAX_DIM):
            return None
        begins, ends = flat[0::2], flat[1::2]
        # Each span holds exactly its elements: with no negative dims that also gives begin <= end,
        # and products of at most MAX_NDIM dims below 2**63 stay cheap to compute.
        numels = map(math.prod, shapes)
        if len(kinds) == 1:
            needed = list(map(_DTYPE_BYTES[next(iter(kinds))].__mul__, numels))
        else:
            needed = list(map(operator.mul, numels, map(_DTYPE_BYTES.__getitem__, dtypes)))
        if needed != list(map(operator.sub, ends, begins)):
            return None
    except (KeyError, TypeError):
        return None
    starts, stops = sorted(begins), sorted(ends)
    if starts[0] < 0 or stops[-1] > data_size:
        return None
    # No overlaps: with begins and ends sorted apart, each begin at or after the previous end
    # means at most one span is open at any offset (an empty span opens and closes at once).
    del starts[0], stops[-1]
    if starts != stops and not all(map(operator.ge, starts, stops)):  # equal: back to back, no gaps
        return None
    return dtypes, list(map(tuple, shapes)), begins, ends


def _checked_columns(path: Path, doc: dict[str, Any], data_size: int) -> _Columns:
    """The columns of ``doc``, checked tensor by tensor: raises the precise error for the first bad one."""
    max_numel = data_size * 8 // MIN_DTYPE_BITS
    dtypes: list[str] = []
    shapes: list[tuple[int, ...]] = []
    begins: list[int] = []
    ends: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for name, entry in doc.items():
        if type(entry) is not dict:
            raise InvalidSafetensorsError(f"{path}: tensor {short(name)} entry is not an object", path)
        dtype = entry.get("dtype")
        if type(dtype) is not str or dtype not in DTYPE_BITS:
            raise InvalidSafetensorsError(f"{path}: tensor {short(name)} has unknown dtype {short(dtype)}", path)
        bits = DTYPE_BITS[dtype]
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if (
            type(offsets) is not list
            or len(offsets) != 2
            or type(offsets[0]) is not int
            or type(offsets[1]) is not int
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise InvalidSafetensorsError(
                f"{path}: tensor {short(name)} has data_offsets {short(offsets)} outside the data section "
                f"({data_size} bytes)",
                path,
            )
        begin, end = offsets
        dims, numel = _numel(path, name, shape, max_numel)
        expected = (numel * bits + 7) // 8
        if end - begin != expected:
            raise InvalidSafetensorsError(
                f"{path}: tensor {short(name)} spans {end - begin} bytes but {dtype}{short(shape)} needs {expected}",
                path,
            )
        dtypes.append(dtype)
        shapes.append(dims)
        begins.append(begin)
        ends.append(end)
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_b1, e1, k1), (b2, _e2, k2) in itertools.pairwise(spans):
        if b2 < e1:
            raise InvalidSafetensorsError(f"{path}: tensors {short(k1)} and {short(k2)} overlap", path)
    return dtypes, shapes, begins, ends


__all__ = ["MAX_HEADER_BYTES", "MAX_TENSORS", "SafetensorsHeader", "TensorInfo", "read_safetensors_header"]
