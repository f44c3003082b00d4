"""``ModelManager``: the facade that builds every service from one ``DepotConfig``.

Services are built lazily, so ``modeldepot list`` opens the database and nothing else: the
download queue, the content store and the loaders (which import torch) come up on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._db import Database
from modeldepot.config import DepotConfig
from modeldepot.events import EventBus
from modeldepot.taxonomy import BaseModelType, ModelType, SubModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.download import DownloadQueueService
    from modeldepot.hashing import HashCache
    from modeldepot.install import ModelInstallService
    from modeldepot.load import LoadedModel, ModelLoadService
    from modeldepot.records import ModelRecordServiceBase
    from modeldepot.storage import ContentStore, NormalizedStore


class ModelManager:
    """Records, install, download, storage and load services over one home folder.

    ``ModelManager.open(home=...)`` or ``ModelManager(DepotConfig(...))``; use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, config: DepotConfig | None = None, *, events: EventBus | None = None) -> None:
        self.config = config if config is not None else DepotConfig.load()
        self.events = events if events is not None else EventBus()
        self._lock = threading.RLock()
        self._services: dict[str, Any] = {}
        self.config.home.mkdir(parents=True, exist_ok=True)
        db_url = self.config.db_url
        if db_url.endswith((".yaml", ".yml")):
            # Records live in YAML; manifests, the hash cache and jobs still need SQL beside them.
            self.db = Database.open(self.config.databases_dir / "modeldepot.db")
        else:
            self.db = Database.open(db_url)

    @classmethod
    def open(cls, home: str | Path | None = None, **settings: Any) -> ModelManager:
        """Open the depot at ``home`` (default: MODELDEPOT_HOME / XDG cache), settings as keywords."""
        if home is not None:
            settings["home"] = Path(home)
        return cls(DepotConfig.load(**settings))

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _service(self, name: str, build: Any) -> Any:
        with self._lock:
            if name not in self._services:
                self._services[name] = build()
            return self._services[name]

    @property
    def store(self) -> ModelRecordServiceBase:
        """The model record store (SQLite, PostgreSQL or YAML, from ``config.db``)."""

        def build() -> ModelRecordServiceBase:
            from modeldepot.records import ModelRecordServiceFile, ModelRecordServiceSQL

            if self.config.db_url.endswith((".yaml", ".yml")):
                return ModelRecordServiceFile.from_db_file(Path(self.config.db_url))
            return ModelRecordServiceSQL(self.db)

        result: ModelRecordServiceBase = self._service("store", build)
        return result

    @property
    def hash_cache(self) -> HashCache:
        from modeldepot.hashing import HashCache

        result: HashCache = self._service("hash_cache", lambda: HashCache(self.db))
        return result

    @property
    def storage(self) -> ContentStore:
        """The content-addressed store holding every byte of every installed model."""

        def build() -> ContentStore:
            from modeldepot.storage import ContentStore

            return ContentStore(self.config, self.db, events=self.events)

        result: ContentStore = self._service("storage", build)
        return result

    @property
    def normalized(self) -> NormalizedStore:
        """The seed's normalized view: pipelines made of shared parts (``import_model``, ``export``...)."""

        def build() -> NormalizedStore:
            from modeldepot.storage import NormalizedStore

            return NormalizedStore(self.storage, self.db)

        result: NormalizedStore = self._service("normalized", build)
        return result

    @property
    def downloads(self) -> DownloadQueueService:
        def build() -> DownloadQueueService:
            from modeldepot.download import DownloadQueueService

            queue = DownloadQueueService(
                max_parallel_dl=self.config.max_parallel_downloads, config=self.config, event_bus=self.events
            )
            queue.start()
            return queue

        result: DownloadQueueService = self._service("downloads", build)
        return result

    @property
    def install(self) -> ModelInstallService:
        def build() -> ModelInstallService:
            from modeldepot.install import ModelInstallService

            svc = ModelInstallService(
                self.config,
                self.store,
                download_queue=lambda: self.downloads,
                event_bus=self.events,
                storage=lambda: self.storage,
                db=self.db,
                hash_cache=self.hash_cache,
            )
            svc.start()
            return svc

        result: ModelInstallService = self._service("install", build)
        return result

    @property
    def load(self) -> ModelLoadService:
        def build() -> ModelLoadService:
            from modeldepot.load import ModelLoadService

            return ModelLoadService(self.config, events=self.events)

        result: ModelLoadService = self._service("load", build)
        return result

    # Loading by record -------------------------------------------------------------------

    def load_model_by_config(
        self, config: ModelConfigBase, submodel_type: SubModelType | str | None = None, *, partial: bool = False
    ) -> LoadedModel:
        """Load ``config`` (or one part of it) through the cache; loads are exact unless ``partial``.

        An unknown ``submodel_type`` is an ``InvalidSubmodelError`` listing the model's parts.
        """
        return self.load.load_model(config, submodel_type, partial=partial)

    def load_model_by_key(
        self, key: str, submodel_type: SubModelType | str | None = None, *, partial: bool = False
    ) -> LoadedModel:
        return self.load_model_by_config(self.store.get_model(key), submodel_type, partial=partial)

    def load_model_by_attr(
        self,
        model_name: str,
        base_model: BaseModelType | str,
        model_type: ModelType | str,
        submodel: SubModelType | str | None = None,
        *,
        partial: bool = False,
    ) -> LoadedModel:
        config = self.store.model_info_by_name(model_name, BaseModelType(base_model), ModelType(model_type))
        return self.load_model_by_config(config, submodel, partial=partial)

    def close(self) -> None:
        with self._lock:
            services = self._services
            self._services = {}
        for name in ("install", "downloads"):
            svc = services.get(name)
            if svc is not None:
                svc.stop()
        store = services.get("store")
        if store is not None and hasattr(store, "close"):
            store.close()
        self.db.close()


__all__ = ["ModelManager"]
