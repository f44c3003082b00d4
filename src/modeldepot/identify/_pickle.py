"""Read the key table of a PyTorch pickle checkpoint without executing it, and without torch.

Two layouts exist:

* the zip format (torch >= 1.6): ``<archive>/data.pkl`` holds the object tree; tensors are
  ``torch._utils._rebuild_tensor_v2(<persistent storage id>, offset, size, stride, ...)`` calls and
  their bytes live in ``<archive>/data/<key>`` entries (never read here);
* the legacy format: a magic-number pickle, a protocol-version pickle, a sys-info pickle, then the
  object pickle, then raw storage bytes (or just one plain pickle).

The restricted unpickler resolves globals only from an allow-list, and every allowed global is
replaced by an inert stub: nothing from torch, numpy or the file is ever imported or called. Any
other global (``os.system``, ``builtins.eval``...) raises :class:`UnsafePickleError` naming the
file and the global. :func:`scan_pickle` lists the globals statically (``pickletools``) so a
dangerous import is reported even when it sits on a branch the key walk would not reach.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, cast

from modeldepot.errors import IdentificationError, UnsafePickleError
from modeldepot.identify._json import short

#: Cap on a data.pkl we are willing to parse: real ones are a few MB even for 20 GB checkpoints.
MAX_PICKLE_BYTES = 256 * 1024 * 1024
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Keys (visited nodes) of one checkpoint's object tree; real ones have a few thousand.
MAX_PICKLE_KEYS = 250_000
#: Tuples in real checkpoints nest 2-3 deep (rebuild arguments holding a size tuple).
MAX_TUPLE_DEPTH = 64
#: Integer leaves kept as values (``global_step``...); larger ones are not settings, and could not
#: even be printed (Python refuses int -> str past 4300 digits).
_MAX_INT = 2**63
#: Text lines (protocol 0-1 opcodes, GLOBAL module names) are short.
_MAX_LINE = 64 * 1024

_STORAGE_TYPES = frozenset(
    f"{kind}Storage"
    for kind in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32", "Untyped",
    )
)  # fmt: skip
_DTYPES = frozenset(
    {
        "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16",
        "int32", "int64", "uint8", "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
    }
)  # fmt: skip


class _Stub:
    """An inert stand-in for an allowed class: accepts any arguments and state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Storage(_Stub):
    pass


@dataclass
class _TensorStub:
    shape: tuple[int, ...]


def _shape_of(size: Any) -> tuple[int, ...]:
    if isinstance(size, tuple | list) and all(isinstance(d, int) for d in size):
        return tuple(size)
    return ()


def _rebuild_tensor(storage: Any, offset: Any = 0, size: Any = (), *rest: Any) -> _TensorStub:
    return _TensorStub(_shape_of(size))


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _rebuild_meta(dtype: Any, size: Any = (), *rest: Any) -> _TensorStub:
    return _TensorStub(_shape_of(size))


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
    # ``func`` came out of find_class, so it is one of our stubs; still check before calling it.
    if func not in _CALLABLE_STUBS or not isinstance(args, tuple):
        return None
    return func(*args)


def _ordered_dict(*args: Any) -> dict[Any, Any]:
    return dict(*args[:1]) if args and isinstance(args[0], dict | list) else {}


def _size(*args: Any) -> tuple[int, ...]:
    return _shape_of(args[0]) if args else ()


def _inert(*args: Any, **kwargs: Any) -> None:
    return None


_CALLABLE_STUBS: frozenset[Any] = frozenset({_rebuild_tensor, _rebuild_parameter, _rebuild_meta})

