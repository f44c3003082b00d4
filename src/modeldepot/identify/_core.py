"""``identify(path, overrides)``: dispatch a file or folder to the rules, then apply user overrides."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldepot.errors import (
    IdentificationError,
    InvalidModelConfigException,
    InvalidSafetensorsError,
    ModelNotFoundException,
)
from modeldepot.identify._assemble import (
    DEFAULT_FILE_FORMAT,
    DEFAULT_FOLDER_FORMAT,
    compatible_for,
    finish,
    has_record_class,
    unknown,
)
from modeldepot.identify._declared import read_declared
from modeldepot.identify._folder import identify_folder
from modeldepot.identify._json import short
from modeldepot.identify._pickle import read_pickle_table
from modeldepot.identify._result import Identification
from modeldepot.identify._rules_adapters import controlnet, ip_adapter, lora, t2i_adapter, textual_inversion
from modeldepot.identify._rules_encoders import clip_text, clip_vision, esrgan, t5_encoder, vae
from modeldepot.identify._rules_main import flux_checkpoint, sd3_checkpoint, sd_unet_checkpoint
from modeldepot.identify._rules_predictor import clip_predictor
from modeldepot.identify._view import KeyView, Verdict
from modeldepot.identify.safetensors import read_safetensors_header
from modeldepot.taxonomy import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    BaseModelType,
    ClipVariantType,
    FluxVariantType,
    ModelFormat,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
    has_suffix,
)

#: Rules for a single weights file, in priority order (first match wins).
FILE_RULES: tuple[Callable[[KeyView], Verdict], ...] = (
    sd_unet_checkpoint,
    sd3_checkpoint,
    flux_checkpoint,
    lora,
    controlnet,
    ip_adapter,
    t2i_adapter,
    vae,
    textual_inversion,
    clip_text,
    clip_vision,
    t5_encoder,
    esrgan,
    clip_predictor,
)
_HEAD_BYTES = 64
_CONTENT_NAMES = {
    "safetensors": "a safetensors file",
    "zip": "a PyTorch zip checkpoint",
    "pickle": "a PyTorch pickle",
    "gguf": "a GGUF file",
}


def _content(head: bytes, size: int, *, named_safetensors: bool) -> str:
    """What the first bytes say: safetensors, zip, pickle, gguf, text, empty or other.

    The content decides, not the name: a ``.bin`` can be anything, and the loaders sniff too.
    """
    if not head:
        return "empty"
    if head[8:9] == b"{" and (named_safetensors or 8 + int.from_bytes(head[:8], "little") <= size):
        return "safetensors"  # <u64 header length>{...: checked before the magics below, which it can mimic
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[0] == 0x80 and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # PROTO opcode: torch.save writes protocol 2
    if head[:4] == b"GGUF":
        return "gguf"
    if head[8:9] == b"{":
        return "safetensors"  # a truncated one: the reader says so
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "text"
    return "other"


#: What ``content_kind`` calls a weights file (whatever its name).
WEIGHT_CONTENTS = frozenset(_CONTENT_NAMES)


def content_kind(path: Path) -> str:
    """What ``path``'s first bytes say it is: ``safetensors``, ``zip``, ``pickle``, ``gguf``, ``text``,
    ``empty`` or ``other`` (the first four are :data:`WEIGHT_CONTENTS`). Raises ``OSError``."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HEAD_BYTES)
    return _content(head, size, named_safetensors=False)


def _not_a_model(path: Path, head: bytes, content: str) -> str:
    """Why ``path`` is not a weights file, for an error message."""
    if content == "empty":
        return f"{path}: empty file (0 bytes), not a model"
    if content == "text":
        text = head.decode("utf-8", errors="replace")
        if text.startswith("version https://git-lfs"):
            return f"{path}: a Git LFS pointer file, not the weights it points to; fetch them with `git lfs pull`"
        what = "HTML/XML" if text.lstrip().startswith("<") else "JSON" if text.lstrip()[:1] in "{[" else "plain"
        return (
            f"{path}: {what} text (starts with {short(text[:40])}), not a model; "
            "an error page saved by a failed download?"
        )
    return (
        f"{path}: not a model file: it starts with bytes {head[:8].hex(' ')}, which is not a PyTorch zip "
        "archive (PK), a pickle (0x80 then protocol 2-5), safetensors (8-byte length then JSON) or GGUF"
    )


