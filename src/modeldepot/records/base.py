"""The record-store contract: ``ModelRecordServiceBase`` and the search filter both stores share.

A store keeps one validated record (``modeldepot.configs``) per model key. Implementations only
provide the primitives (add, update, delete, get, filtered search and count, version); the
InvokeAI-compatible conveniences (``search_by_attr``, ``search_by_tag``, ``model_info_by_name``...)
are built on them here, so both stores answer every query the same way.

Rules every store keeps:

- Tags are case-insensitive. A record keeps the spelling a tag was first given ("Portrait");
  adding "portrait" to it again is a no-op, and every tag search compares ``str.casefold()``-ed
  tags, so ``search_by_tag("PORTRAIT")`` finds it.
- Renaming (or updating the name of) a record to a name another record of the same base and
  type already holds is refused with ``DuplicateModelException`` naming the other record's key.
- A key prefix finds records through an index (``search_by_key_prefix``); ``resolve`` turns what
  a user typed (key, unique name or unique key prefix) into one record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from modeldepot.configs import ModelConfigBase, parse_config
from modeldepot.errors import DuplicateModelException, InvalidModelConfigException, UnknownModelException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

_E = TypeVar("_E", bound=Enum)

#: InvokeAI's keyword spellings accepted by ``search_by_attr``.
_SEARCH_ALIASES = {"model_name": "name", "base_model": "base", "model_type": "type", "model_format": "format"}
_YAML_SUFFIXES = (".yaml", ".yml")
#: The shortest key prefix ``resolve`` accepts: short enough to type, long enough to rarely clash.
MIN_KEY_PREFIX = 6
#: How many candidates an ambiguous key prefix lists.
_MAX_CANDIDATES = 10


def _coerce_enum(enum_cls: type[_E], value: Any, field: str) -> _E | None:
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


def _as_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
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

    def __post_init__(self) -> None:
        folded = _as_tags(self.tags)
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
            base=_coerce_enum(BaseModelType, base, "base"),
            type=_coerce_enum(ModelType, type, "type"),
            format=_coerce_enum(ModelFormat, format, "format"),
            tags=_as_tags(tag),
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


class ModelRecordServiceBase(ABC):
    """Abstract store of model records (InvokeAI's ``ModelRecordServiceBase`` contract)."""

    # ---- primitives every store implements -------------------------------------------------

    @abstractmethod
    def add_model(self, config: ModelConfigBase | dict[str, Any]) -> ModelConfigBase:
        """Add a record; returns it.

        Raises:
            InvalidModelConfigException: a dict that does not validate (names the field).
            DuplicateModelException: the key or the path is already registered.
        """

    @abstractmethod
    def update_model(self, key: str, changes: ModelConfigBase | dict[str, Any]) -> ModelConfigBase:
        """Merge a sparse dict (or replace with a whole record), re-validate, store; returns the new record.

        Raises:
            UnknownModelException: no record with ``key``.
            InvalidModelConfigException: the result does not validate.
            DuplicateModelException: the new path belongs to another record.
        """

    @abstractmethod
    def del_model(self, key: str) -> None:
        """Remove a record (never touches files). Raises ``UnknownModelException``."""

    @abstractmethod
    def get_model(self, key: str) -> ModelConfigBase:
        """The record with ``key``. Raises ``UnknownModelException`` (also a ``KeyError``)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a record with ``key`` exists."""

    @abstractmethod
    def _search(self, flt: RecordFilter, offset: int = 0, limit: int | None = None) -> list[ModelConfigBase]:
        """Records matching ``flt`` in (base, type, name, key) order, paginated."""

    @abstractmethod
    def search_by_key_prefix(self, prefix: str, limit: int | None = None) -> list[ModelConfigBase]:
        """Records whose key starts with ``prefix`` (case-sensitive), in key order, at most ``limit``.

        An index range (``prefix <= key < next``), never a scan of every record.
        """

    @abstractmethod
    def _count(self, flt: RecordFilter) -> int:
        """How many records match ``flt``."""

    @abstractmethod
    def version(self) -> int:
        """The schema version of the underlying database or file."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release connections and handles."""

    def __enter__(self) -> ModelRecordServiceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- conveniences built on the primitives ----------------------------------------------

    def add_models(self, configs: Iterable[ModelConfigBase | dict[str, Any]]) -> list[ModelConfigBase]:
        """Add several records. Stores override this to do it in one transaction / one write."""
        return [self.add_model(c) for c in configs]

    def rename_model(self, key: str, new_name: str) -> ModelConfigBase:
        """Change a record's name; returns the new record.

        Raises:
            UnknownModelException: no record with ``key``.
            DuplicateModelException: another record of the same base and type is named
                ``new_name`` (the message and ``.key`` name that record).
            InvalidModelConfigException: an empty name.
        """
        return self.update_model(key, {"name": new_name})

    def resolve(self, key_or_name: str, *, min_prefix: int = MIN_KEY_PREFIX) -> ModelConfigBase:
        """The one record a user means by ``key_or_name``: a key, else a unique name (any base
        or type), else a unique key prefix of at least ``min_prefix`` characters.

        Raises:
            UnknownModelException: nothing matches.
            DuplicateModelException: the name or the key prefix matches several records
                (the message lists them).
        """
        if self.exists(key_or_name):
            return self.get_model(key_or_name)
        named = self.search_by_attr(name=key_or_name)
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            keys = ", ".join(f"{m.key} ({m.base.value}/{m.type.value})" for m in named)
            raise DuplicateModelException(f"name {key_or_name!r} matches several models: {keys}; use a key")
        if len(key_or_name) >= min_prefix:
            # Keys are lower-case hex; a prefix typed in capitals means the same key.
            for prefix in dict.fromkeys((key_or_name, key_or_name.lower())):
                found = self.search_by_key_prefix(prefix, limit=_MAX_CANDIDATES + 1)
                if len(found) == 1:
                    return found[0]
                if found:
                    listed = ", ".join(f"{m.key} ({m.name})" for m in found[:_MAX_CANDIDATES])
                    more = ", ..." if len(found) > _MAX_CANDIDATES else ""
                    raise DuplicateModelException(
                        f"key prefix {key_or_name!r} matches several models: {listed}{more}; type more of the key"
                    )
            raise UnknownModelException(f"no model with key, name or key prefix {key_or_name!r}", key=key_or_name)
        raise UnknownModelException(
            f"no model with key or name {key_or_name!r} (a key prefix needs at least {min_prefix} characters)",
            key=key_or_name,
        )

    def search_models(
        self,
        name: str | None = None,
        base: BaseModelType | str | None = None,
        type: ModelType | str | None = None,
        format: ModelFormat | str | None = None,
        tag: str | Iterable[str] | None = None,
        q: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[ModelConfigBase]:
        """Filtered, paginated listing (for the REST API).

        ``base`` matches ``base`` or ``compatible_bases``; ``tag`` (one or several) must all be
        present; ``q`` is a case-insensitive substring of name, description, tags or source.
        """
        if offset < 0 or (limit is not None and limit < 0):
            raise InvalidModelConfigException("offset and limit must not be negative", field="offset")
        flt = RecordFilter.build(name=name, base=base, type=type, format=format, tag=tag, q=q)
        return self._search(flt, offset=offset, limit=limit)

    def count_models(
        self,
        name: str | None = None,
        base: BaseModelType | str | None = None,
        type: ModelType | str | None = None,
        format: ModelFormat | str | None = None,
        tag: str | Iterable[str] | None = None,
        q: str | None = None,
    ) -> int:
        """How many records ``search_models`` with the same filters would return without a limit."""
        return self._count(RecordFilter.build(name=name, base=base, type=type, format=format, tag=tag, q=q))

    def search_by_attr(
        self,
        name: str | None = None,
        base: BaseModelType | str | None = None,
        type: ModelType | str | None = None,
        format: ModelFormat | str | None = None,
        **aliases: Any,
    ) -> list[ModelConfigBase]:
        """Records matching every given attribute (all ``None``: every record).

        Also accepts InvokeAI's keywords ``model_name``, ``base_model``, ``model_type``,
        ``model_format``. A base matches a record's ``base`` or its ``compatible_bases``.
        """
        given: dict[str, Any] = {"name": name, "base": base, "type": type, "format": format}
        for alias, value in aliases.items():
            target = _SEARCH_ALIASES.get(alias)
            if target is None:
                raise TypeError(f"search_by_attr() got an unexpected keyword argument {alias!r}")
            if value is None:
                continue
            if given[target] is not None and given[target] != value:
                raise InvalidModelConfigException(
                    f"both {target!r} and {alias!r} given with different values", field=target
                )
            given[target] = value
        return self._search(RecordFilter.build(**given))

    def search_by_name(
        self,
        name: str | None = None,
        base: BaseModelType | str | None = None,
        type: ModelType | str | None = None,
        format: ModelFormat | str | None = None,
        **aliases: Any,
    ) -> list[ModelConfigBase]:
        """Alias of :meth:`search_by_attr`."""
        return self.search_by_attr(name, base, type, format, **aliases)

    def search_by_path(self, path: str | Path) -> list[ModelConfigBase]:
        """Records whose ``path`` is exactly ``path`` (at most one: paths are unique)."""
        return self._search(RecordFilter(path=str(path)))

    def search_by_hash(self, hash: str) -> list[ModelConfigBase]:
        """Records whose content hash is ``hash``."""
        return self._search(RecordFilter(hash=hash))

    def search_by_tag(self, tags: str | Iterable[str]) -> list[ModelConfigBase]:
        """Records carrying every tag in ``tags``, compared case-insensitively."""
        return self._search(RecordFilter(tags=_as_tags(tags)))

    def all_models(self) -> list[ModelConfigBase]:
        """Every record, in (base, type, name) order."""
        return self._search(RecordFilter())

    def model_info_by_name(self, name: str, base: BaseModelType | str, type: ModelType | str) -> ModelConfigBase:
        """The one record with this name, base and type.

        A record whose own ``base`` equals ``base`` wins over one merely compatible with it.

        Raises:
            UnknownModelException: nothing matches.
            DuplicateModelException: more than one record matches equally well.
        """
        flt = RecordFilter.build(name=name, base=base, type=type)
        found = self._search(flt)
        exact = [m for m in found if m.base == flt.base]
        candidates: Sequence[ModelConfigBase] = exact or found
        what = f"{name!r} (base {flt.base}, type {flt.type})"
        if not candidates:
            raise UnknownModelException(f"no model named {what}", key=name)
        if len(candidates) > 1:
            keys = ", ".join(m.key for m in candidates)
            raise DuplicateModelException(f"more than one model named {what}: {keys}", key=candidates[0].key)
        return candidates[0]

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_db_file(cls, db_file: str | Path) -> ModelRecordServiceBase:
        """Open the store a path names: ``.yaml``/``.yml`` -> YAML file, else SQLite.

        A ``postgresql://`` URL opens the PostgreSQL store. A file of the wrong kind or an
        unknown schema raises ``DatabaseError`` and is left untouched.
        """
        from modeldepot.records.file import ModelRecordServiceFile
        from modeldepot.records.sql import ModelRecordServiceSQL

        text = str(db_file)
        if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            return ModelRecordServiceSQL.from_url(text)
        if Path(text).suffix.lower() in _YAML_SUFFIXES:
            return ModelRecordServiceFile.from_db_file(text)
        return ModelRecordServiceSQL.from_db_file(text)


__all__ = [
    "MIN_KEY_PREFIX",
    "ModelRecordServiceBase",
    "RecordFilter",
    "as_changes",
    "fold_tag",
    "key_prefix_upper_bound",
    "name_taken",
    "search_text",
    "sort_key",
    "to_config",
    "unique_tags",
    "with_unique_tags",
]
