"""The one composition root: which database, record store, content store, hash cache and queue.

``open_services(config)`` decides each of them from the settings, once; ``ModelManager`` and the
InvokeAI-style ``ModelInstallService(config, store, queue, bus)`` constructor both go through it.
Everything but the database and the record store is built on first use, so ``modeldepot list``
opens the database and nothing else (no threads, no torch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.events import EventBus

if TYPE_CHECKING:
    from modeldepot.download import DownloadQueueService
    from modeldepot.fleet import Fleet
    from modeldepot.hashing import HashCache
    from modeldepot.load import ModelLoadService
    from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL
    from modeldepot.storage import ContentStore, NormalizedStore

T = TypeVar("T")
_YAML = (".yaml", ".yml")


class DepotServices:
    """The services of one home, each built once. Build it with :func:`open_services`."""

    def __init__(self, config: DepotConfig, db: Database, store: ModelRecordServiceBase, events: EventBus) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.events = events
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}
        #: What ``close`` stops or closes, newest first; services handed in by a caller stay theirs.
        self._owned: list[Any] = []

    def _get(self, name: str, build: Callable[[], T], *, owned: bool = False) -> T:
        with self._lock:
            if name not in self._built:
                value = build()
                self._built[name] = value
                if owned:
                    self._owned.append(value)
            result: T = self._built[name]
            return result

    def provide(self, name: str, value: Any) -> None:
        """Use a service the caller built (and keeps ownership of) instead of building one."""
        with self._lock:
            self._built[name] = value

    def built(self, name: str) -> bool:
        with self._lock:
            return name in self._built

    @property
    def hash_cache(self) -> HashCache:
        from modeldepot.hashing import HashCache

        return self._get("hash_cache", lambda: HashCache(self.db))

    @property
    def storage(self) -> ContentStore:
        def build() -> ContentStore:
            from modeldepot.storage import ContentStore

            store = ContentStore(self.config, self.db, events=self.events)
            if self.config.blob_remote is not None:
                # Built with the store, so no blob is stored or materialised past the bucket.
                from modeldepot.fleet import open_fleet

                self._built["fleet"] = open_fleet(self.config, self.db, store)
            return store

        return self._get("storage", build)

    @property
    def fleet(self) -> Fleet | None:
        """The fleet (``blob_remote`` is set), else None."""
        if self.config.blob_remote is None:
            return None
        self.storage  # noqa: B018 - builds the fleet with the store
        found: Fleet = self._built["fleet"]
        return found

    @property
    def normalized(self) -> NormalizedStore:
        from modeldepot.storage import NormalizedStore

        def build() -> NormalizedStore:
            from modeldepot.install._local import LocalInstaller
            from modeldepot.load.save_part import save_part

            def importer(path: Path, config: dict[str, Any], move: bool = False) -> str:
                return LocalInstaller(self).install(path, config, move=move).key

            def remover(key: str) -> None:
                LocalInstaller(self).remove(key, delete_files=True)

            return NormalizedStore(
                self.storage,
                self.db,
                records=self.store,
                importer=importer,
                remover=remover,
                part_builder=lambda record, submodel, out: save_part(self.config, record, submodel, out),
            )

        return self._get("normalized", build)

    @property
    def downloads(self) -> DownloadQueueService:
        def build() -> DownloadQueueService:
            from modeldepot.download import DownloadQueueService

            queue = DownloadQueueService(
                max_parallel_dl=self.config.max_parallel_downloads, config=self.config, event_bus=self.events
            )
            queue.start()
            return queue

        return self._get("downloads", build, owned=True)

    @property
    def load(self) -> ModelLoadService:
        def build() -> ModelLoadService:
            from modeldepot.load import ModelLoadService

            fleet = self.fleet
            return ModelLoadService(
                self.config,
                events=self.events,
                record_store=self.store,
                part_of=lambda record, submodel: self.normalized.part_identity(record, submodel),
                before_load=None if fleet is None else lambda record: fleet.ensure_local(record.key, record.path),
            )

        return self._get("load", build)

    def shared_sql_store(self) -> ModelRecordServiceSQL | None:
        """The record store when it lives in this database (a record and its manifest can then be
        written in one transaction); else None (a YAML store, or SQL in another database)."""
        from modeldepot.records import ModelRecordServiceSQL

        store = self.store
        if isinstance(store, ModelRecordServiceSQL) and store.db is self.db:
            return store
        return None

    def own(self, service: Any) -> None:
        """Stop or close ``service`` with the others (newest first)."""
        with self._lock:
            self._owned.append(service)

    def close(self) -> None:
        with self._lock:
            owned, self._owned = self._owned, []
            self._built.clear()
        for service in reversed(owned):
            (service.stop if hasattr(service, "stop") else service.close)()


def open_services(
    config: DepotConfig,
    *,
    events: EventBus | None = None,
    record_store: ModelRecordServiceBase | None = None,
    downloads: DownloadQueueService | None = None,
) -> DepotServices:
    """Build the services of ``config.home``: the database and record store now, the rest lazily.

    ``config.db`` decides the record store: a ``.yaml`` file (records in YAML; manifests, jobs and
    the hash cache in the SQLite file beside it), a SQLite file, or a PostgreSQL URL. A caller
    that already has a record store or a download queue passes it; those stay the caller's to close.
    """
    config.home.mkdir(parents=True, exist_ok=True)
    owned: list[Any] = []
    if record_store is not None:
        db = getattr(record_store, "db", None)
        if not isinstance(db, Database):
            db = Database.open(config.databases_dir / "modeldepot.db")
            owned.append(db)
        store = record_store
    else:
        url = config.db_url
        db = Database.open(config.databases_dir / "modeldepot.db" if url.endswith(_YAML) else url)
        owned.append(db)
        store = _record_store(url, db, config.models_path)
        if hasattr(store, "close"):
            owned.append(store)
    services = DepotServices(config, db, store, events if events is not None else EventBus())
    for item in owned:
        services.own(item)
    if downloads is not None:
        services.provide("downloads", downloads)
    return services


def _record_store(url: str, db: Database, models_dir: Path) -> ModelRecordServiceBase:
    from modeldepot.records import ModelRecordServiceFile, ModelRecordServiceSQL

    # Paths under models_dir are stored relative to it, so the home can move.
    if url.endswith(_YAML):
        return ModelRecordServiceFile.from_db_file(Path(url), models_dir=models_dir)
    return ModelRecordServiceSQL(db, models_dir=models_dir)


__all__ = ["DepotServices", "open_services"]
