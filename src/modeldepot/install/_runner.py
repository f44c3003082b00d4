"""Running install jobs: sequence each one (plan -> fetch -> ingest/record/materialise) and
keep its row in ``install_jobs`` true, in a home that several processes may share.

Downloads run in parallel on the download queue; ingest, record and materialise run on one
serial worker thread per process (the record step also takes a lock across processes). A job is
owned by the process that runs it (see ``_jobtable``): a heartbeat renews its lease; a process that
asks for a source another live process is installing follows that job instead of starting a
second one, and takes it over (resuming its partial download) if the owner dies.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.download import ConnectPolicy
from modeldepot.download._redact import redact_url
from modeldepot.errors import ModelDepotError, UnknownJobIDException
from modeldepot.install._checks import check_looks_like_model
from modeldepot.install._handoff import Handoff
from modeldepot.install._jobs import InstallStatus, ModelInstallJob
from modeldepot.install._jobtable import JobRow, JobTable, Owner, owner_gone, owner_pid
from modeldepot.install._local import LocalInstaller
from modeldepot.install._maintenance import start_plan_download
from modeldepot.remote.plan import DownloadPlan, plan_download
from modeldepot.remote.sources import (
    AnyModelSource,
    CivitaiModelSource,
    HFModelSource,
    LocalModelSource,
    URLModelSource,
    parse_source,
)

if TYPE_CHECKING:
    from modeldepot._compose import DepotServices
    from modeldepot.configs import ModelConfigBase

log = logging.getLogger(__name__)
_STOP = object()


def staging_folders(root: Path, job_id: int) -> list[Path]:
    """Every owner's staging folder of a job (``<id>`` alone: a job recorded before jobs had owners)."""
    if not root.is_dir():
        return []
    return [p for p in (*sorted(root.glob(f"{job_id}-*")), root / str(job_id)) if p.exists()]


