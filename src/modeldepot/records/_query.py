"""Queries and record normalisation shared by every store: ``RecordFilter`` (one normalised
search), case-insensitive tags, key-prefix ranges, and turning what callers pass (a record, a dict,
InvokeAI's ``add_model(key, config)`` or a changes object) into a validated record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from modeldepot.configs import ModelConfigBase, parse_config
from modeldepot.errors import DuplicateModelException, InvalidModelConfigException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

_E = TypeVar("_E", bound=Enum)


def coerce_enum(enum_cls: type[_E], value: Any, field: str) -> _E | None:
    if value is None:
        return None
    try:
        return enum_cls(getattr(value, "value", value))
    except ValueError:
        known = ", ".join(str(m.value) for m in enum_cls)
        raise InvalidModelConfigException(f"unknown {field} {value!r}; known: {known}", field=field) from None


def fold_tag(tag: str) -> str:
    """The form tags are compared (and indexed) in: case-insensitive."""
    return tag.casefold()


def unique_tags(tags: Iterable[str]) -> list[str]:
    """``tags`` without case-insensitive repeats, keeping the first spelling of each, in order."""
    seen: dict[str, str] = {}
    for tag in tags:
        seen.setdefault(fold_tag(tag), tag)
    return list(seen.values())


def with_unique_tags(cfg: ModelConfigBase) -> ModelConfigBase:
    """``cfg``, or a copy of it whose tags repeat no tag in another case."""
    tags = unique_tags(cfg.tags)
    return cfg if tags == cfg.tags else cfg.model_copy(update={"tags": tags})


def as_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    return tuple(dict.fromkeys(fold_tag(str(t)) for t in tags))


def key_prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (code-point order),
    so a prefix search is the index range ``prefix <= key < bound``; ``None``: no upper bound."""
    chars = list(prefix)
    while chars:
        nxt = ord(chars[-1]) + 1
        if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; the next code point can
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def name_taken(cfg: ModelConfigBase, other_key: str) -> DuplicateModelException:
    """The error for a record taking a name another record of its base and type holds."""
    return DuplicateModelException(
        f"another {cfg.base.value}/{cfg.type.value} model is already named {cfg.name!r} (key {other_key}); "
        "choose another name",
        key=other_key,
    )


@dataclass(frozen=True)
class RecordFilter:
    """One normalised query. Every field is ANDed; ``None`` / empty means "any".

    ``tags`` are compared case-insensitively (they are stored case-folded here).
    """

    name: str | None = None
    base: BaseModelType | None = None
    type: ModelType | None = None
    format: ModelFormat | None = None
    tags: tuple[str, ...] = ()
    q: str | None = None
    path: str | None = None
    hash: str | None = None
    #: Any of these stored paths (the spellings of one path, see ``ModelPaths.forms``).
    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        folded = as_tags(self.tags)
        if folded != self.tags:
            object.__setattr__(self, "tags", folded)

    @classmethod
    def build(
        cls,
        name: str | None = None,
        base: BaseModelType | str | None = None,
        type: ModelType | str | None = None,
        format: ModelFormat | str | None = None,
        tag: str | Iterable[str] | None = None,
        q: str | None = None,
        path: str | Path | None = None,
        hash: str | None = None,
    ) -> RecordFilter:
        """Validate enum values up front, so a typo is an error rather than an empty result."""
        return cls(
            name=name,
            base=coerce_enum(BaseModelType, base, "base"),
            type=coerce_enum(ModelType, type, "type"),
            format=coerce_enum(ModelFormat, format, "format"),
            tags=as_tags(tag),
            q=q.lower() if q else None,
            path=str(path) if path is not None else None,
            hash=hash,
        )

    def matches(self, cfg: ModelConfigBase) -> bool:
        """The reference semantics; the SQL store expresses the same thing as indexed SQL."""
        if self.name is not None and cfg.name != self.name:
            return False
        if self.base is not None and cfg.base != self.base and self.base not in cfg.compatible_bases:
            return False
        if self.type is not None and cfg.type != self.type:
            return False
        if self.format is not None and cfg.format != self.format:
            return False
        if self.path is not None and cfg.path != self.path:
            return False
        if self.paths and cfg.path not in self.paths:
            return False
        if self.hash is not None and cfg.hash != self.hash:
            return False
        if self.tags and not set(self.tags).issubset({fold_tag(t) for t in cfg.tags}):
            return False
        return not (self.q is not None and self.q not in search_text(cfg))


