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
from modeldepot.errors import AmbiguousModelException, ConfigurationError, DuplicateModelException
from modeldepot.events import EventBus
from modeldepot.taxonomy import BaseModelType, ModelType, SubModelType

if TYPE_CHECKING:
    from collections.abc import Callable

    from modeldepot.configs import ModelConfigBase
    from modeldepot.download import DownloadQueueService
    from modeldepot.fleet import Fleet
    from modeldepot.hashing import HashCache
    from modeldepot.install import ModelInstallService
    from modeldepot.load import LoadedModel, ModelLoadService
    from modeldepot.records import ModelRecordServiceBase
    from modeldepot.remote.sources import AnyModelSource
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
    def fleet(self) -> Fleet:
        """Fleet mode (``blob_remote`` set): pull, push, evict, status, bucket gc.

        Raises:
            ConfigurationError: ``blob_remote`` is not set.
        """
        fleet = self.services.fleet
        if fleet is None:
            raise ConfigurationError(
                "fleet mode is off: set blob_remote (MODELDEPOT_BLOB_REMOTE=s3://bucket/prefix) and db"
                " (MODELDEPOT_DB=postgresql://...) on every worker; see the README's Fleet section"
            )
        return fleet

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
        """The load service; its ``get_model_by_key`` looks keys up in :attr:`store`."""
        return self.services.load

    # Loading by record -------------------------------------------------------------------
    # ``context`` is InvokeAI's invocation context (any object; see ModelLoadService.load_model).

    def load_model_by_config(
        self,
        config: ModelConfigBase,
        submodel_type: SubModelType | str | None = None,
        context: Any = None,
        *,
        partial: bool = False,
    ) -> LoadedModel:
        """Load ``config`` (or one part of it) through the cache; loads are exact unless ``partial``.

        An unknown ``submodel_type`` is an ``InvalidSubmodelError`` listing the model's parts.
        """
        return self.load.load_model(config, submodel_type, context, partial=partial)

    def load_model_by_key(
        self, key: str, submodel_type: SubModelType | str | None = None, context: Any = None, *, partial: bool = False
    ) -> LoadedModel:
        """Load the model registered under ``key``; ``UnknownModelException`` if there is none."""
        return self.load_model_by_config(self.store.get_model(key), submodel_type, context, partial=partial)

    def load_model_by_attr(
        self,
        model_name: str,
        base_model: BaseModelType | str,
        model_type: ModelType | str,
        submodel: SubModelType | str | None = None,
        context: Any = None,
        *,
        partial: bool = False,
    ) -> LoadedModel:
        """Load the one model with this name, base and type.

        Raises:
            UnknownModelException: no such model.
            AmbiguousModelException (a ``ValueError``): more than one matches equally well.
            LoaderNotFoundError: no loader for its type.
        """
        try:
            config = self.store.model_info_by_name(model_name, BaseModelType(base_model), ModelType(model_type))
        except DuplicateModelException as exc:
            raise AmbiguousModelException(str(exc), key=exc.key) from exc
        return self.load_model_by_config(config, submodel, context, partial=partial)

    # Models that are not registered ----------------------------------------------------------

    def load_local_model(
        self,
        model_path: str | Path,
        loader: Callable[[Path], Any] | None = None,
        *,
        submodel_type: SubModelType | str | None = None,
        context: Any = None,
    ) -> LoadedModel:
        """Load a model file or folder without registering it (seed 002's ``context.load_local_model``).

        Identified and built by the registry's loader (a file no loader handles: its state dict);
        ``loader(path) -> model`` replaces that. Cached by path, re-read when the files change.
        See :meth:`ModelLoadService.load_local_model`.
        """
        return self.load.load_local_model(model_path, loader, submodel_type=submodel_type, context=context)

    def download_and_cache_model(
        self, source: str | AnyModelSource, access_token: str | None = None, timeout: float = 0
    ) -> Path:
        """Download a URL, Hugging Face repo id (``org/name:fp16:vae``, ``org/name::file.safetensors``)
        or Civitai reference into the download cache, unregistered; returns the local file or folder.
        A second call is served from the cache. See ``ModelInstallService.download_and_cache``."""
        return self.install.download_and_cache(source, access_token, timeout)

    def load_remote_model(
        self,
        source: str | AnyModelSource,
        loader: Callable[[Path], Any] | None = None,
        *,
        submodel_type: SubModelType | str | None = None,
        access_token: str | None = None,
        timeout: float = 0,
        context: Any = None,
    ) -> LoadedModel:
        """:meth:`download_and_cache_model`, then :meth:`load_local_model` (seed 002's
        ``context.load_remote_model``)."""
        path = self.download_and_cache_model(source, access_token, timeout)
        return self.load_local_model(path, loader, submodel_type=submodel_type, context=context)

    def close(self) -> None:
        with self._lock:
            install, self._install = self._install, None
        if install is not None:
            install.stop()  # its jobs first: they use the queue and the database
        self.services.close()


__all__ = ["AmbiguousModelException", "ModelManager"]  # the exception lives in errors; kept importable here
