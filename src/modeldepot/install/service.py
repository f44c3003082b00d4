"""``ModelInstallService``: the install contract (InvokeAI's names) over three parts, composed:

- :class:`~modeldepot.install._local.LocalInstaller` registers and installs local files;
- :class:`~modeldepot.install._runner.JobRunner` sequences and persists jobs (plan, fetch, then the
  local installer), safely when several processes share a home;
- ``_maintenance`` functions scan, re-identify, repair and look up models.

The services underneath come from the one composition root, :func:`modeldepot._compose.open_services`.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._compose import DepotServices, open_services
from modeldepot._fs import remove_any
from modeldepot.config import DepotConfig
from modeldepot.errors import ModelDepotError
from modeldepot.events import EventBus
from modeldepot.install import _maintenance as maintenance
from modeldepot.install._jobs import ModelInstallJob
from modeldepot.install._jobtable import JobRow, JobTable
from modeldepot.install._local import LocalInstaller
from modeldepot.install._result import PathResult
from modeldepot.install._runner import JobRunner, staging_folders
from modeldepot.remote.sources import AnyModelSource, parse_source
from modeldepot.taxonomy import ModelSourceType

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.configs import ModelConfigBase
    from modeldepot.download import DownloadQueueService
    from modeldepot.records import ModelRecordServiceBase
    from modeldepot.storage import ContentStore, VerifyReport

log = logging.getLogger(__name__)


class ModelInstallService:
    """Install, register and remove models. ``ModelManager.install`` builds one; the InvokeAI-style
    ``ModelInstallService(app_config, record_store, download_queue, event_bus)`` works too (the
    other services are then built from ``app_config`` and closed by :meth:`stop`)."""

    def __init__(
        self,
        app_config: DepotConfig,
        record_store: ModelRecordServiceBase,
        download_queue: DownloadQueueService | None = None,
        event_bus: EventBus | None = None,
        *,
        services: DepotServices | None = None,
    ) -> None:
        self._own_services = services is None
        if services is None:
            services = open_services(app_config, events=event_bus, record_store=record_store, downloads=download_queue)
        self.services = services
        self.app_config = app_config
        self.record_store = record_store
        self.event_bus = services.events
        self.installer = LocalInstaller(services)
        self.runner = JobRunner(services, self.installer)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self, *, watch: bool = False) -> None:
        """Finish interrupted store operations, start the job runner and resume jobs no live
        process runs. Installing a remote source starts it too; ``watch`` (a server) keeps
        taking jobs queued by ``install --no-wait``."""
        if not self.runner.started:
            self.storage.recover()
        self.runner.start(watch=watch)
        missing = maintenance.missing_models(self.services)
        if missing:
            log.warning(
                "%d registered model(s) have no files any more (e.g. %s); `modeldepot doctor --fix` forgets them",
                len(missing),
                missing[0]["path"],
            )

    def stop(self) -> None:
        self.runner.stop()
        if self._own_services:
            self.services.close()

    @property
    def storage(self) -> ContentStore:
        return self.services.storage

    @property
    def db(self) -> Database:
        return self.services.db

    # Jobs ---------------------------------------------------------------------------------

    def heuristic_import(
        self,
        source: str,
        config: dict[str, Any] | None = None,
        access_token: str | None = None,
        inplace: bool = False,
        *,
        force: bool = False,
    ) -> ModelInstallJob:
        """Install from a source string: a path, URL, Hugging Face repo id or Civitai reference.

        ``force`` installs even a file that is not a model (a README, a script); also accepted
        as ``config["force"]``.
        """
        parsed = parse_source(source, config=self.app_config, access_token=access_token)
        if force:
            config = {**(config or {}), "force": True}
        return self.import_model(parsed, config, inplace)

    def import_model(
        self, source: AnyModelSource, config: dict[str, Any] | None = None, inplace: bool = False
    ) -> ModelInstallJob:
        """Install from a typed source; returns the job at once (see ``wait_for_job``).

        Starts the service if needed. The same source asked for again while it installs (here
        or in another process sharing the home) is the same job.
        """
        if not self.runner.started:
            self.start()
        return self.runner.submit(source, config, inplace or bool(getattr(source, "inplace", False)))

    def install_model(
        self, source: AnyModelSource, config: dict[str, Any] | None = None, inplace: bool = False
    ) -> ModelInstallJob:
        """Document 002's example spelling (``installer.install_model(source)``) of :meth:`import_model`."""
        return self.import_model(source, config, inplace)

    def enqueue(
        self, source: str, config: dict[str, Any] | None = None, inplace: bool = False
    ) -> tuple[JobRow, list[str]]:
        """Record a job without running it here (``install --no-wait``); returns the job's row and
        the live servers that will run it (none: the next ``serve`` or ``install`` does)."""
        parsed = parse_source(source, config=self.app_config)
        return self.runner.enqueue(parsed, config, inplace)

    def list_jobs(self) -> list[ModelInstallJob]:
        return self.runner.list_jobs()

    def get_job_by_id(self, id: int) -> ModelInstallJob:
        return self.runner.get_job(id)

    def get_job_by_source(self, source: Any) -> list[ModelInstallJob]:
        wanted = str(source)
        if isinstance(source, str):
            try:
                wanted = str(parse_source(source, config=self.app_config))
            except ModelDepotError:
                pass
        return [j for j in self.list_jobs() if j.source == wanted]

    def wait_for_job(self, job: ModelInstallJob, timeout: float = 0) -> ModelInstallJob:
        """Block until the job ends (``timeout`` seconds, 0 = forever); raises TimeoutError."""
        if not job._done.wait(timeout or None):
            raise TimeoutError(f"install job {job.id} ({job.source}) did not finish within {timeout} s")
        return job

    def wait_for_installs(self, timeout: float = 0) -> list[ModelInstallJob]:
        """Block until every job of this process has ended; returns them."""
        return self.runner.wait_for_installs(timeout)

    def cancel_job(self, job: ModelInstallJob) -> None:
        self.runner.cancel(job)

    def pause_job(self, job: ModelInstallJob) -> None:
        """Pause a job's downloads; the partial files stay for ``resume_job``."""
        self.runner.pause(job)

    def resume_job(self, job: ModelInstallJob) -> None:
        """Continue a paused job's downloads from the bytes already on disk."""
        self.runner.resume(job)

    def prune_jobs(self) -> None:
        """Forget finished jobs."""
        self.runner.prune()

    def persisted_jobs(self) -> list[dict[str, Any]]:
        """Every recorded install job (all processes), with the live status of this process's."""
        live = {j.id: j.status.value for j in self.list_jobs()}
        return [{**row, "status": live.get(row["id"], row["status"])} for row in persisted_jobs(self.db)]

    def cancel_persisted(self, job_id: int) -> str:
        """Cancel a job by id, wherever it runs; returns the status it had before (an ended job
        is left as it was)."""
        return self.runner.cancel_by_id(job_id)

    # Local models -------------------------------------------------------------------------

    def register_path(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> str:
        """Register a file or folder in place (never moved, copied or deleted); returns the key.

        ``config`` holds user overrides (name, base, type, description, tags...): they always win
        over identification. Content already registered returns that model's key (see
        :meth:`register_path_result` to tell the two apart). Files that are not models (a README,
        a script) are refused unless ``force``.
        """
        return self.installer.register(model_path, config, force=force).key

    def register_path_result(
        self, model_path: str | Path, config: dict[str, Any] | None = None, *, force: bool = False
    ) -> PathResult:
        """:meth:`register_path`, saying whether a record was made or the content was known."""
        return self.installer.register(model_path, config, force=force)

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
        return self.installer.install(
            model_path, config, move=move, source=source, source_type=source_type, metadata=metadata, force=force
        )

    def unregister(self, key: str) -> None:
        """Forget a model's record; its files stay where they are."""
        self.record_store.get_model(key)
        self.installer.remove(key, delete_files=False)

    def delete(self, key: str) -> None:
        """Remove a model. Files are deleted only when the store owns them (not in-place models)."""
        config = self.record_store.get_model(key)
        self.installer.remove(key, delete_files=not config.inplace)

    def unconditionally_delete(self, key: str) -> None:
        """Remove a model and its files, even a user's file registered in place."""
        config = self.record_store.get_model(key)
        self.installer.remove(key, delete_files=True)
        if config.inplace:
            remove_any(Path(config.path))  # the user asked: their own files too

    # Maintenance --------------------------------------------------------------------------

    def scan_folder(self, folder: str | Path) -> list[dict[str, Any]]:
        """What model files are under ``folder`` and whether each is registered."""
        return maintenance.scan_folder(self.services, folder)

    def scan_and_register(self, folder: str | Path, inplace: bool = True) -> list[dict[str, Any]]:
        """Register (in place) or install every model under ``folder``; one result per model."""
        return maintenance.scan_and_register(self.installer, folder, inplace)

    def reidentify(self, key: str) -> ModelConfigBase:
        """Identify a model's files again and update what identification decides in its record."""
        return maintenance.reidentify(self.services, key)

    def repair_storage(self, key: str | None = None) -> VerifyReport:
        """Verify and repair the store, fetching again what no good copy can restore."""
        return maintenance.repair_storage(self.installer, self._reinstall, key)

    def _reinstall(self, source: str) -> str | None:
        job = self.wait_for_job(self.heuristic_import(source))
        return None if job.complete else (job.error or job.status.value)

    def civitai_lookup(self, key: str, apply: bool = True) -> dict[str, Any]:
        """Look a registered file up on Civitai by its SHA256 and (optionally) fill its metadata."""
        return maintenance.civitai_lookup(self.services, key, apply)

    def download_and_cache(
        self, source: str | AnyModelSource, access_token: str | None = None, timeout: float = 0
    ) -> Path:
        """Download a URL, Civitai reference or Hugging Face repo id (``org/name``, ``org/name:fp16``,
        ``org/name:fp16:vae``, ``org/name::vae``, ``org/name::file.safetensors``) into a size-capped
        LRU cache, unregistered; returns the file (one file) or folder. Cached sources are not fetched
        again; ``timeout`` (seconds, 0 = none) raises TimeoutError."""
        return maintenance.download_and_cache(self.services, source, access_token, timeout)

    def sync_to_config(self, prune_missing: bool = False) -> dict[str, Any]:
        """Report records whose files vanished (forget them with ``prune_missing``), remove staging
        leftovers no live job uses, and count unfinished jobs. Takes over no job."""
        missing = maintenance.missing_models(self.services)
        if prune_missing:
            for item in missing:
                self.unregister(item["key"])
        rows = self.runner.table.rows()
        return {
            "missing": missing,
            "cleaned": self.runner.clean_staging(),
            "resumed": sum(1 for j in self.list_jobs() if not j.in_terminal_state),
            "unfinished": sum(1 for r in rows if not r.ended),
        }


def persisted_jobs(db: Database) -> list[dict[str, Any]]:
    """The install jobs recorded in the database (every process's), read without starting anything."""
    return [row.public() for row in JobTable(db).rows()]


def cancel_persisted_job(db: Database, config: DepotConfig, job_id: int) -> str:
    """Mark a recorded job cancelled wherever it runs; returns its status before.

    Raises:
        UnknownJobIDException: no job with that id was ever recorded.
    """
    table = JobTable(db)
    row = table.get(job_id)
    before = table.cancel(job_id)
    if row.takeable(time.time()):
        # No live process runs it (a live owner removes its own staging when it sees the cancel).
        for folder in staging_folders(config.tmp_dir / "install", job_id):
            shutil.rmtree(folder, ignore_errors=True)
    return before