def search_text(cfg: ModelConfigBase) -> str:
    """What ``q`` searches: name, description, tags and source, lower-cased."""
    parts = [cfg.name, cfg.description or "", *cfg.tags, cfg.source or ""]
    return "\n".join(parts).lower()


def sort_key(cfg: ModelConfigBase) -> tuple[str, str, str, str]:
    """Stable output order for every listing: (base, type, name), then key."""
    return (cfg.base.value, cfg.type.value, cfg.name, cfg.key)


def as_changes(changes: object) -> ModelConfigBase | dict[str, Any]:
    """Normalise ``update_model`` input: a record, a sparse dict, or any pydantic model whose
    explicitly set fields are the changes (InvokeAI passes a ``ModelRecordChanges``)."""
    if isinstance(changes, ModelConfigBase | dict):
        return changes
    if isinstance(changes, BaseModel):
        return changes.model_dump(exclude_unset=True)
    raise InvalidModelConfigException(f"changes must be a config object or a mapping, not {type(changes).__name__}")


def keyed_config(key: object = None, config: object = None) -> ModelConfigBase:
    """The record ``add_model`` adds, from either form: ``add_model(config)`` or the seed doc's
    ``add_model(key, config)`` (the key given first becomes the record's key). Keywords work too:
    ``add_model(key=..., config=...)``, ``add_model(config=...)``.

    Raises:
        InvalidModelConfigException: a bad key, a config that does not validate, or a config
            whose own explicitly set key differs from the one given first.
    """
    if config is None:
        if key is None or isinstance(key, str):
            raise InvalidModelConfigException("add_model(key, config): the config is missing", field="config")
        return to_config(key)  # type: ignore[arg-type]  # the one-argument form: add_model(config)
    if key is None:
        return to_config(config)  # type: ignore[arg-type]
    if not isinstance(key, str) or not key.strip():
        raise InvalidModelConfigException(
            f"add_model(key, config): key must be a non-empty string, not {key!r}", field="key"
        )
    if isinstance(config, ModelConfigBase):
        # A record built in code has a random key unless one was set: only a set one can clash.
        given = config.key if "key" in config.model_fields_set else None
    elif isinstance(config, dict):
        given = config.get("key")
    else:
        return to_config(config)  # type: ignore[arg-type]  # raises, naming the type
    if given is not None and given != key:
        raise InvalidModelConfigException(
            f"add_model(key, config): key {key!r} differs from the config's own key {given!r}", field="key"
        )
    if isinstance(config, ModelConfigBase):
        return with_unique_tags(config.model_copy(update={"key": key}, deep=True))
    return to_config({**config, "key": key})


def to_config(config: ModelConfigBase | dict[str, Any]) -> ModelConfigBase:
    """A validated record from a record or a dict (``InvalidModelConfigException`` names the field),
    its tags without case-insensitive repeats."""
    if isinstance(config, ModelConfigBase):
        return with_unique_tags(config)
    if isinstance(config, dict):
        return with_unique_tags(parse_config(config))
    raise InvalidModelConfigException(
        f"a model record must be a config object or a mapping, not {type(config).__name__}"
    )


__all__ = [
    "RecordFilter",
    "as_changes",
    "as_tags",
    "coerce_enum",
    "fold_tag",
    "key_prefix_upper_bound",
    "keyed_config",
    "name_taken",
    "search_text",
    "sort_key",
    "to_config",
    "unique_tags",
    "with_unique_tags",
]
