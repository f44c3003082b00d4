"""Exact loads: every weight of the model comes from the file, every tensor of the file goes somewhere.

Libraries are lenient by default: diffusers and transformers ``from_pretrained`` initialise missing
weights at random (with a warning) and drop unexpected ones; ``from_single_file`` leaves missing
weights on the meta device. A model loaded that way is garbage that looks fine, so every loader
checks the outcome here and raises :class:`ModelLoadError` naming the first keys at fault, unless
the caller asked for a partial load (``partial=True``), in which case the gaps are logged.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modeldepot.load._errors import ModelLoadError

log = logging.getLogger(__name__)
_SHOWN = 3


def _names(keys: Iterable[str]) -> str:
    items = sorted(keys)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def mismatch_message(
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
) -> str:
    """``"missing keys: a, b (and 3 more); unexpected keys: ...; shape mismatch: k file [2] vs model [4]"``
    (empty when everything matches)."""
    parts: list[str] = []
    missing, unexpected = list(missing), list(unexpected)
    if missing:
        parts.append(f"{len(missing)} missing keys: {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_names(unexpected)}")
    if mismatched:
        shown = [f"{k} file {list(a)} vs model {list(b)}" for k, (a, b) in sorted(mismatched.items())[:_SHOWN]]
        more = f" (and {len(mismatched) - _SHOWN} more)" if len(mismatched) > _SHOWN else ""
        parts.append(f"{len(mismatched)} shape mismatches: {', '.join(shown)}{more}")
    return "; ".join(parts)


@contextmanager
def library_warnings_silenced() -> Iterator[None]:
    """Mute the libraries' own "weights were not initialized / not used" warnings while they load:
    the outcome is checked here and reported once, as an error (or one warning for partial loads)."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def check_complete(
    what: str,
    path: Path | str,
    *,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
    partial: bool = False,
) -> None:
    """Raise :class:`ModelLoadError` when the file and the model differ (log it when ``partial``)."""
    message = mismatch_message(missing, unexpected, mismatched)
    if not message:
        return
    if partial and not mismatched:
        log.warning("partial load of %s from %s: %s", what, path, message)
        return
    hint = "" if partial else " (pass partial=True to load it anyway)"
    raise ModelLoadError(f"{path}: the weights do not match {what}: {message}{hint}", path=str(path))


def check_against(
    what: str, path: Path | str, sd: Mapping[str, Any], expected: Mapping[str, Any], *, partial: bool = False
) -> None:
    """:func:`check_complete` of a file's tensors ``sd`` against a model's ``state_dict()``: every key,
    every shape."""
    mismatched = {
        k: (tuple(v.shape), tuple(expected[k].shape))
        for k, v in sd.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    }
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    check_complete(what, path, missing=missing, unexpected=unexpected, mismatched=mismatched, partial=partial)


def unwrap_params(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The weights inside a BasicSR ``params_ema`` / ``params`` wrapper (nested, or flattened with dots
    by ``load_weights``), else ``sd``. ``params_ema`` wins: EMA weights are the ones meant for inference."""
    for wrapper in ("params_ema", "params"):
        inner = sd.get(wrapper)
        if isinstance(inner, Mapping):
            return dict(inner)
        prefix = wrapper + "."
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def check_loading_info(what: str, path: Path | str, info: Mapping[str, Any], *, partial: bool = False) -> None:
    """The ``output_loading_info=True`` answer of diffusers / transformers ``from_pretrained``."""
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for item in info.get("mismatched_keys") or ():
        if isinstance(item, tuple | list) and len(item) == 3:
            key, file_shape, model_shape = item
            mismatched[str(key)] = (tuple(file_shape), tuple(model_shape))
        else:
            mismatched[str(item)] = ((), ())
    errors = [str(e) for e in info.get("error_msgs") or ()]
    if errors:
        raise ModelLoadError(f"{path}: cannot load {what}: {errors[0]}", path=str(path))
    check_complete(
        what,
        path,
        missing=[str(k) for k in info.get("missing_keys") or ()],
        unexpected=[str(k) for k in info.get("unexpected_keys") or ()],
        mismatched=mismatched,
        partial=partial,
    )


def unused_sources(source: Mapping[str, Any], converted: Mapping[str, Any], accessed: Iterable[str] = ()) -> list[str]:
    """Keys of ``source`` whose tensor no converted tensor is a view of (a converter dropped them).

    Converters rename and reshape (views of the same memory); a source tensor none of whose bytes
    ends up in ``converted`` was silently skipped. Keys in ``accessed`` count as used (converters
    that copy, such as OpenCLIP's q/k/v split, read them by name).
    """
    spans = sorted(
        (int(t.data_ptr()), int(t.data_ptr()) + int(t.numel()) * int(t.element_size()), k)
        for k, t in source.items()
        if int(t.numel()) > 0
    )
    starts = [s[0] for s in spans]
    used = set(accessed)
    for t in converted.values():
        ptr = int(t.data_ptr())
        i = bisect.bisect_right(starts, ptr) - 1
        # Overlapping spans cannot occur (one buffer, disjoint tensors), so the nearest start decides.
        if i >= 0 and ptr < spans[i][1]:
            used.add(spans[i][2])
    return [k for k in source if k not in used and int(source[k].numel()) > 0]


class AccessTracker(dict[str, Any]):
    """A state dict that remembers which keys a converter read."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.accessed: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.accessed.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            self.accessed.add(key)
        return super().get(key, default)


def assign_exact(
    build: Callable[[], Any],
    sd: Mapping[str, Any],
    what: str,
    path: Path | str,
    *,
    dtype: Any = None,
    partial: bool = False,
    unexpected_sources: Iterable[str] = (),
) -> Any:
    """``build()`` on the meta device, then ``sd`` assigned in ``dtype``: every key must match.

    ``unexpected_sources`` are file keys a converter dropped before ``sd`` was made (they make the
    load inexact too). With ``partial`` the model is built for real (random init) so the weights the
    file lacks stay usable, and only shape mismatches raise.
    """
    from accelerate import init_empty_weights

    if partial:
        model = build()
    else:
        with init_empty_weights():  # parameters on meta: no random init; buffers stay real
            model = build()
    expected = model.state_dict()
    mismatched = {
        k: (tuple(v.shape), tuple(expected[k].shape))
        for k, v in sd.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    }
    # A persistent buffer the file lacks keeps its (deterministic) value; a parameter cannot.
    missing = [k for k, t in expected.items() if k not in sd and (t.is_meta or partial)]
    unexpected = [*unexpected_sources, *(k for k in sd if k not in expected)]
    check_complete(what, path, missing=missing, unexpected=unexpected, mismatched=mismatched, partial=partial)
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False, assign=not partial)
    if partial and dtype is not None:
        model.to(dtype)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    still = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still:
        check_complete(what, path, missing=still)
    model.eval()
    model.requires_grad_(False)
    return model


__all__ = [
    "AccessTracker",
    "assign_exact",
    "check_complete",
    "check_loading_info",
    "library_warnings_silenced",
    "mismatch_message",
    "unused_sources",
]
