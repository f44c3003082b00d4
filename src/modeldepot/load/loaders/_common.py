"""Shared helpers of the loaders: reading weight files safely and fast, calling ``from_pretrained``.

Safetensors files are read with :func:`load_safetensors`: one large sequential ``readinto`` per
contiguous run of wanted tensors into a single uint8 buffer, then zero-copy typed views. On a warm
page cache that is as fast as reading the file with big buffers (see benchmarks/bench_load.py),
and it reads only the byte ranges of the tensors asked for (one component of a checkpoint). Asked
for another dtype (``dtype=``, the resolved precision), floating tensors are cast straight from a
mapping of the file instead (:mod:`._mapped`): read-then-cast touched the bytes twice and allocated
them twice, 0.55x the speed of ``safetensors`` ``load_file`` + ``.to()`` on a 1 GiB float16 file.

A split single-file checkpoint (a folder of component files plus ``split.json``, see
:mod:`modeldepot.storage._split`) reads like the file it came from: :func:`load_safetensors` opens
only the component files holding the tensors asked for.

Pickle files are never unpickled without :func:`modeldepot.identify.scan_pickle` first, and then
only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modeldepot.errors import IdentificationError, ModelNotFoundException
from modeldepot.load._errors import ModelLoadError
from modeldepot.load.loaders._mapped import cast_mapped
from modeldepot.storage._split import is_split_dir, part_file_name, read_split_manifest
from modeldepot.taxonomy import PICKLE_SUFFIXES, ModelRepoVariant, has_suffix

_READ_CHUNK = 64 * 1024 * 1024
#: Tensors closer than this are read in one run rather than two (saves a seek, wastes little).
_MERGE_GAP = 1024 * 1024
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64",
}  # fmt: skip


def _scan(path: Path) -> None:
    try:
        from modeldepot.identify import scan_pickle
    except ImportError:  # the identify package may not re-export it yet
        from modeldepot.identify._pickle import scan_pickle
    scan_pickle(path)


def is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors" or is_split_dir(path):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100 * 1024 * 1024


def load_safetensors(
    path: Path,
    keep: Callable[[str], bool] | None = None,
    rename: Callable[[str], str] | None = None,
    *,
    dtype: Any = None,
    keep_dtype: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Read the tensors of ``path`` whose names pass ``keep`` (all by default).

    ``path`` may be a split checkpoint folder: then only its component files that hold a wanted
    tensor are read (the VAE of a split SDXL checkpoint reads ``vae.safetensors`` alone).

    With ``dtype`` (a torch dtype), floating tensors stored in another dtype come back cast to it,
    bit for bit as ``tensor.to(dtype)``, cast straight from a mapping of the file (see
    :mod:`._mapped`: one pass over the bytes instead of a read and a cast); those whose file name
    passes ``keep_dtype`` (a LoRA's ``alpha``) and integer tensors stay as stored.
    """
    if is_split_dir(path):
        return _load_split(path, keep, rename, dtype, keep_dtype)
    import torch

    from modeldepot.identify.safetensors import read_safetensors_header

    header = read_safetensors_header(path)
    wanted = sorted(
        (
            (n, i, getattr(torch, _SAFETENSORS_DTYPES[i.dtype]))
            for n, i in header.tensors.items()
            if keep is None or keep(n)
        ),
        key=lambda item: item[1].begin,
    )
    casts = [
        (n, i, src)
        for n, i, src in wanted
        if dtype is not None and src.is_floating_point and src != dtype and not (keep_dtype and keep_dtype(n))
    ]
    if not casts:
        return _read_runs(path, header.data_offset, wanted, rename)
    out = cast_mapped(path, header.data_offset, casts, dtype, rename)
    if len(casts) == len(wanted):
        return out
    cast_names = {n for n, _, _ in casts}
    out.update(_read_runs(path, header.data_offset, [w for w in wanted if w[0] not in cast_names], rename))
    return {k: out[k] for k in (rename(n) if rename else n for n, _, _ in wanted)}  # the file's order