#: module -> name -> stub. Everything else is refused.
_ALLOWED: dict[str, dict[str, Any]] = {
    "torch._utils": {
        "_rebuild_tensor": _rebuild_tensor,
        "_rebuild_tensor_v2": _rebuild_tensor,
        "_rebuild_tensor_v3": _rebuild_tensor,
        "_rebuild_parameter": _rebuild_parameter,
        "_rebuild_parameter_with_state": _rebuild_parameter,
        "_rebuild_meta_tensor_no_storage": _rebuild_meta,
    },
    "torch._tensor": {"_rebuild_from_type_v2": _rebuild_from_type},
    "torch.nn.parameter": {"Parameter": _Stub},
    "torch": {**{n: _Storage for n in _STORAGE_TYPES}, **{n: n for n in _DTYPES}, "Size": _size, "device": _inert},
    "torch.storage": {"UntypedStorage": _Storage, "TypedStorage": _Storage},
    "collections": {"OrderedDict": _ordered_dict},
    "builtins": {"set": set, "frozenset": frozenset, "slice": _inert},
    "__builtin__": {"set": set, "frozenset": frozenset},
    # numpy scalars (``global_step`` in some SD checkpoints) and the bytes helper protocol 2 uses
    # for them; both replaced by stubs, numpy itself is never imported.
    "numpy.core.multiarray": {"scalar": _inert, "_reconstruct": _Stub},
    "numpy._core.multiarray": {"scalar": _inert, "_reconstruct": _Stub},
    "numpy": {"dtype": _Stub, "ndarray": _Stub},
    "_codecs": {"encode": _inert},
    # Lightning's callback object saved inside original SD-1.x .ckpt files (ComfyUI stubs it too).
    "pytorch_lightning.callbacks.model_checkpoint": {"ModelCheckpoint": _Stub},
}

_DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "builtins",
        "__builtin__",
        "sys",
        "socket",
        "shutil",
        "runpy",
        "pty",
        "importlib",
    }
)


def _is_allowed(module: str, name: str) -> bool:
    return name in _ALLOWED.get(module, {})


def _refusal(path: Path, module: str, name: str) -> UnsafePickleError:
    danger = " (it can execute code)" if module.split(".")[0] in _DANGEROUS_MODULES else ""
    return UnsafePickleError(
        f"{path}: refusing pickle: it imports {module}.{name}{danger}, which is not in the allow-list of "
        "tensor-rebuilding globals; convert the file to safetensors from a trusted source",
        path,
    )


class _BoundedReader:
    """A file seen up to a byte budget: a pickle asking for more than is left is refused before any
    buffer is allocated for it (``BINBYTES8 2**40`` would otherwise be a ``MemoryError``)."""

    def __init__(self, f: IO[bytes], path: Path, left: int) -> None:
        self._f = f
        self._path = path
        self._left = left

    def _refuse(self, n: int) -> IdentificationError:
        return IdentificationError(
            f"{self._path}: not a readable PyTorch pickle: it declares a {n}-byte object but only "
            f"{self._left} bytes are left in the file (truncated, or not a pickle)",
            self._path,
        )

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        if n > self._left:
            raise self._refuse(n)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        cap = min(self._left, _MAX_LINE)
        line = self._f.readline(cap if limit is None or limit < 0 else min(limit, cap))
        self._left -= len(line)
        if not line.endswith(b"\n") and len(line) == _MAX_LINE:
            raise IdentificationError(
                f"{self._path}: not a readable PyTorch pickle: a text line longer than {_MAX_LINE} bytes", self._path
            )
        return line

    def tell(self) -> int:
        return self._f.tell()


def _bounded(f: IO[bytes], path: Path) -> _BoundedReader:
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    return _BoundedReader(f, path, end - start)