def _sniff(path: Path) -> str:
    """The reader for ``path``: ``safetensors``, ``pickle``, ``gguf`` or ``other`` (not a weights file).

    Raises:
        IdentificationError: the name promises a weights file the content is not (a ``.bin``
            holding text, a ``.safetensors`` holding a pickle...).
    """
    name = path.name.lower()
    named_safetensors = has_suffix(name, SAFETENSORS_SUFFIXES)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_HEAD_BYTES)
    except OSError as exc:
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc
    content = _content(head, size, named_safetensors=named_safetensors)
    if content in _CONTENT_NAMES:
        if named_safetensors and content != "safetensors":
            raise InvalidSafetensorsError(
                f"{path}: named {path.suffix} but holds {_CONTENT_NAMES[content]}, not safetensors; "
                "rename it to match its content",
                path,
            )
        return "pickle" if content in ("zip", "pickle") else content
    if named_safetensors:
        if content == "text":
            raise InvalidSafetensorsError(_not_a_model(path, head, content), path)
        return "safetensors"  # the header reader says exactly what is wrong
    if has_suffix(name, PICKLE_SUFFIXES):
        raise IdentificationError(_not_a_model(path, head, content), path)
    return "other"


def load_view(path: Path) -> KeyView:
    """The normalised key table of a weights file (header / pickle key table only)."""
    return _view_of(path, _sniff(path))


def _view_of(path: Path, kind: str) -> KeyView:
    if kind == "safetensors":
        header = read_safetensors_header(path)
        shapes: dict[str, tuple[int, ...] | None] = dict(header.shapes)  # a C-level copy: typed for KeyView
        return KeyView.build(path, shapes, metadata=header.metadata, source="safetensors header")
    if kind == "pickle":
        table = read_pickle_table(path)
        return KeyView.build(path, table.shapes, values=table.values, source=f"pickle key table ({table.layout})")
    raise IdentificationError(f"{path}: not a safetensors or PyTorch pickle file", path)


def _identify_file(path: Path) -> Identification:
    kind = _sniff(path)
    if kind == "gguf":
        return unknown(["type: unknown (GGUF files are not identified yet)"], [], {"source": "gguf"})
    if kind == "other":
        return unknown(
            [f"type: unknown ({path.name!r} is not a safetensors, .ckpt/.pt/.pth/.bin or GGUF file)"], [], {}
        )
    view = _view_of(path, kind)
    extra: dict[str, Any] = {"source": view.source, "keys": len(view)}
    if view.unwrapped:
        extra["unwrapped"] = view.unwrapped
    if not view.shapes:
        return unknown(["type: unknown (the file holds no tensors)"], [], extra)
    verdicts = [rule(view) for rule in FILE_RULES]
    return finish(
        verdicts, read_declared(view.metadata), extra=extra, unknown_reason=f"no rule matched {len(view)} keys"
    )


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IdentificationError(f"{path}: symbolic link loop", path) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ModelNotFoundException(f"{path}: no such file or folder", path) from exc
        raise IdentificationError(f"{path}: cannot read: {exc.strerror or exc}", path) from exc


