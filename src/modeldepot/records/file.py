"""``ModelRecordServiceFile``: the record store in one human-readable YAML file.

File layout::

    __metadata__:
      format: modeldepot-records     # marker: a YAML file without it is not ours
      version: 1
    models:
      <key>: {name: ..., type: ..., format: ..., base: ..., path: ..., ...}

Every write takes an inter-process file lock (``<file>.lock``), re-reads the file under it (so
records another process added are kept), applies the change and replaces the file atomically
(temp file + fsync + rename). Reads use an in-memory copy, reloaded whenever the file's identity
(inode, size, mtime) changes. A file that does not parse or validate raises ``DatabaseError``
naming the file and the problem, and is never overwritten.

Paths under ``models_dir`` are written relative to it; records are handed out with absolute paths.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from modeldepot._fs import atomic_write_text
from modeldepot.configs import ModelConfigBase, apply_changes, parse_config
from modeldepot.errors import (
    DatabaseError,
    DuplicateModelException,
    InvalidModelConfigException,
    UnknownModelException,
)
from modeldepot.records._paths import ModelPaths
from modeldepot.records.base import (
    ModelRecordServiceBase,
    RecordFilter,
    as_changes,
    key_prefix_upper_bound,
    keyed_config,
    name_taken,
    sort_key,
    to_config,
    with_unique_tags,
)

FORMAT_MARKER = "modeldepot-records"
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 60.0
_SET_FIELDS = ("compatible_bases", "trigger_phrases")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_Signature = tuple[int, int, int, int]
_Records = dict[str, ModelConfigBase]


def _to_yaml(records: _Records) -> str:
    body: dict[str, Any] = {}
    for key in sorted(records):
        data = records[key].model_dump(mode="json")
        del data["key"]
        for name in _SET_FIELDS:
            # Sets dump in arbitrary order; sorting keeps rewrites diff-friendly.
            if isinstance(data.get(name), list):
                data[name] = sorted(data[name])
        body[key] = data
    doc = {"__metadata__": {"format": FORMAT_MARKER, "version": SCHEMA_VERSION}, "models": body}
    header = "# modeldepot model records. Edit with care: this file is rewritten on every change.\n"
    text: str = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return header + text


class ModelRecordServiceFile(ModelRecordServiceBase):
    """Records in a YAML file (``from_db_file("models.yaml")``)."""

    def __init__(self, path: str | Path, *, models_dir: str | Path | None = None) -> None:
        self.path = Path(path).expanduser()
        self._paths = ModelPaths.of(models_dir)
        if self.path.is_dir():
            raise DatabaseError(f"record file {self.path} is a folder, not a file", path=self.path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._mutex = threading.RLock()
        self._records: _Records = {}
        # Sorted keys of ``_records`` (built on first use after each change): prefix lookups
        # are a bisect instead of a scan.
        self._sorted_keys: list[str] | None = None
        self._sorted_for: _Records | None = None
        self._signature: _Signature | None = None
        self._version = SCHEMA_VERSION
        with self._locked():
            self._reload_if_changed()
            if self._signature is None:
                # A new (or empty) file: write the marker now so the file is recognisably ours.
                self._write({})

    @classmethod
    def from_db_file(cls, db_file: str | Path, *, models_dir: str | Path | None = None) -> ModelRecordServiceFile:
        return cls(db_file, models_dir=models_dir)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ---- file plumbing -------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The inter-process write lock, with its failures turned into ``DatabaseError``."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout as exc:
            raise DatabaseError(
                f"record file {self.path} is locked by another process (waited {self._lock.timeout:g}s)",
                path=self.path,
            ) from exc
        except OSError as exc:
            raise DatabaseError(f"cannot lock record file {self.path}: {exc}", path=self.path) from exc
        try:
            yield
        finally:
            self._lock.release()

    def _stat(self) -> _Signature | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _reload_if_changed(self) -> None:
        """Bring the in-memory copy up to date with the file (call with ``_mutex`` held)."""
        sig = self._stat()
        if sig == self._signature and sig is not None:
            return
        if sig is None:
            self._records, self._signature, self._version = {}, None, SCHEMA_VERSION
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatabaseError(f"cannot read record file {self.path}: {exc}", path=self.path) from exc
        records, version = self._parse(text)
        self._records, self._version = records, version
        # The file may have been replaced while we read it; then the next call reloads again.
        self._signature = sig if text.strip() else None

    def _parse(self, text: str) -> tuple[_Records, int]:
        where = f"record file {self.path}"
        if not text.strip():
            return {}, SCHEMA_VERSION
        try:
            doc = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise DatabaseError(f"{where} is not valid YAML: {exc}", path=self.path) from exc
        meta = doc.get("__metadata__") if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_MARKER:
            raise DatabaseError(
                f"{where} is not a modeldepot record file (no '__metadata__: {{format: {FORMAT_MARKER}}}' "
                "marker); refusing to use or overwrite it",
                path=self.path,
            )
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DatabaseError(f"{where}: __metadata__.version must be a positive integer", path=self.path)
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{where} has schema v{version}, newer than this modeldepot knows (v{SCHEMA_VERSION}); "
                "upgrade modeldepot",
                path=self.path,
            )
        body = doc.get("models") or {}
        if not isinstance(body, dict):
            raise DatabaseError(f"{where}: 'models' must be a mapping of key -> record", path=self.path)
        records: _Records = {}
        paths: dict[str, str] = {}
        for key, data in body.items():
            if not isinstance(data, dict):
                raise DatabaseError(f"{where}: record {key!r} must be a mapping", path=self.path)
            if "key" in data and data["key"] != key:
                raise DatabaseError(f"{where}: record {key!r} has a different 'key' inside", path=self.path)
            try:
                cfg = parse_config({**data, "key": str(key)})
            except InvalidModelConfigException as exc:
                raise DatabaseError(f"{where}: record {key!r}: {exc}", path=self.path) from exc
            if cfg.path in paths:
                raise DatabaseError(
                    f"{where}: records {paths[cfg.path]!r} and {key!r} share the path {cfg.path}", path=self.path
                )
            paths[cfg.path] = cfg.key
            records[cfg.key] = cfg
        return records, version

    def _write(self, records: _Records) -> None:
        try:
            atomic_write_text(self.path, _to_yaml(records))
        except OSError as exc:
            raise DatabaseError(f"cannot write record file {self.path}: {exc}", path=self.path) from exc
        self._records = records
        self._version = SCHEMA_VERSION
        self._signature = self._stat()

    def _mutate(self, change: Callable[[_Records], _Records]) -> None:
        """Run ``change`` on the freshest records under both locks, then persist its result."""
        with self._mutex, self._locked():
            self._signature = None  # always re-read under the lock: stat may miss a change
            self._reload_if_changed()
            self._write(change(dict(self._records)))

    def _snapshot(self) -> _Records:
        with self._mutex:
            self._reload_if_changed()
            return self._records

    # ---- writes --------------------------------------------------------------------------------

    def _check_free(self, records: _Records, cfg: ModelConfigBase, *, check_key: bool = True) -> None:
        if check_key and cfg.key in records:
            raise DuplicateModelException(f"a model with key {cfg.key} is already registered", key=cfg.key)
        forms = self._paths.forms(cfg.path)
        for other in records.values():
            if other.path in forms and other.key != cfg.key:
                raise DuplicateModelException(
                    f"path {self._paths.readable(cfg.path)} is already registered as model {other.name!r} "
                    f"(key {other.key})",
                    key=other.key,
                )

    def _out(self, cfg: ModelConfigBase) -> ModelConfigBase:
        """A copy to hand out (records are mutable; the cache must not change behind our back)."""
        return self._readable(cfg.model_copy(deep=True))

    def add_model(self, key: Any = None, config: Any = None) -> ModelConfigBase:
        cfg = self._stored(keyed_config(key, config))

        def change(records: _Records) -> _Records:
            self._check_free(records, cfg)
            records[cfg.key] = cfg.model_copy(deep=True)
            return records

        self._mutate(change)
        return self._out(cfg)

    def add_models(self, configs: Iterable[ModelConfigBase | dict[str, Any]]) -> list[ModelConfigBase]:
        """Add many records in one rewrite: all or none."""
        cfgs = [self._stored(to_config(c)) for c in configs]

        def change(records: _Records) -> _Records:
            for cfg in cfgs:
                self._check_free(records, cfg)
                records[cfg.key] = cfg.model_copy(deep=True)
            return records

        self._mutate(change)
        return [self._out(c) for c in cfgs]

    def update_model(self, key: str, changes: ModelConfigBase | dict[str, Any]) -> ModelConfigBase:
        delta = as_changes(changes)
        result: list[ModelConfigBase] = []

        def change(records: _Records) -> _Records:
            old = records.get(key)
            if old is None:
                raise UnknownModelException(f"unknown model key {key}", key=key)
            new = self._stored(with_unique_tags(apply_changes(old, delta)))
            if new.path != old.path:
                self._check_free(records, new, check_key=False)
            if new.name != old.name:
                for other in records.values():
                    if (other.name, other.base, other.type) == (new.name, new.base, new.type) and other.key != key:
                        raise name_taken(new, other.key)
            records[key] = new
            result.append(new.model_copy(deep=True))
            return records

        self._mutate(change)
        return self._readable(result[0])

    def del_model(self, key: str) -> None:
        def change(records: _Records) -> _Records:
            if records.pop(key, None) is None:
                raise UnknownModelException(f"unknown model key {key}", key=key)
            return records

        self._mutate(change)

    # ---- reads ---------------------------------------------------------------------------------

    def get_model(self, key: str) -> ModelConfigBase:
        found = self._snapshot().get(key)
        if found is None:
            raise UnknownModelException(f"unknown model key {key}", key=key)
        return self._out(found)

    def exists(self, key: str) -> bool:
        return key in self._snapshot()

    def search_by_key_prefix(self, prefix: str, limit: int | None = None) -> list[ModelConfigBase]:
        with self._mutex:
            self._reload_if_changed()
            records = self._records
            if self._sorted_for is not records or self._sorted_keys is None:
                self._sorted_keys, self._sorted_for = sorted(records), records
            keys = self._sorted_keys
        start = bisect.bisect_left(keys, prefix)
        upper = key_prefix_upper_bound(prefix)
        end = len(keys) if upper is None else bisect.bisect_left(keys, upper, lo=start)
        if limit is not None:
            end = min(end, start + max(limit, 0))
        return [self._out(records[k]) for k in keys[start:end]]

    def _matching(self, flt: RecordFilter) -> list[ModelConfigBase]:
        return sorted((c for c in self._snapshot().values() if flt.matches(c)), key=sort_key)

    def _search(self, flt: RecordFilter, offset: int = 0, limit: int | None = None) -> list[ModelConfigBase]:
        found = self._matching(flt)
        end = None if limit is None else offset + limit
        return [self._out(c) for c in found[offset:end]]

    def _count(self, flt: RecordFilter, at_most: int | None = None) -> int:
        n = len(self._matching(flt))
        return n if at_most is None else min(n, at_most)

    def schema_version(self) -> int:
        with self._mutex:
            self._reload_if_changed()
            return self._version


__all__ = ["FORMAT_MARKER", "SCHEMA_VERSION", "ModelRecordServiceFile"]
