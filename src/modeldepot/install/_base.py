"""What the install service's parts (jobs, maintenance) may use of each other: declared once here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase
    from modeldepot.download import DownloadQueueService
    from modeldepot.events import EventBus
    from modeldepot.hashing import HashCache
    from modeldepot.install._jobs import ModelInstallJob
    from modeldepot.install._result import PathResult
    from modeldepot.records import ModelRecordServiceBase
    from modeldepot.storage import ContentStore
    from modeldepot.taxonomy import ModelSourceType


class InstallBase:
    """Attributes and methods ``ModelInstallService`` provides to its mixins."""

    app_config: DepotConfig
    record_store: ModelRecordServiceBase
    event_bus: EventBus
    _db: Database | None
    _hash_cache: HashCache | None
    _downloads: Callable[[], DownloadQueueService | None]
    _storage: Callable[[], ContentStore | None]

    @property
    def db(self) -> Database:
        raise NotImplementedError

    @property
    def storage(self) -> ContentStore:
        raise NotImplementedError

    def register_path(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> str:
        raise NotImplementedError

    def register_path_result(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> PathResult:
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    def unregister(self, key: str) -> None:
        raise NotImplementedError

    # Provided by Maintenance, used by JobRunner.
    def _stored_copy_sound(self, record: ModelConfigBase) -> bool:
        raise NotImplementedError

    # Provided by JobRunner, used by Maintenance.
    def heuristic_import(
        self,
        source: str,
        config: dict[str, Any] | None = None,
        access_token: str | None = None,
        inplace: bool = False,
        *,
        force: bool = False,
    ) -> ModelInstallJob:
        raise NotImplementedError

    def wait_for_job(self, job: ModelInstallJob, timeout: float = 0) -> ModelInstallJob:
        raise NotImplementedError

    def list_jobs(self) -> list[ModelInstallJob]:
        raise NotImplementedError

    def get_job_by_id(self, id: int) -> ModelInstallJob:
        raise NotImplementedError

    def cancel_job(self, job: ModelInstallJob) -> None:
        raise NotImplementedError

    def _staging(self, job_id: int) -> Path:
        raise NotImplementedError

    def _clean_staging(self) -> int:
        raise NotImplementedError

    def _unused(self) -> ModelConfigBase:  # keeps the import used for type checkers
        raise NotImplementedError