def identify(path: str | Path, overrides: dict[str, Any] | None = None) -> Identification:
    """Tell what the model file or folder at ``path`` is, with the reasons.

    Reads only safetensors headers, JSON configs and pickle key tables, never tensor data.
    ``overrides`` (keys ``type``, ``format``, ``base``, ``variant``, ``prediction_type``,
    ``compatible_bases``; strings or enums) always win and are recorded in ``reasons`` and
    ``overridden``.

    Raises:
        ModelNotFoundException: ``path`` does not exist.
        InvalidSafetensorsError / UnsafePickleError / IdentificationError: malformed input.
        InvalidModelConfigException: an override value is not valid.
    """
    path = Path(path)
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        result = identify_folder(path, load_view)
    elif stat.S_ISREG(st.st_mode):
        result = _identify_file(path)
    else:
        raise IdentificationError(f"{path}: not a regular file or folder", path)
    if overrides:
        apply_overrides(result, overrides, folder=stat.S_ISDIR(st.st_mode))
    return result


_OVERRIDE_ENUMS: dict[str, Any] = {
    "type": ModelType,
    "format": ModelFormat,
    "base": BaseModelType,
    "prediction_type": SchedulerPredictionType,
}
_VARIANT_ENUMS = (ModelVariantType, FluxVariantType, ClipVariantType)


def _coerce(name: str, value: Any) -> Any:
    def bad(choices: str) -> InvalidModelConfigException:
        return InvalidModelConfigException(f"override {name}={value!r} is not valid; choose one of: {choices}", name)

    raw = getattr(value, "value", value)
    if name in _OVERRIDE_ENUMS:
        enum = _OVERRIDE_ENUMS[name]
        try:
            return enum(raw)
        except ValueError:
            raise bad(", ".join(e.value for e in enum)) from None
    if name == "variant":
        if raw is None:
            return None
        for enum in _VARIANT_ENUMS:
            try:
                return enum(raw).value
            except ValueError:
                continue
        raise bad(", ".join(e.value for en in _VARIANT_ENUMS for e in en))
    if name == "compatible_bases":
        items = [raw] if isinstance(raw, str) else list(raw)
        return {_coerce("base", b) for b in items}
    raise InvalidModelConfigException(
        f"unknown override {name!r}; allowed: type, format, base, variant, prediction_type, compatible_bases", name
    )


def apply_overrides(result: Identification, overrides: dict[str, Any], *, folder: bool = False) -> None:
    """Set the user's values on ``result`` (in place), recording each one as set by the user."""
    values = {k: _coerce(k, v) for k, v in overrides.items() if v is not None}
    for name in ("type", "format", "base", "variant", "prediction_type", "compatible_bases"):
        if name not in values:
            continue
        new = values[name]
        shown = ", ".join(sorted(str(b) for b in new)) if name == "compatible_bases" else str(new)
        old = [r for r in result.reasons if r.startswith(f"{name}: ")]
        result.reasons = [r for r in result.reasons if not r.startswith(f"{name}: ")]
        result.reasons.append(f"{name}: {shown} (set by user)")
        result.reasons.extend(f"(overridden) {r}" for r in old)
        if name == "base" and "compatible_bases" not in values and new not in result.compatible_bases:
            result.compatible_bases = compatible_for(values.get("type", result.type), new)
        setattr(result, name, new)
        result.overridden.add(name)
    if result.base not in result.compatible_bases and result.base != BaseModelType.Unknown:
        result.compatible_bases.add(result.base)
    if not has_record_class(result.type, result.format):
        if "format" in values:
            raise InvalidModelConfigException(
                f"override type={result.type} with format={result.format}: no record class accepts that pair",
                "format",
            )
        fmt = (DEFAULT_FOLDER_FORMAT if folder else DEFAULT_FILE_FORMAT).get(result.type)
        if fmt is None or not has_record_class(result.type, fmt):
            fmt = next(
                (f for f in (ModelFormat.Diffusers, ModelFormat.Checkpoint) if has_record_class(result.type, f)),
                None,
            )
        if fmt is None:
            raise InvalidModelConfigException(f"override type={result.type}: no record class for it", "type")
        result.reasons.append(f"format: {fmt} (adjusted: {result.format} does not fit the type set by the user)")
        result.format = fmt
