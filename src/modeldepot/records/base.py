"""The record-store contract: ``ModelRecordServiceBase`` and the search filter both stores share.

A store keeps one validated record (``modeldepot.configs``) per model key. Implementations only
provide the primitives (add, update, delete, get, filtered search and count, schema_version); the
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
- A store told its ``models_dir`` keeps paths under it relative and hands them out absolute
  (``records/_paths.py``); every path a caller passes in or gets back may be either form.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.configs import ModelConfigBase
from modeldepot.errors import DuplicateModelException, InvalidModelConfigException, UnknownModelException
from modeldepot.records._paths import ModelPaths
from modeldepot.records._query import (
    RecordFilter,
    as_changes,
    as_tags,
    fold_tag,
    key_prefix_upper_bound,
    keyed_config,
    name_taken,
    search_text,
    sort_key,
    to_config,
    unique_tags,
    with_unique_tags,
)
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

if TYPE_CHECKING:
    import sqlite3

    from modeldepot.config import DepotConfig

#: What ``version()`` answers: the record layout, in InvokeAI's numbering (the seed doc's "3.2").
#: Both stores hold the same records; each store's own storage schema is ``schema_version()``.
RECORDS_VERSION = "3.2"
#: InvokeAI's keyword spellings accepted by ``search_by_attr``.
_SEARCH_ALIASES = {"model_name": "name", "base_model": "base", "model_type": "type", "model_format": "format"}
_YAML_SUFFIXES = (".yaml", ".yml")
#: The shortest key prefix ``resolve`` accepts: short enough to type, long enough to rarely clash.
MIN_KEY_PREFIX = 6
#: How many candidates an ambiguous key prefix lists.
_MAX_CANDIDATES = 10


class ModelRecordServiceBase(ABC):
    """Abstract store of model records (InvokeAI's ``ModelRecordServiceBase`` contract)."""

    #: How this store spells paths; stores set it from their ``models_dir`` keyword.
    _paths: ModelPaths = ModelPaths()

    @property
    def models_dir(self) -> Path | None:
        """The folder relative record paths are relative to (None: paths are kept as given)."""
        return self._paths.models_dir

    def _stored(self, cfg: ModelConfigBase) -> ModelConfigBase:
        """``cfg`` as written: its path relative when it lies under ``models_dir``."""
        path = self._paths.stored(cfg.path)
        return cfg if path == cfg.path else cfg.model_copy(update={"path": path})

    def _readable(self, cfg: ModelConfigBase) -> ModelConfigBase:
        """A record as handed out: its path absolute. Changes ``cfg`` (each read parses or copies
        a record of its own); ``validate_assignment`` would re-run every validator for one str."""
        path = self._paths.readable(cfg.path)
        if path != cfg.path:
            object.__setattr__(cfg, "path", path)
        return cfg

    # ---- primitives every store implements -------------------------------------------------

    @abstractmethod
    def add_model(self, key: Any = None, config: Any = None) -> ModelConfigBase:
        """Add a record; returns it (as ``get_model`` would).

        Two forms: the seed doc's ``add_model(key, config)`` and ``add_model(config)`` (the record
        keeps its own key); ``config`` is a record object or a dict (validated through the
        ``AnyModelConfig`` union).

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
    def _count(self, flt: RecordFilter, at_most: int | None = None) -> int:
        """How many records match ``flt``, counting no further than ``at_most``."""

    @abstractmethod
    def schema_version(self) -> int:
        """The version of this store's own storage schema (SQL migrations, YAML file layout)."""

    def version(self) -> str:
        """The version of the record layout, as the seed doc has it (currently ``"3.2"``)."""
        return RECORDS_VERSION

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
        *,
        at_most: int | None = None,
    ) -> int:
        """How many records ``search_models`` with the same filters would return without a limit.

        ``at_most``: stop counting there (the answer is then ``min(count, at_most)``): a page that
        shows "more than 10,000" needs no exact count of a million matches.
        """
        flt = RecordFilter.build(name=name, base=base, type=type, format=format, tag=tag, q=q)
        return self._count(flt, at_most)

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

    def get_model_by_attr(
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
        """Records whose ``path`` is ``path`` (at most one: paths are unique). Absolute or relative
        to ``models_dir``; compared as strings otherwise (a symlink is another path)."""
        return self._search(RecordFilter(paths=self._paths.forms(path)))

    def search_by_hash(self, hash: str) -> list[ModelConfigBase]:
        """Records whose content hash is ``hash``."""
        return self._search(RecordFilter(hash=hash))

    def search_by_tag(self, tags: str | Iterable[str]) -> list[ModelConfigBase]:
        """Records carrying every tag in ``tags``, compared case-insensitively."""
        return self._search(RecordFilter(tags=as_tags(tags)))

    def all_models(self) -> list[ModelConfigBase]:
        """Every record, in (base, type, name) order."""
        return self._search(RecordFilter())

    def taken_names(self, name: str, base: BaseModelType | str, type: ModelType | str) -> set[str]:
        """Which of ``name`` and its numbered forms (``name (2)``, ``name (3)``...) records whose own
        base and type are ``base`` and ``type`` hold: what picking a free name needs to know.

        Every name returned is ``name`` or starts with ``name (``. The SQL store answers from one
        index range; this fallback reads the records of that base and type.
        """
        flt = RecordFilter.build(base=base, type=type)
        prefix = f"{name} ("
        return {
            m.name for m in self._search(flt) if m.base == flt.base and (m.name == name or m.name.startswith(prefix))
        }

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
    def from_db_file(cls, db_file: str | Path, *, models_dir: str | Path | None = None) -> ModelRecordServiceBase:
        """Open the store a path names: ``.yaml``/``.yml`` -> YAML file, else SQLite.

        A ``postgresql://`` URL opens the PostgreSQL store. A file of the wrong kind or an
        unknown schema raises ``DatabaseError`` and is left untouched. ``models_dir``: the folder
        relative record paths are relative to.
        """
        from modeldepot.records.file import ModelRecordServiceFile
        from modeldepot.records.sql import ModelRecordServiceSQL

        text = str(db_file)
        if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            return ModelRecordServiceSQL.from_url(text, models_dir=models_dir)
        if Path(text).suffix.lower() in _YAML_SUFFIXES:
            return ModelRecordServiceFile.from_db_file(text, models_dir=models_dir)
        return ModelRecordServiceSQL.from_db_file(text, models_dir=models_dir)

    @classmethod
    def open(
        cls, config: DepotConfig, conn: sqlite3.Connection | None = None, lock: Any = None
    ) -> ModelRecordServiceBase:
        """The store the settings name (the seed doc's web-server entry point).

        ``config.db`` a ``.yaml`` file: the YAML store there. Else, with ``conn`` (and the
        ``lock`` that guards it): the SQL store on that connection; without: the SQLite file or
        PostgreSQL URL ``config.db`` names. Paths are relative to ``config.models_dir``.
        """
        from modeldepot.records.sql import ModelRecordServiceSQL

        url, models_dir = config.db_url, config.models_path
        if conn is not None and Path(url).suffix.lower() not in _YAML_SUFFIXES:
            return ModelRecordServiceSQL.from_connection(conn, lock, models_dir=models_dir)
        return cls.from_db_file(url, models_dir=models_dir)


__all__ = [
    "MIN_KEY_PREFIX",
    "RECORDS_VERSION",
    "ModelRecordServiceBase",
    "RecordFilter",
    "as_changes",
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