def _read_runs(
    path: Path, data_offset: int, wanted: list[tuple[str, Any, Any]], rename: Callable[[str], str] | None
) -> dict[str, Any]:
    """``wanted`` (``(name, TensorInfo, torch dtype)`` in file order) read as stored, one sequential
    read per contiguous run into fresh memory, then zero-copy typed views."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    if not wanted:
        return out
    runs: list[list[tuple[str, Any, Any]]] = [[wanted[0]]]
    for item in wanted[1:]:
        if item[1].begin - runs[-1][-1][1].end <= _MERGE_GAP:
            runs[-1].append(item)
        else:
            runs.append([item])
    with open(path, "rb", buffering=0) as f:
        for run in runs:
            lo, hi = run[0][1].begin, max(i.end for _, i, _ in run)
            # numpy's allocator asks for transparent huge pages on big arrays: 512x fewer page
            # faults while filling the buffer than torch.empty (4x faster for GB-sized reads).
            arr = np.empty(hi - lo, dtype=np.uint8)
            buf = torch.from_numpy(arr)
            view = arr.data.cast("B")
            f.seek(data_offset + lo)
            pos = 0
            while pos < len(view):
                n = f.readinto(view[pos : pos + _READ_CHUNK])
                if not n:
                    raise ModelLoadError(f"{path}: file is shorter than its safetensors header says", path=str(path))
                pos += n
            for name, info, dtype in run:
                raw = buf[info.begin - lo : info.end - lo]
                if (info.begin - lo) % dtype.itemsize:
                    raw = raw.clone()  # unaligned: a typed view needs an aligned offset
                out[rename(name) if rename else name] = raw.view(dtype).reshape(info.shape)
    return out


def _load_split(
    path: Path,
    keep: Callable[[str], bool] | None,
    rename: Callable[[str], str] | None,
    dtype: Any = None,
    keep_dtype: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    manifest = read_split_manifest(path)
    needed = {t.component for t in manifest.tensors if keep is None or keep(t.name)}
    out: dict[str, Any] = {}
    for component in manifest.components:
        if component not in needed:
            continue
        part = path / part_file_name(component)
        if not part.is_file():
            raise ModelNotFoundException(f"{path}: part {part.name} of this split checkpoint is missing", part)
        out.update(load_safetensors(part, keep, rename, dtype=dtype, keep_dtype=keep_dtype))
    return out


def torch_load_scanned(path: Path) -> Any:
    """Scan, then ``torch.load(weights_only=True)`` on the CPU."""
    import torch

    _scan(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses anything but tensors and plain containers: report, never retry unsafely.
        raise IdentificationError(f"{path}: cannot be loaded as a weights-only pickle: {exc}", path) from exc


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts of tensors -> flat ``a.b.c`` names; non-tensors are dropped."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_tensors(v, f"{prefix}{k}."))
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    return out


def load_weights(
    path: Path,
    keep: Callable[[str], bool] | None = None,
    *,
    dtype: Any = None,
    keep_dtype: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """A flat state dict from a safetensors or (scanned) pickle file; ``dtype`` and ``keep_dtype``
    as for :func:`load_safetensors` (a pickle's tensors are cast after loading)."""
    if is_safetensors(path):
        return load_safetensors(path, keep, dtype=dtype, keep_dtype=keep_dtype)
    obj = torch_load_scanned(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    flat = flatten_tensors(obj)
    sd = {k: v for k, v in flat.items() if keep is None or keep(k)}
    return sd if dtype is None else cast_all(sd, dtype, keep_dtype)


def pickle_to_safetensors(src: Path, dest: Path) -> None:
    """Convert a scanned pickle checkpoint into ``dest`` (safetensors); shared tensors are cloned."""
    from safetensors.torch import save_file

    sd = load_weights(src)
    seen: set[tuple[int, int]] = set()
    clean: dict[str, Any] = {}
    for k, v in sd.items():
        ident = (v.untyped_storage().data_ptr(), v.storage_offset())
        v = v.contiguous()
        if ident in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()
        seen.add(ident)
        clean[k] = v
    save_file(clean, str(dest), metadata={"converted_from": src.name})


class PickleConversionMixin:
    """Convert pickle weight files to safetensors once, through the conversion cache."""

    def _needs_conversion(self, config: Any, path: Path) -> bool:
        return path.is_file() and has_suffix(path.name, PICKLE_SUFFIXES) and not is_safetensors(path)

    def _convert_model(self, config: Any, path: Path, dest: Path) -> None:
        pickle_to_safetensors(path, dest)


def scan_pickles_in(folder: Path) -> None:
    """Scan every pickle weight file of a diffusers/transformers folder before a library loads it."""
    for p in folder.rglob("*"):
        if p.is_file() and has_suffix(p.name, PICKLE_SUFFIXES):
            _scan(p)


_ALLOWED_LIBRARIES = ("diffusers", "transformers")


def resolve_class(library: str, class_name: str, where: Path) -> Any:
    """A class named by a ``model_index.json``/``config.json``, from diffusers or transformers only."""
    if library not in _ALLOWED_LIBRARIES or not class_name.isidentifier():
        raise ModelLoadError(f"{where}: refusing to load class {library}.{class_name}", path=str(where))
    module = importlib.import_module(library)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"{where}: {library} has no class {class_name!r}", path=str(where))
    return cls


def variant_for(folder: Path, variant: ModelRepoVariant | str | None) -> str | None:
    """The ``variant=`` argument for ``from_pretrained``, if such files exist in ``folder``."""
    v = str(getattr(variant, "value", variant)) if variant is not None else None
    if v in (None, "default", "onnx", "openvino", "flax"):
        return None
    if any(folder.glob(f"*.{v}.safetensors")) or any(folder.glob(f"*.{v}.bin")):
        return v
    return None


def is_torch_class(cls: Any) -> bool:
    import torch

    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


def _dtype_keyword(cls: Any) -> str:
    """``torch_dtype`` for diffusers (all versions); ``dtype`` for transformers >= 4.56, which
    deprecates ``torch_dtype``."""
    if not str(getattr(cls, "__module__", "")).startswith("transformers"):
        return "torch_dtype"
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def from_pretrained(
    cls: Any, folder: Path, dtype: Any, variant: ModelRepoVariant | str | None = None, *, partial: bool = False
) -> Any:
    """``cls.from_pretrained(folder)`` offline, in ``dtype`` for torch modules, after scanning pickles.

    Torch modules load exactly: the libraries would initialise weights the folder lacks at random
    and drop the ones it has in excess; here either raises :class:`ModelLoadError` naming the keys,
    unless ``partial`` (then they are logged and the random init is kept).
    """
    from modeldepot.load.loaders._strict import check_loading_info, library_warnings_silenced

    scan_pickles_in(folder)
    kwargs: dict[str, Any] = {"local_files_only": True}
    torch_class = is_torch_class(cls)
    if torch_class:
        kwargs[_dtype_keyword(cls)] = dtype
        kwargs["output_loading_info"] = True
        v = variant_for(folder, variant)
        if v is not None:
            kwargs["variant"] = v
    with library_warnings_silenced():
        model = cls.from_pretrained(str(folder), **kwargs)
    if torch_class:
        model, info = model
        check_loading_info(cls.__name__, folder, info, partial=partial)
    if hasattr(model, "eval") and is_torch_class(type(model)):
        model.eval()
        model.requires_grad_(False)
    return model


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object", path=str(path))
    return data


def cast_all(sd: dict[str, Any], dtype: Any, keep_dtype: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Floating tensors to ``dtype`` (those already in it as they are); integer tensors and those
    whose name passes ``keep_dtype`` untouched."""
    return {
        k: (v.to(dtype) if v.is_floating_point() and not (keep_dtype is not None and keep_dtype(k)) else v)
        for k, v in sd.items()
    }


def prefixed(prefixes: Iterable[str]) -> Callable[[str], bool]:
    pre = tuple(prefixes)
    return lambda name: name.startswith(pre)


__all__ = [
    "PICKLE_SUFFIXES",
    "PickleConversionMixin",
    "cast_all",
    "flatten_tensors",
    "from_pretrained",
    "is_safetensors",
    "load_safetensors",
    "load_weights",
    "pickle_to_safetensors",
    "prefixed",
    "read_json",
    "resolve_class",
    "scan_pickles_in",
    "torch_load_scanned",
    "variant_for",
]
