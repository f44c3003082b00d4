"""Turning an identification plus user overrides into a validated record."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modeldepot.configs import ModelConfigBase, class_for, new_key, parse_config
from modeldepot.download import strip_secrets
from modeldepot.errors import InvalidModelConfigException
from modeldepot.identify import Identification, record_fields

#: Override keys that steer identification rather than being plain record fields.
IDENTIFY_KEYS = ("type", "format", "base", "variant", "prediction_type", "compatible_bases")
_ALIASES = {
    "model_type": "type",
    "model_format": "format",
    "base_model": "base",
    "model_name": "name",
    "config": "config_path",  # document 002's name of a checkpoint's config field
}


def normalise_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        out[_ALIASES.get(k, k)] = getattr(v, "value", v) if not isinstance(v, set | list) else v
    return out


def identify_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: overrides[k] for k in IDENTIFY_KEYS if k in overrides}


def build_record(
    ident: Identification,
    *,
    path: Path,
    name: str,
    content_hash: str | None,
    file_size: int | None,
    overrides: dict[str, Any],
    source: str | None,
    source_type: str | None,
    inplace: bool,
    key: str | None = None,
) -> ModelConfigBase:
    """A record of the class matching the identified (type, format): what identification decides
    (:func:`~modeldepot.identify.record_fields`, the one mapping), where the model is, and the
    user's overrides, which win."""
    cls = class_for(ident.type, ident.format)
    data: dict[str, Any] = {
        **record_fields(ident),
        "key": key or new_key(),
        "name": name,
        "path": str(path),
        "hash": content_hash,
        "file_size": file_size,
        # Records are stored and served: a URL's ?token= or signature must not come along.
        "source": strip_secrets(source) if source else source,
        "source_type": source_type,
        "inplace": inplace,
    }
    for field, value in overrides.items():
        if field in IDENTIFY_KEYS and field not in ("compatible_bases",):
            continue  # already applied through identify()
        if field not in cls.model_fields:
            raise InvalidModelConfigException(
                f"setting {field!r} does not apply to a {ident.type}/{ident.format} model", field=field
            )
        data[field] = value
    return parse_config(data)


def default_name(path: Path) -> str:
    """The file stem or folder name, tidied."""
    name = path.name if path.is_dir() else path.stem
    name = re.sub(r"\s+", " ", name).strip()
    return name or "model"