_Dispatch = dict[int, Callable[[Any], None]]


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (its C twin allocates what a file declares and hashes tuples of
    any depth recursively: a 3 MB pickle of nested tuples crashes the process), with globals
    resolved only from the allow-list and tuple nesting bounded."""

    dispatch: ClassVar[_Dispatch] = dict(pickle._Unpickler.dispatch)
    # Set by pickle._Unpickler.load(); declared for the type checker.
    stack: list[Any]
    read: Callable[[int], bytes]
    append: Callable[[Any], None]

    def __init__(self, fp: IO[bytes] | _BoundedReader, path: Path) -> None:
        reader = fp if isinstance(fp, _BoundedReader) else _bounded(fp, path)
        super().__init__(reader)
        self._path = path
        self._tuple_depth: dict[int, int] = {}
        self._deep_tuples: list[tuple[Any, ...]] = []  # keeps ids in _tuple_depth from being reused

    def find_class(self, module: str, name: str) -> Any:
        stub = _ALLOWED.get(module, {}).get(name)
        if stub is None:
            raise _refusal(self._path, module, name)
        return stub

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata]): a reference into data/.
        return _Storage(pid)

    def _check_tuple(self) -> None:
        t = self.stack[-1]
        depth = 1 + max((self._tuple_depth.get(id(x), 1) for x in t if type(x) is tuple), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise IdentificationError(
                f"{self._path}: not a readable PyTorch pickle: tuples nested more than {MAX_TUPLE_DEPTH} deep",
                self._path,
            )
        if depth > 1:
            self._tuple_depth[id(t)] = depth
            self._deep_tuples.append(t)

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(n)))  # read() refuses n past the end before allocating


def _checked(load: Callable[[Any], None]) -> Callable[[_RestrictedUnpickler], None]:
    def run(self: _RestrictedUnpickler) -> None:
        load(self)
        self._check_tuple()

    return run


for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
    _RestrictedUnpickler.dispatch[_op[0]] = _checked(pickle._Unpickler.dispatch[_op[0]])
_RestrictedUnpickler.dispatch[pickle.BYTEARRAY8[0]] = _RestrictedUnpickler._load_bytearray8


@dataclass
class PickleTable:
    """Flattened keys of a pickle checkpoint: tensor shapes, plus small scalar leaves."""

    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    values: dict[str, int | float | str | bool] = field(default_factory=dict)
    layout: str = "zip"
    path: Path = field(default_factory=Path, repr=False)


def _flatten(obj: Any, key: str, table: PickleTable, budget: list[int], depth: int = 0) -> None:
    if depth > 16:
        return
    budget[0] -= 1
    if budget[0] < 0:
        raise IdentificationError(
            f"{table.path}: pickle holds more than {MAX_PICKLE_KEYS} keys (or shares one object under "
            "many keys): not a model checkpoint",
            table.path,
        )
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = k if isinstance(k, str) else short(k)
            _flatten(v, f"{key}.{name}" if key else name, table, budget, depth + 1)
    elif isinstance(obj, _TensorStub):
        table.shapes[key] = obj.shape
    elif isinstance(obj, bool | float | str) or (isinstance(obj, int) and -_MAX_INT < obj < _MAX_INT):
        table.shapes[key] = None
        table.values[key] = obj
    elif isinstance(obj, list | tuple) and obj and all(isinstance(x, dict) for x in obj[:4]):
        for i, item in enumerate(obj):
            _flatten(item, f"{key}.{i}" if key else str(i), table, budget, depth + 1)
    elif key:
        table.shapes[key] = None


def _data_pkl_name(zf: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if not names:
        raise IdentificationError(f"{path}: zip file without data.pkl: not a PyTorch checkpoint", path)
    info = zf.getinfo(names[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise IdentificationError(f"{path}: data.pkl is {info.file_size} bytes, over the parse limit", path)
    return names[0]


def _unpickle(fp: IO[bytes] | _BoundedReader, path: Path) -> Any:
    try:
        return _RestrictedUnpickler(fp, path).load()
    except IdentificationError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        struct.error,
    ) as exc:
        why = "it ends before its STOP opcode (truncated?)" if isinstance(exc, EOFError) else short(str(exc))
        raise IdentificationError(f"{path}: not a readable PyTorch pickle: {why}", path) from exc
    except RecursionError as exc:
        raise IdentificationError(f"{path}: pickle nests too deeply", path) from exc


def _open_zip(path: Path) -> zipfile.ZipFile | None:
    try:
        with path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return None
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise IdentificationError(f"{path}: damaged zip (truncated PyTorch checkpoint?): {exc}", path) from exc


def _load_object(path: Path) -> tuple[Any, str]:
    try:
        zf = _open_zip(path)
        if zf is not None:
            name = _data_pkl_name(zf, path)
            with zf, zf.open(name) as fp:
                # In memory (its size is capped above): the unpickler reads one opcode at a time.
                data = fp.read(MAX_PICKLE_BYTES)
            return _unpickle(io.BytesIO(data), path), "zip"
        with path.open("rb") as f:
            first = _unpickle(f, path)
            if isinstance(first, int) and not isinstance(first, bool) and first == _LEGACY_MAGIC:
                _unpickle(f, path)  # protocol version
                _unpickle(f, path)  # sys info
                return _unpickle(f, path), "legacy"
            return first, "pickle"
    except OSError as exc:
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc


def read_pickle_table(path: str | Path) -> PickleTable:
    """Keys, shapes and scalar leaves of a pickle checkpoint (see the module docstring)."""
    path = Path(path)
    obj, layout = _load_object(path)
    table = PickleTable(layout=layout, path=path)
    if isinstance(obj, _TensorStub):
        table.shapes[""] = obj.shape
    else:
        _flatten(obj, "", table, [MAX_PICKLE_KEYS])
    return table


def read_pickle_keys(path: str | Path) -> dict[str, tuple[int, ...] | None]:
    """Map every (flattened, ``.``-joined) key of a pickle checkpoint to its tensor shape.

    Non-tensor leaves map to ``None``. Never executes pickled code and never imports torch.

    Raises:
        UnsafePickleError: the pickle imports a global outside the allow-list.
        IdentificationError: the file is not a readable pickle / PyTorch archive.
    """
    return read_pickle_table(path).shapes


def _globals_in(stream: IO[bytes] | _BoundedReader, path: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # last pushed values, enough to resolve STACK_GLOBAL
    try:
        for op, arg, _pos in pickletools.genops(cast(IO[bytes], stream)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                recent.append(None)
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                    raise UnsafePickleError(f"{path}: refusing pickle: unresolvable STACK_GLOBAL import", path)
                found.append((recent[-2], recent[-1]))
                recent.append(None)
            elif "UNICODE" in name or "STRING" in name or "BYTES" in name:
                recent.append(arg if isinstance(arg, str) else None)
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg if isinstance(arg, int) else -1] = recent[-1] if recent else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(arg if isinstance(arg, int) else -1))
            elif name == "STOP":
                break
            else:
                recent.append(None)
            del recent[:-4]
    except (ValueError, OverflowError) as exc:
        raise IdentificationError(f"{path}: not a readable pickle: {short(str(exc))}", path) from exc
    return found


def scan_pickle(path: str | Path) -> list[str]:
    """Statically list the globals every pickle in ``path`` imports (``module.name``), sorted.

    Raises:
        UnsafePickleError: naming the file and the first global outside the allow-list.
        IdentificationError: the file is not a pickle / PyTorch archive.
    """
    path = Path(path)
    found: list[tuple[str, str]] = []
    try:
        zf = _open_zip(path)
        if zf is not None:
            with zf:
                for name in zf.namelist():
                    if not name.endswith(".pkl"):
                        continue
                    if zf.getinfo(name).file_size > MAX_PICKLE_BYTES:
                        raise IdentificationError(f"{path}: {name} is too large to scan", path)
                    with zf.open(name) as fp:
                        found += _globals_in(io.BytesIO(fp.read()), path)
        else:
            with path.open("rb") as f:
                magic, globs = _scan_one(f, path)
                found += globs
                # Legacy torch files: magic, protocol version, sys info, then the object pickle.
                for _ in range(3 if magic else 0):
                    found += _scan_one(f, path)[1]
    except OSError as exc:
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc
    for module, name in found:
        if not _is_allowed(module, name):
            raise _refusal(path, module, name)
    return sorted({f"{m}.{n}" for m, n in found})


def _scan_one(f: IO[bytes], path: Path) -> tuple[bool, list[tuple[str, str]]]:
    start = f.tell()
    globs = _globals_in(_bounded(f, path), path)
    end = f.tell()
    f.seek(start)
    head = f.read(min(end - start, 64))
    f.seek(end)
    return _LEGACY_MAGIC.to_bytes(10, "little") in head and not globs, globs


__all__ = ["MAX_PICKLE_BYTES", "PickleTable", "read_pickle_keys", "read_pickle_table", "scan_pickle"]
