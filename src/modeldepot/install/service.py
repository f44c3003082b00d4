"""``ModelInstallService``: from a source to a registered, identified, deduplicated model.

Local sources are handled synchronously here; remote sources (URLs, Hugging Face, Civitai) become
jobs whose downloads run in parallel on the download queue and whose identification, storing and
registration run on one serial worker (see ``_jobs.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.configs import ModelConfigBase
from modeldepot.errors import (
    DuplicateModelException,
    HashingError,
    ModelDepotError,
    ModelNotFoundException,
)
from modeldepot.events import EventBus
from modeldepot.install._checks import check_is_model
from modeldepot.install._locations import forget_model_locations, record_location
from modeldepot.install._maintenance import Maintenance
from modeldepot.install._records import (
    build_record,
    default_name,
    identify_overrides,
    normalise_overrides,
)
from modeldepot.install._result import PathResult
from modeldepot.install._runner import JobRunner
from modeldepot.taxonomy import ModelSourceType

if TYPE_CHECKING:
    from modeldepot.download import DownloadQueueService
    from modeldepot.hashing import HashCache
    from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL
    from modeldepot.storage import ContentStore, StagedModel

log = logging.getLogger(__name__)


def _lazy(value: Any) -> Callable[[], Any]:
    """A getter for a service given as itself, as a zero-argument factory, or None."""
    if value is None or not callable(value) or hasattr(value, "start"):
        return lambda: value
    factory: Callable[[], Any] = value
    return factory


class ModelInstallService(JobRunner, Maintenance):
    """Install, register and remove models. Build it through ``ModelManager.install``."""

    def __init__(
        self,
        app_config: DepotConfig,
        record_store: ModelRecordServiceBase,
        download_queue: DownloadQueueService | Callable[[], DownloadQueueService] | None = None,
        event_bus: EventBus | None = None,
        *,
        storage: ContentStore | Callable[[], ContentStore] | None = None,
        db: Database | None = None,
        hash_cache: HashCache | None = None,
    ) -> None:
        self.app_config = app_config
        self.record_store = record_store
        self.event_bus = event_bus or EventBus()
        self._lock = threading.RLock()
        self._owned: list[Any] = []  # services built here (InvokeAI-style construction), stopped by stop()
        if db is None:
            # Built with only (config, store, queue, bus): manifests, jobs and the hash cache live
            # in the record store's database, or in the depot's SQLite file beside a YAML store.
            db = getattr(record_store, "db", None)
            if not isinstance(db, Database):
                db = Database.open(app_config.databases_dir / "modeldepot.db")
                self._owned.append(db)
        if storage is None:
            from modeldepot.storage import ContentStore as _ContentStore

            storage = _ContentStore(app_config, db, events=self.event_bus)
        if hash_cache is None:
            from modeldepot.hashing import HashCache as _HashCache

            hash_cache = _HashCache(db)
        if download_queue is None:
            download_queue = self._own_queue_factory()
        self._downloads = _lazy(download_queue)
        self._storage = _lazy(storage)
        self._db = db
        self._hash_cache = hash_cache
        self._started = False
        self._init_jobs()

    def _own_queue_factory(self) -> Callable[[], DownloadQueueService]:
        """A download queue built on first use (so an install service that never downloads starts no threads)."""
        built: list[DownloadQueueService] = []

        def get() -> DownloadQueueService:
            with self._lock:
                if not built:
                    from modeldepot.download import DownloadQueueService as _Queue

                    queue = _Queue(
                        max_parallel_dl=self.app_config.max_parallel_downloads,
                        config=self.app_config,
                        event_bus=self.event_bus,
                    )
                    queue.start()
                    built.append(queue)
                    self._owned.append(queue)
                return built[0]

        return get

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the install worker and resume installs a previous process left unfinished."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if self._storage() is not None and self._db is not None:
            self.storage.recover()
        self._start_jobs()
        missing = self.sync_to_config()["missing"]
        if missing:
            log.warning(
                "%d registered model(s) have no files any more (e.g. %s); `modeldepot doctor --fix` forgets them",
                len(missing),
                missing[0]["path"],
            )

    def stop(self) -> None:
        with self._lock:
            was_started, self._started = self._started, False
        if was_started:
            self._stop_jobs()
        for owned in reversed(self._owned):
            (owned.stop if hasattr(owned, "stop") else owned.close)()
        self._owned.clear()

    @property
    def storage(self) -> ContentStore:
        store = self._storage()
        if store is None:
            raise RuntimeError("this install service was built without a content store")
        return store

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("this install service was built without a database")
        return self._db

    # Local registration -------------------------------------------------------------------

    def _hash(self, path: Path) -> str:
        from modeldepot.hashing import ModelHash

        return ModelHash(self.app_config.hashing_algorithm, cache=self._hash_cache).hash(path)

    def _existing_by_hash(self, content_hash: str) -> ModelConfigBase | None:
        found = self.record_store.search_by_hash(content_hash)
        return found[0] if found else None

    def register_path(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> str:
        """Register a file or folder in place (never moved, copied or deleted); returns the key.

        ``config`` holds user overrides (name, base, type, description, tags...): they always win
        over identification and are recorded as such. Content already registered returns that
        model's key (see :meth:`register_path_result` to tell the two apart). Files that are not
        models (a README, a script) are refused unless ``force``.
        """
        return self.register_path_result(model_path, config, force=force).key

    def register_path_result(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> PathResult:
        """:meth:`register_path`, saying whether a record was made or the content was known."""
        from modeldepot.identify import identify

        path = Path(model_path).expanduser()
        if not path.exists():
            raise ModelNotFoundException(f"{path}: no such file or folder", path=path)
        path = path.resolve()
        overrides = normalise_overrides(config)
        existing = self.record_store.search_by_path(path)
        if existing:
            raise DuplicateModelException(
                f"{path} is already registered as {existing[0].name!r} (key {existing[0].key})", key=existing[0].key
            )
        ident = identify(path, identify_overrides(overrides))
        if not force:
            check_is_model(path, ident)
        entries, content_hash = self._hash_inplace(path)
        dup = self._existing_by_hash(content_hash)
        if dup is not None:
            self._on_duplicate(dup, path)
            if self._db is not None:
                record_location(self.db, path, dup.key)
            return PathResult(
                dup.key,
                "already_registered",
                dup.name,
                f"{path.name} is already registered as {dup.name!r} (key {dup.key}); "
                "path recorded as an extra location",
            )
        record = build_record(
            ident,
            path=path,
            name=overrides.pop("name", None) or default_name(path),
            content_hash=content_hash,
            file_size=_size_of(path),
            overrides=overrides,
            source=overrides.pop("source", None) or str(path),
            source_type=ModelSourceType.Path,
            inplace=True,
        )
        self._commit_inplace(record, path, entries)
        log.info("registered %s in place as %s (%s)", path, record.name, record.key)
        return PathResult(
            record.key,
            "registered",
            record.name,
            f"registered {record.name} ({record.base}/{record.type}/{record.format}) key {record.key}",
        )

    def install_path(
        self,
        model_path: str | Path,
        config: dict[str, Any] | None = None,
        *,
        move: bool = False,
        source: str | None = None,
        source_type: ModelSourceType | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
    ) -> str:
        """Install a file or folder into the store (deduplicated, materialised); returns the key.

        ``move=True`` moves the files in when they are on the same file system (no bytes copied),
        else they are copied while hashing in one pass. Content already installed returns the
        existing key (or raises DuplicateModelException when ``on_duplicate`` is ``error``); if
        that model's stored bytes fail verification, the bytes just read replace them. Files that
        are not models are refused unless ``force``.
        """
        return self.install_path_result(
            model_path, config, move=move, source=source, source_type=source_type, metadata=metadata, force=force
        ).key

    def install_path_result(
        self,
        model_path: str | Path,
        config: dict[str, Any] | None = None,
        *,
        move: bool = False,
        source: str | None = None,
        source_type: ModelSourceType | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
    ) -> PathResult:
        """:meth:`install_path`, saying whether a model was installed or the content was known."""
        from modeldepot.identify import identify

        path = Path(model_path).expanduser()
        if not path.exists():
            raise ModelNotFoundException(f"{path}: no such file or folder", path=path)
        path = path.resolve()
        overrides = normalise_overrides(config)
        ident = identify(path, identify_overrides(overrides))
        if not force:
            check_is_model(path, ident)
        remote_base = (metadata or {}).get("base")
        if remote_base and "base" not in overrides and str(ident.base) in ("unknown", "any"):
            # The header could not tell; the remote's declared base is the next best word.
            ident = identify(path, {**identify_overrides(overrides), "base": remote_base})
        # Staging hashes while it copies (one read pass); content already held costs no space
        # because identical blobs are stored once.
        staged = self.storage.stage(path, move=move)
        try:
            return self._install_staged(path, staged, ident, overrides, move, source, source_type, metadata)
        except BaseException:
            self.storage.abandon(staged)  # no-op for blobs a committed model or a duplicate holds
            raise

    def _install_staged(
        self,
        path: Path,
        staged: StagedModel,
        ident: Any,
        overrides: dict[str, Any],
        move: bool,
        source: str | None,
        source_type: ModelSourceType | None,
        metadata: dict[str, Any] | None,
    ) -> PathResult:
        from modeldepot.install._store import destination, record_hash, unique_name, with_fields

        try:
            content_hash = record_hash(staged, self.app_config.hashing_algorithm) or self._hash(path)
        except HashingError as exc:
            if exc.path is not None:
                raise
            raise HashingError(f"{path}: {exc}", path=path) from exc
        dup = self._existing_by_hash(content_hash)
        if dup is not None:
            self.storage.discard(staged)
            try:
                self._on_duplicate(dup, path)
                repaired = self._heal_duplicate(dup, path, staged, move=move)
            finally:
                if move:
                    self.storage.release_sources(staged)  # its bytes are already held by ``dup``
            message = f"{path.name} is already installed as {dup.name!r} (key {dup.key})"
            if repaired:
                message += f"; repaired its stored copy ({'; '.join(repaired)})"
            return PathResult(dup.key, "already_installed", dup.name, message, tuple(repaired))
        name = overrides.pop("name", None) or (metadata or {}).get("name") or default_name(path)
        meta = {k: v for k, v in (metadata or {}).items() if k not in ("name", "base", "type")}
        record = build_record(
            ident,
            path=path,  # replaced by the destination below, once the name is final
            name=str(name),
            content_hash=content_hash,
            file_size=staged.size,
            overrides={**meta, **overrides},
            source=source or str(path),
            source_type=source_type or ModelSourceType.Path,
            inplace=False,
        )
        record = with_fields(record, name=unique_name(self.record_store, record.name, record.base, record.type))
        dest = destination(self.app_config.models_path, record, staged)
        if dest.exists() or self.record_store.search_by_path(dest):
            dest = dest.with_name(f"{dest.stem}-{record.key[:8]}{dest.suffix}")
        record = with_fields(record, path=str(dest))
        self._commit_stored(record, staged, dest)
        try:
            self.storage.materialise(record.key, dest)
        except BaseException:
            # E.g. a full disk while copying (link mode "copy"): no record without its files,
            # and no blob only this failed install wanted. Move-mode sources are still there.
            self._delete(record.key, delete_files=True)
            self.storage.abandon(staged)
            raise
        self.storage.release_sources(staged)  # move mode: the sources go once the model is in place
        log.info("installed %s as %s (%s) at %s", path, record.name, record.key, dest)
        return PathResult(
            record.key,
            "installed",
            record.name,
            f"installed {record.name} ({record.base}/{record.type}/{record.format}) key {record.key}",
        )

    def _heal_duplicate(self, dup: ModelConfigBase, path: Path, staged: StagedModel, *, move: bool) -> list[str]:
        """Installing content that is already installed: make sure the stored copy is sound.

        The installed model is verified (repairing from good copies where possible); blobs that
        still fail are replaced by ingesting ``path`` again (the store now knows they are bad, so
        it does not deduplicate onto them) and the model is rebuilt. Returns what was repaired.
        """
        storage = self.storage
        repaired = [f"replaced damaged blob {d}" for d in staged.healed]
        if dup.inplace or not storage.has_model(dup.key):
            return repaired
        report = storage.verify(key=dup.key, repair=True)
        repaired += report.repaired
        if report.healthy:
            return repaired
        again = storage.stage(path, move=move)  # replaces the blobs the verify marked bad
        storage.discard(again)
        repaired += [f"replaced damaged blob {d}" for d in again.healed]
        left = storage.verify(key=dup.key)
        if not left.ok:
            from modeldepot.storage._verify import problems

            log.error("model %s is still damaged after reinstalling from %s: %s", dup.key, path, problems(left))
        return repaired

    def _shared_sql_store(self) -> ModelRecordServiceSQL | None:
        """The record store when it lives in our database, so a record and its manifest can be
        written in one transaction; else None."""
        from modeldepot.records import ModelRecordServiceSQL

        store = self.record_store
        if isinstance(store, ModelRecordServiceSQL) and self._db is not None and store.db is self._db:
            return store
        return None

    def _commit_stored(self, record: ModelConfigBase, staged: Any, dest: Path) -> None:
        store = self.record_store
        sql = self._shared_sql_store()
        if sql is not None:
            with self.db.begin() as conn:
                self.storage.commit(conn, record.key, staged, dest=dest)
                sql.add_model(record, conn=conn)
        else:
            with self.db.begin() as conn:
                self.storage.commit(conn, record.key, staged, dest=dest)
            try:
                store.add_model(record)
            except BaseException:
                self.storage.delete_model(record.key)
                raise

    def _on_duplicate(self, existing: ModelConfigBase, path: Path) -> str:
        if self.app_config.on_duplicate == "error":
            raise DuplicateModelException(
                f"{path} has the same content as the registered model {existing.name!r} (key {existing.key})",
                key=existing.key,
            )
        log.info("%s has the same content as %s; returning the existing record", path, existing.key)
        return existing.key

    def _hash_inplace(self, path: Path) -> tuple[list[Any] | None, str]:
        """The manifest entries (blake3 per file) and the record hash, in one read of the files.

        With the default blake3 algorithm the record hash is derived from the manifest; other
        algorithms (or a store-less service) hash through ``ModelHash`` and its cache.
        """
        from modeldepot.hashing import composite_hash, normalize_algorithm

        name, prefix = normalize_algorithm(self.app_config.hashing_algorithm)
        if self._storage() is None or name not in ("blake3", "blake3_single"):
            return None, self._hash(path)
        from modeldepot.storage import hash_tree

        kind, entries = hash_tree(path)
        if kind == "file":
            return entries, f"{prefix}:{entries[0].digest}"
        try:
            return entries, composite_hash([(e.relpath, e.digest) for e in entries], prefix)
        except ModelDepotError:
            return entries, self._hash(path)  # no weight files: let ModelHash explain

    def _commit_inplace(self, record: ModelConfigBase, path: Path, entries: list[Any] | None = None) -> None:
        store = self.record_store
        if self._storage() is None or self._db is None:
            store.add_model(record)
        elif (sql := self._shared_sql_store()) is not None:
            # One transaction: a record never exists without its manifest.
            with self.db.begin() as conn:
                self.storage.register_inplace(conn, record.key, path, entries)
                sql.add_model(record, conn=conn)
        else:
            store.add_model(record)
            with self.db.begin() as conn:
                self.storage.register_inplace(conn, record.key, path, entries)

    # Removal ------------------------------------------------------------------------------

    def unregister(self, key: str) -> None:
        """Forget a model's record; its files stay where they are."""
        self.record_store.get_model(key)
        self._delete(key, delete_files=False)

    def delete(self, key: str) -> None:
        """Remove a model. Files are deleted only when the store owns them (not in-place models)."""
        config = self.record_store.get_model(key)
        self._delete(key, delete_files=not config.inplace)

    def unconditionally_delete(self, key: str) -> None:
        """Remove a model and its files, even a user's file registered in place."""
        config = self.record_store.get_model(key)
        self._delete(key, delete_files=True)
        if config.inplace:
            _remove_path(Path(config.path))

    def _delete(self, key: str, delete_files: bool) -> None:
        if self._db is not None:
            forget_model_locations(self.db, key)
        store = self.record_store
        storage = self._storage()
        sql = self._shared_sql_store()
        if sql is not None:
            with self.db.begin() as conn:
                if storage is not None:
                    storage.delete_model(key, conn=conn, delete_files=delete_files)
                sql.del_model(key, conn=conn)
        else:
            if storage is not None and self._db is not None:
                storage.delete_model(key, delete_files=delete_files)
            store.del_model(key)


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove_path(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
