"""Cast tensors of a safetensors file straight from a read-only mapping of it (``load_safetensors(dtype=)``).

Reading a file into memory and then casting each tensor (``v.to(dtype)``) copies the bytes twice and
allocates them twice: once for the read buffer, once for the cast result. Casting from a private
mapping of the file reads the page cache once and writes only the result, which is what
``safetensors.torch.load_file(path)`` followed by ``.to(dtype)`` costs (benchmarks/bench_load.py
compares the two in the same rounds).

Each result is a fresh tensor made by ``Tensor.to`` itself, so its values are bit for bit those of
``load_file`` + ``.to(dtype)``, it lives in ordinary anonymous memory (the RAM cache's accounting and
eviction stay exact) and the mapping is gone once the last source view is dropped, before this
returns. The output is allocated per tensor, not as one slab: a caller that keeps some tensors and
drops others (a converter, a textual inversion) frees what it drops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modeldepot.load._errors import ModelLoadError


def cast_mapped(
    path: Path,
    data_offset: int,
    items: Sequence[tuple[str, Any, Any]],
    dtype: Any,
    rename: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """``{name: tensor in dtype}`` for ``items``, ``(name, TensorInfo, stored torch dtype)`` of a
    validated header, read through one mapping of ``path``.

    Raises:
        ModelLoadError: the file is shorter than its header says (checked before any byte is touched:
            reading past the end of a mapping would kill the process with SIGBUS).
    """
    import torch

    size = path.stat().st_size
    end = data_offset + max((info.end for _, info, _ in items), default=0)
    if end > size:
        raise ModelLoadError(f"{path}: file is shorter than its safetensors header says", path=str(path))
    out: dict[str, Any] = {}
    if not items:
        return out
    # MAP_PRIVATE (shared=False): the pages are the page cache's own until written, and nothing writes.
    storage: Any = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)  # stubs say _StorageBase
    whole = torch.empty(0, dtype=torch.uint8).set_(storage)
    for name, info, src_dtype in items:
        raw = whole[data_offset + info.begin : data_offset + info.end]
        if (data_offset + info.begin) % src_dtype.itemsize:
            raw = raw.clone()  # a typed view needs an offset aligned to its element size
        out[rename(name) if rename else name] = raw.view(src_dtype).reshape(info.shape).to(dtype, copy=True)
    # copy=True: never a view of the mapping, even for a caller passing a tensor already in ``dtype``.
    # The last views die with this frame, and with them the mapping.
    return out


__all__ = ["cast_mapped"]