class JobRunner:
    """Install jobs of this process: submitted, followed, resumed, persisted."""

    def __init__(self, services: DepotServices, installer: LocalInstaller) -> None:
        self.services = services
        self.config = services.config
        self.installer = installer
        self.table = JobTable(services.db)  # creates the tables: a job can be asked for at once
        self.owner = Owner.this_process()
        self._jobs: dict[int, ModelInstallJob] = {}
        self._lock = threading.RLock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._watching = False

    @property
    def lease(self) -> float:
        return float(self.config.install_lease_seconds)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self, *, watch: bool = False) -> None:
        """Start the worker and the heartbeat, and take over jobs no live process runs.

        ``watch`` (a server): keep taking jobs that appear with no owner (``install --no-wait``).
        """
        if watch:
            # Said at once, not at the first heartbeat: a `--no-wait` right after the server
            # started must already see it.
            self.table.watch(self.owner, self.lease)
        with self._lock:
            if self._started:
                self._watching = self._watching or watch
                return
            self._started, self._watching = True, watch
            self._stopping.clear()
        for target, name in ((self._work, "modeldepot-install"), (self._beat, "modeldepot-install-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.clean_staging()
        self._adopt_orphans()

    def stop(self) -> None:
        """Stop; unfinished jobs are released at once (another process may resume them)."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._stopping.set()
        self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self._pause_downloads()  # before the release: whoever takes a job over resumes our files
        with contextlib.suppress(ModelDepotError):
            self.table.release(self.owner)
            self.table.unwatch(self.owner)

    def _pause_downloads(self) -> None:
        if not self.services.built("downloads"):
            return
        downloads = self.services.downloads
        running = [j._download for j in self.list_jobs() if j._download is not None and not j._following]
        for download in running:
            if not download.in_terminal_state:
                downloads.pause_job(download)
        for download in running:
            with contextlib.suppress(TimeoutError):
                downloads.wait_for_job(download, timeout=30)

    @property
    def started(self) -> bool:
        return self._started

    # Staging ------------------------------------------------------------------------------

    @property
    def _staging_root(self) -> Path:
        return self.config.tmp_dir / "install"

    def staging(self, job_id: int) -> Path:
        """This process's staging folder for a job: per job and per owner."""
        return self._staging_root / f"{job_id}-{self.owner.token}"

    def _adopt_staging(self, job_id: int, previous_owner: str | None) -> None:
        """Taking a job over: the previous owner's partial download becomes ours (it resumes) when
        that process stopped cleanly or is dead. One that is alive but silent (frozen, or its lease
        lapsed) may still write there, so the download then starts afresh in our own folder."""
        mine = self.staging(job_id)
        if previous_owner is not None and previous_owner != self.owner.id and not owner_gone(previous_owner):
            return
        for other in staging_folders(self._staging_root, job_id):
            if other == mine:
                continue
            if not mine.exists():
                with contextlib.suppress(OSError):
                    other.rename(mine)
                    continue
            shutil.rmtree(other, ignore_errors=True)

    def clean_staging(self) -> int:
        """Remove staging folders no unfinished job's live owner uses; returns how many."""
        root = self._staging_root
        if not root.is_dir():
            return 0
        rows = {r.id: r for r in self.table.rows()}
        now, removed = time.time(), 0
        for child in root.iterdir():
            id_text, _, token = child.name.partition("-")
            row = rows.get(int(id_text)) if id_text.isdigit() else None
            in_use = row is not None and (row.takeable(now) or (row.owner or "").endswith(f":{token}"))
            if row is not None and not row.ended and in_use:
                continue  # in use, or left for whoever resumes it
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
        return removed

    # Submitting ---------------------------------------------------------------------------

    def submit(self, source: AnyModelSource, config: dict[str, Any] | None, inplace: bool) -> ModelInstallJob:
        """The job installing ``source``: a new one, the one already running (here or in another
        process, which is then followed), or an interrupted one taken over."""
        if not self._started:
            self.start()
        if not isinstance(source, LocalModelSource):
            self._check_remote_allowed(source)
        canonical = str(source)
        with self._lock:
            for job in self._jobs.values():
                if job.source == canonical and not job.in_terminal_state:
                    return job  # the same source twice at once is one job, not two copies
        row, created = self.table.open_job(canonical, inplace, dict(config or {}), self.owner, self.lease)
        if created:
            return self._run(self._new_job(row, source))
        claimed = self.table.claim(row.id, self.owner, self.lease)
        if claimed is not None:
            log.info("taking over install job %s (%s)", row.id, row.source)
            return self._run(self._new_job(claimed, source), row.owner)
        job = self._new_job(row, source)
        job.notes.append(f"being installed by another process (pid {owner_pid(row.owner)}); waiting for it")
        job._following = True
        self._register(job)
        self._spawn(self._follow, job)
        return job

    def enqueue(self, source: AnyModelSource, config: dict[str, Any] | None, inplace: bool) -> tuple[JobRow, list[str]]:
        """Record a job for another process to run (``install --no-wait``); returns it and the live
        servers that will take it (empty: it waits for the next ``serve`` or ``install``)."""
        if not isinstance(source, LocalModelSource):
            self._check_remote_allowed(source)
        row, _created = self.table.open_job(str(source), inplace, dict(config or {}), None, self.lease)
        return row, self.table.watchers()

    def _check_remote_allowed(self, source: AnyModelSource) -> None:
        """Refuse a source on a private address before any job exists (403 in the API).

        A preflight only: every connection of the download is checked and pinned again by the
        download layer, so a lookup that fails here is left for the job to report.
        """
        url = None
        if isinstance(source, URLModelSource):
            url = source.url
        elif isinstance(source, HFModelSource):
            url = self.config.hf_endpoint
        elif isinstance(source, CivitaiModelSource):
            url = self.config.civitai_endpoint
        if url is not None:
            with contextlib.suppress(OSError):
                ConnectPolicy.from_config(self.config).check_url(url, redact_url(url))

    def _new_job(self, row: JobRow, source: AnyModelSource) -> ModelInstallJob:
        job = ModelInstallJob(
            id=row.id,
            source=row.source,
            source_type=str(source.type),
            config_in=dict(row.config_in),
            inplace=row.inplace,
            bytes=row.bytes,
            total_bytes=row.total_bytes,
        )
        job._source_obj = source
        job._access_token = getattr(source, "access_token", None)
        return job

    def _register(self, job: ModelInstallJob) -> None:
        with self._lock:
            self._jobs[job.id] = job
        self._emit(job, "model_install_waiting")

    def _spawn(self, target: Any, job: ModelInstallJob) -> None:
        threading.Thread(target=target, args=(job,), name=f"install-{job.id}", daemon=True).start()

    def _run(self, job: ModelInstallJob, previous_owner: str | None = None) -> ModelInstallJob:
        """Run a job this process owns (taken from ``previous_owner``, if it had one)."""
        self._register(job)
        self._adopt_staging(job.id, previous_owner)
        source = job._source_obj
        if isinstance(source, LocalModelSource):
            job.local_path = Path(source.path)
            self._queue.put(job)
            return job
        existing = self._installed_from(job.source)
        shared = self._in_fleet_from(job.source) if existing is None else None
        if existing is not None:
            # Installing the same remote source again: nothing to download, unless the stored
            # copy fails verification (checked off the caller's thread: it reads every byte).
            self._spawn(lambda j: self._reinstall_if_damaged(j, existing), job)
        elif shared is not None:
            self._spawn(lambda j: self._pull_from_fleet(j, shared, persist=True), job)
        else:
            self._spawn(self._fetch, job)
        return job

    def _adopt_orphans(self) -> None:
        """Jobs no live process runs (interrupted, or queued with --no-wait) are taken and resumed."""
        for row in self.table.takeable():
            with self._lock:
                if row.id in self._jobs and not self._jobs[row.id].in_terminal_state:
                    continue
            try:
                source = parse_source(row.source, config=self.config)
            except ModelDepotError as exc:
                if self.table.claim(row.id, self.owner, self.lease) is not None:
                    self.table.finish(row.id, self.owner, "error", error=f"cannot resume: {exc}")
                log.warning("cannot resume install job %s (%s): %s", row.id, row.source, exc)
                continue
            claimed = self.table.claim(row.id, self.owner, self.lease)
            if claimed is not None:
                log.info("resuming install job %s (%s)", row.id, row.source)
                self._run(self._new_job(claimed, source), row.owner)

    def _installed_from(self, source: str) -> ModelConfigBase | None:
        for record in self.services.store.search_models(q=source):
            if record.source == source and Path(record.path).exists():
                return record
        return None

    def _in_fleet_from(self, source: str) -> ModelConfigBase | None:
        """A stored record of ``source`` in the fleet whose files are not here (another worker
        installed it, or this one evicted it): its blobs are in the bucket."""
        if self.config.blob_remote is None:
            return None
        storage = self.services.storage
        for record in self.services.store.search_models(q=source):
            if record.source == source and storage.has_model(record.key) and not storage.manifest(record.key).inplace:
                return record
        return None

    def _pull_from_fleet(self, job: ModelInstallJob, record: ModelConfigBase, *, persist: bool) -> None:
        """Finish ``job`` with the fleet's copy of ``record``: blobs from the bucket, no download.
        ``persist``: the job's row is ours to end (not one another worker already ended)."""
        fleet = self.services.fleet
        assert fleet is not None
        job.status = InstallStatus.RUNNING
        if persist:
            self._set_status(job)
        self._emit(job, "model_install_running")
        try:
            result = fleet.pull(record.key)
        except Exception as exc:
            self._fail(job, exc, persist=persist)
            return
        job.config_out = record
        job.outcome = "pulled"
        job.bytes = job.total_bytes = result.bytes
        job.notes.append(f"{result.message} ({fleet.tier.url}); nothing downloaded from the source")
        self._finish(job, InstallStatus.COMPLETED, "model_install_completed", persist=persist)

    def _reinstall_if_damaged(self, job: ModelInstallJob, existing: ModelConfigBase) -> None:
        try:
            sound = self.installer.stored_copy_sound(existing)
        except Exception as exc:
            self._fail(job, exc)
            return
        if not sound:
            # The fresh download replaces the damaged blobs (the verify marked them bad).
            job.notes.append(f"re-downloading: the installed copy of {existing.name!r} failed verification")
            self._fetch(job)
            return
        job.config_out = existing
        job.outcome = "already_installed"
        job.notes.append(f"already installed as {existing.name!r} (key {existing.key})")
        self._finish(job, InstallStatus.COMPLETED, "model_install_completed")

    # Following a job another process runs -------------------------------------------------

    def _follow(self, job: ModelInstallJob) -> None:
        """Mirror another process's job from its row until it ends; take it over if its owner dies."""
        interval = min(0.5, self.lease / 6)
        while not self._stopping.wait(interval):
            try:
                row = self.table.get(job.id)
            except ModelDepotError as exc:
                self._fail(job, exc)
                return
            if row.ended:
                self._end_followed(job, row)
                return
            if row.takeable(time.time()):
                claimed = self.table.claim(job.id, self.owner, self.lease)
                if claimed is not None:
                    log.info("install job %s lost its process; resuming it here", job.id)
                    job.notes.append("its process stopped; resumed here")
                    with self._lock:
                        self._jobs.pop(job.id, None)
                    job._following = False
                    self._run(job, row.owner)
                    return
            changed = (row.bytes, row.total_bytes, row.status) != (job.bytes, job.total_bytes, job.status.value)
            job.bytes, job.total_bytes = row.bytes, row.total_bytes
            with contextlib.suppress(ValueError):
                job.status = InstallStatus(row.status)
            if changed:
                self._emit(job, "model_install_downloading" if job.downloading else f"model_install_{job.status.value}")

    def _end_followed(self, job: ModelInstallJob, row: JobRow) -> None:
        if row.status == "completed" and row.model_key:
            try:
                job.config_out = self.services.store.get_model(row.model_key)
            except ModelDepotError as exc:
                self._fail(job, exc, persist=False)
                return
            if self._in_fleet_from(row.source) is not None and not Path(job.config_out.path).exists():
                # Another worker downloaded it: this one takes the blobs from the bucket.
                self._pull_from_fleet(job, job.config_out, persist=False)
                return
            job.outcome = "installed"
            job.notes.append(f"installed by another process as {job.config_out.name!r} (key {row.model_key})")
            self._finish(job, InstallStatus.COMPLETED, "model_install_completed", persist=False)
        elif row.status == "cancelled":
            self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled", persist=False)
        else:
            self._fail(
                job, ModelDepotError(row.error or f"install job {job.id} failed in another process"), persist=False
            )

    # Fetch --------------------------------------------------------------------------------

    def _fetch(self, job: ModelInstallJob) -> None:
        try:
            fleet = self.services.fleet
            if fleet is not None:
                fleet.check()  # a bucket we cannot use fails the job before the download, not after
            plan = plan_download(self.config, job._source_obj, self.staging(job.id))
        except Exception as exc:
            self._fail(job, exc)
            return
        job._metadata = plan.metadata
        job.notes.extend(plan.notes)
        if plan.chosen_variant is not None:
            job.variant = str(plan.chosen_variant)
            job.variant_reason = plan.variant_reason
            job.notes.append(plan.variant_reason or f"variant {job.variant}")
        job.total_bytes = plan.total_bytes
        job.local_path = plan.dest  # where it downloads to (the events' local_path) until it is done
        with self._lock:
            if job.in_terminal_state:
                return  # cancelled while the plan was being made
            job.status = InstallStatus.DOWNLOADING
        self._set_status(job)
        try:
            self._start_download(job, plan)
        except Exception as exc:
            self._fail(job, exc)

    def _start_download(self, job: ModelInstallJob, plan: DownloadPlan) -> None:
        handlers: dict[str, Any] = {
            "on_start": lambda dj: self._on_download_progress(job, dj),
            "on_progress": lambda dj: self._on_download_progress(job, dj),
            "on_complete": lambda dj: self._on_download_complete(job, dj, plan.model_subpath),
            "on_error": lambda dj, exc: self._fail(job, exc or RuntimeError(dj.error or "download failed")),
            "on_cancelled": lambda dj: self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled"),
            "on_paused": lambda dj: self._on_download_paused(job),
        }
        token = job._access_token.get_secret_value() if job._access_token is not None else plan.token
        job._handoff = Handoff()
        job._download = start_plan_download(self.services.downloads, plan, token, job._handoff, **handlers)

    def _on_download_progress(self, job: ModelInstallJob, dj: Any) -> None:
        if job.in_terminal_state:
            return
        job.status = InstallStatus.DOWNLOADING
        job.bytes = dj.bytes
        job.total_bytes = max(dj.total_bytes, job.total_bytes)
        job.speed = dj.speed
        parts = getattr(dj, "download_parts", None) or [dj]
        # Seed 002's part keys (source, local_path, bytes, total_bytes) beside the display "path".
        job.parts = [
            {
                "source": p.source,  # the file's URL, secrets already redacted by the download job
                "local_path": str(p.download_path or p.dest),
                "path": str(Path(p.download_path).name if p.download_path else p.dest),
                "bytes": p.bytes,
                "total_bytes": p.total_bytes,
                "status": p.status.value,
            }
            for p in parts
        ]
        self._emit(job, "model_install_downloading")

    def _on_download_paused(self, job: ModelInstallJob) -> None:
        if not job.in_terminal_state and not self._stopping.is_set():
            job.status = InstallStatus.PAUSED
            self._emit(job, "model_install_paused")

    def _on_download_complete(self, job: ModelInstallJob, dj: Any, subpath: str | None) -> None:
        if getattr(dj, "download_parts", None) is None:
            job.local_path = Path(dj.download_path)
        else:
            job.local_path = Path(dj.dest) / subpath if subpath else Path(dj.dest)
        if job._handoff is not None:
            job._received = job._handoff.received(getattr(dj, "download_parts", None) or [dj])
        job.bytes = dj.bytes
        job.status = InstallStatus.DOWNLOADS_DONE
        self._set_status(job)
        self._emit(job, "model_install_downloads_done")
        self._queue.put(job)

    # Ingest, record, materialise: the serial worker ---------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if job.in_terminal_state or self._stopping.is_set():
                continue
            try:
                self._install(job)
            except Exception as exc:
                self._fail(job, exc)

    def _install(self, job: ModelInstallJob) -> None:
        job.status = InstallStatus.RUNNING
        self._set_status(job)
        self._emit(job, "model_install_running")
        assert job.local_path is not None
        config = dict(job.config_in)
        force = bool(config.pop("force", False))
        source = job._source_obj
        if isinstance(source, LocalModelSource):
            install = self.installer.register if job.inplace else self.installer.install
            result = install(job.local_path, config, force=force)
        else:
            check_looks_like_model(job.local_path)
            result = self.installer.install(
                job.local_path,
                config,
                move=True,
                source=job.source,
                source_type=source.type,
                metadata=job._metadata,
                force=force,
                received=job._received,
            )
        job.outcome = result.outcome
        if not result.created:
            job.notes.append(result.message)
        job.config_out = self.services.store.get_model(result.key)
        self._finish(job, InstallStatus.COMPLETED, "model_install_completed")

    # Heartbeat ----------------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._stopping.wait(self.lease / 3):
            try:
                self._beat_once()
            except ModelDepotError as exc:  # a database hiccup: the next beat tries again
                log.warning("install heartbeat failed: %s", exc)

    def _beat_once(self) -> None:
        with self._lock:
            own = [j for j in self._jobs.values() if not j.in_terminal_state and not j._following]
        progress = {j.id: (j.status.value, j.bytes, j.total_bytes) for j in own}
        lost = self.table.heartbeat(self.owner, self.lease, progress) if progress else set()
        for job in own:
            if job.id in lost:
                self._lost(job)
        if self._watching:
            self.table.watch(self.owner, self.lease)
            self._adopt_orphans()
        fleet = self.services.fleet if self.services.built("storage") else None
        if fleet is not None:
            fleet.heartbeat()

    def _lost(self, job: ModelInstallJob) -> None:
        """Another process cancelled this job, or took it over after this one stalled."""
        row = self.table.get(job.id)
        if row.status == "cancelled":
            self._cancel_download(job)
            self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled", persist=False)
        elif row.ended or row.owner not in (None, self.owner.id):
            log.warning("install job %s is now run by another process; stopping here", job.id)
            self._cancel_download(job)
            self._fail(job, ModelDepotError(f"install job {job.id} was taken over by another process"), persist=False)

    # Ending -------------------------------------------------------------------------------

    def _set_status(self, job: ModelInstallJob) -> None:
        with contextlib.suppress(ModelDepotError):
            self.table.set_status(job.id, self.owner, job.status.value)

    def _fail(self, job: ModelInstallJob, exc: BaseException, *, persist: bool = True) -> None:
        if job.in_terminal_state:
            return
        if self._stopping.is_set() and persist:
            return  # stopping: the job was released for another process; nothing failed
        job._exception = exc
        job.error_type = type(exc).__name__
        job.error = str(exc)
        if not isinstance(exc, ModelDepotError):
            log.error("install job %s failed", job.id, exc_info=exc)
        if persist and not self.config.preserve_partial_downloads:
            shutil.rmtree(self.staging(job.id), ignore_errors=True)
        self._finish(job, InstallStatus.ERROR, "model_install_error", persist=persist)

    def _finish(self, job: ModelInstallJob, status: InstallStatus, event: str, *, persist: bool = True) -> None:
        with self._lock:
            if job.in_terminal_state:
                return
            if persist and self._stopping.is_set() and status != InstallStatus.COMPLETED:
                return  # the queue winding down at stop: the job was released, not ended
            job.status = status
            job.ended_at = datetime.now(UTC)
        if persist:
            key = job.config_out.key if job.config_out is not None else None
            with contextlib.suppress(ModelDepotError):
                self.table.finish(job.id, self.owner, status.value, model_key=key, error=job.error)
            if status != InstallStatus.ERROR or not self.config.preserve_partial_downloads:
                shutil.rmtree(self.staging(job.id), ignore_errors=True)
        self._emit(job, event)
        job._done.set()

    def _emit(self, job: ModelInstallJob, name: str) -> None:
        self.services.events.emit(name, **job.event_payload())

    # Queries and control -------------------------------------------------------------------

    def list_jobs(self) -> list[ModelInstallJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.id)

    def get_job(self, job_id: int) -> ModelInstallJob:
        with self._lock:
            job = self._jobs.get(int(job_id))
        if job is None:
            raise UnknownJobIDException(f"no install job with id {job_id}", job_id=job_id)
        return job

    def wait_for_installs(self, timeout: float = 0) -> list[ModelInstallJob]:
        deadline = time.monotonic() + timeout if timeout else None
        for job in self.list_jobs():
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            if not job._done.wait(left):
                raise TimeoutError(f"installs did not finish within {timeout} s")
        return self.list_jobs()

    def _cancel_download(self, job: ModelInstallJob) -> None:
        download = job._download
        if download is not None and not download.in_terminal_state:
            self.services.downloads.cancel_job(download)

    def cancel(self, job: ModelInstallJob) -> None:
        if job.in_terminal_state:
            return
        if job._following:
            self.table.cancel(job.id)  # its owner's heartbeat sees it; the follower reports it
            return
        self._cancel_download(job)
        self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled")

    def cancel_by_id(self, job_id: int) -> str:
        """Cancel a job of this process or any other (by its row); returns its status before."""
        try:
            job = self.get_job(job_id)
        except UnknownJobIDException:
            return self.table.cancel(job_id)
        before = job.status.value
        self.cancel(job)
        return before

    def pause(self, job: ModelInstallJob) -> None:
        """Pause a job's downloads; the partial files stay for :meth:`resume`."""
        download = job._download
        if (
            download is None
            or job.in_terminal_state
            or job.status not in (InstallStatus.DOWNLOADING, InstallStatus.WAITING)
        ):
            return
        self.services.downloads.pause_job(download)
        job.status = InstallStatus.PAUSED
        self._set_status(job)
        self._emit(job, "model_install_paused")

    def resume(self, job: ModelInstallJob) -> None:
        """Continue a paused job's downloads from the bytes already on disk."""
        download = job._download
        if job.status != InstallStatus.PAUSED or download is None:
            return
        downloads = self.services.downloads
        # A part may still be winding down from the pause; restart only once it has stopped,
        # so its late "paused" report cannot overwrite the resumed state.
        downloads.wait_for_job(download, timeout=60)
        job.status = InstallStatus.DOWNLOADING
        self._set_status(job)
        downloads.start_job(download)
        self._emit(job, "model_install_downloading")

    def prune(self) -> None:
        """Forget finished jobs."""
        with self._lock:
            for job_id in [j.id for j in self._jobs.values() if j.in_terminal_state]:
                del self._jobs[job_id]


__all__ = ["JobRunner", "staging_folders"]
