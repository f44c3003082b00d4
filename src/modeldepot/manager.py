"""``ModelManager``: the facade that builds every service from one ``DepotConfig``.

Services are built lazily, so ``modeldepot list`` opens the database and nothing else: the
download queue, the content store and the loaders (which import torch) come up on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._compose import open_services
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
    manager or call :meth:`close`. The services come from :func:`modeldepot._compose.open_services`.
    """

    def __init__(self, config: DepotConfig | None = None, *, events: EventBus | None = None) -> None:
        self.config = config if config is not None else DepotConfig.load()
        self.services = open_services(self.config, events=events)
        self.events = self.services.events
        self.db: Database = self.services.db
        self._lock = threading.RLock()
        self._install: ModelInstallService | None = None

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

    @property
    def store(self) -> ModelRecordServiceBase:
        """The model record store (SQLite, PostgreSQL or YAML, from ``config.db``)."""
        return self.services.store

    @property
    def hash_cache(self) -> HashCache:
        return self.services.hash_cache

    @property
    def storage(self) -> ContentStore:
        """The content-addressed store holding every byte of every installed model."""
        return self.services.storage

    @property
    def normalized(self) -> NormalizedStore:
        """The seed's normalized view: pipelines made of shared parts (``import_model``, ``export``...)."""
        return self.services.normalized

    @property
    def downloads(self) -> DownloadQueueService:
        return self.services.downloads

    @property
    def install(self) -> ModelInstallService:
        """Install, register, scan and remove models. Its job runner starts with the first job
        (or an explicit ``start()``), so a command that only reads never takes over jobs."""
        with self._lock:
            if self._install is None:
                from modeldepot.install import ModelInstallService

                self._install = ModelInstallService(self.config, self.store, services=self.services)
            return self._install

    @property
    def load(self) -> ModelLoadService:
        return self.services.load

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
            install, self._install = self._install, None
        if install is not None:
            install.stop()  # its jobs first: they use the queue and the database
        self.services.close()


__all__ = ["ModelManager"]
