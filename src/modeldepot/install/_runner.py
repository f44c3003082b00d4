"""Install jobs: downloads run in parallel on the download queue; identification, storing and
registration run on one serial worker thread, so two installs never race on names or records.

Jobs are persisted (without tokens) in the ``install_jobs`` table: an install interrupted by a
restart is resumed by ``start()``, and its downloads continue from the bytes already on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import shutil
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modeldepot.download._policy import ConnectPolicy
from modeldepot.download._redact import redact_url
from modeldepot.errors import ModelDepotError, UnknownJobIDException
from modeldepot.install._base import InstallBase
from modeldepot.install._jobs import InstallStatus, ModelInstallJob

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.remote import AnyModelSource

log = logging.getLogger(__name__)
_STOP = object()


def _migrations() -> list[Any]:
    def v1(conn: sa.Connection) -> None:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS install_jobs ("
            " id INTEGER PRIMARY KEY, source TEXT NOT NULL, inplace INTEGER NOT NULL,"
            " config_in TEXT NOT NULL, status VARCHAR(32) NOT NULL, created_at FLOAT NOT NULL)"
        )
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_install_jobs_status ON install_jobs (status)")

    def v2(conn: sa.Connection) -> None:
        # Extra locations (see ``_locations.py``): copies of registered content, by path.
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS install_locations ("
            " path TEXT PRIMARY KEY, model_key VARCHAR(255) NOT NULL, size BIGINT NOT NULL,"
            " mtime_ns BIGINT NOT NULL, recorded_at FLOAT NOT NULL)"
        )
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_install_locations_key ON install_locations (model_key)")

    return [v1, v2]


def ensure_schema(db: Database) -> None:
    db.migrate("install", _migrations())


class JobRunner(InstallBase):
    """The job half of ``ModelInstallService`` (a mixin: it uses the service's stores)."""

    def _init_jobs(self) -> None:
        self._jobs: dict[int, ModelInstallJob] = {}
        self._jobs_lock = threading.RLock()
        self._jobs_cond = threading.Condition(self._jobs_lock)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._ids = itertools.count(1)

    # Lifecycle ----------------------------------------------------------------------------

    def _start_jobs(self) -> None:
        if self._db is not None:
            ensure_schema(self.db)
            with self.db.connect() as conn:
                top = conn.execute(sa.text("SELECT MAX(id) FROM install_jobs")).scalar()
            self._ids = itertools.count(int(top or 0) + 1)
        self._worker = threading.Thread(target=self._work, name="modeldepot-install", daemon=True)
        self._worker.start()
        self._resume_interrupted()
        self._clean_staging()

    def _clean_staging(self) -> int:
        """Remove staging folders no unfinished job owns (a crash after the commit leaves one)."""
        staging = self.app_config.tmp_dir / "install"
        if not staging.is_dir():
            return 0
        active = {str(j.id) for j in self.list_jobs() if not j.in_terminal_state}
        removed = 0
        for child in staging.iterdir():
            if child.name not in active:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed

    def _stop_jobs(self) -> None:
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout=30)
            self._worker = None

    def _staging(self, job_id: int) -> Path:
        return self.app_config.tmp_dir / "install" / str(job_id)

    def _persist(self, job: ModelInstallJob) -> None:
        if self._db is None:
            return
        with self.db.begin() as conn:
            # A job that ended stays ended: a late update from a worker thread cannot revive it.
            updated = conn.execute(
                sa.text(
                    "UPDATE install_jobs SET status = :s WHERE id = :i"
                    " AND status NOT IN ('completed', 'error', 'cancelled')"
                ),
                {"s": job.status.value, "i": job.id},
            ).rowcount
            exists = updated or conn.execute(sa.text("SELECT 1 FROM install_jobs WHERE id = :i"), {"i": job.id}).first()
            if not exists:
                conn.execute(
                    sa.text(
                        "INSERT INTO install_jobs (id, source, inplace, config_in, status, created_at)"
                        " VALUES (:i, :src, :inp, :cfg, :s, :t)"
                    ),
                    {
                        "i": job.id,
                        "src": job.source,
                        "inp": int(job.inplace),
                        "cfg": json.dumps(job.config_in, default=str),
                        "s": job.status.value,
                        "t": time.time(),
                    },
                )

    def _resume_interrupted(self) -> None:
        """Jobs that were not finished when the last process stopped start again."""
        if self._db is None:
            return
        from modeldepot.remote import parse_source

        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, source, inplace, config_in FROM install_jobs WHERE status NOT IN (:a, :b, :c)"),
                {"a": "completed", "b": "error", "c": "cancelled"},
            ).fetchall()
        for job_id, source, inplace, config_in in rows:
            try:
                parsed = parse_source(source, config=self.app_config)
                self._submit(parsed, json.loads(config_in) or None, bool(inplace), job_id=int(job_id))
                log.info("resuming install job %s (%s)", job_id, source)
            except ModelDepotError as exc:
                log.warning("cannot resume install job %s (%s): %s", job_id, source, exc)
                with self.db.begin() as conn:
                    conn.execute(sa.text("UPDATE install_jobs SET status='error' WHERE id=:i"), {"i": job_id})

    # Submitting ---------------------------------------------------------------------------

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
        from modeldepot.remote import parse_source

        parsed = parse_source(source, config=self.app_config, access_token=access_token)
        if force:
            config = {**(config or {}), "force": True}
        return self.import_model(parsed, config, inplace)

    def import_model(
        self, source: AnyModelSource, config: dict[str, Any] | None = None, inplace: bool = False
    ) -> ModelInstallJob:
        """Install from a typed source; returns the job at once (see ``wait_for_job``)."""
        from modeldepot.remote import LocalModelSource

        inplace = inplace or bool(getattr(source, "inplace", False))
        if not isinstance(source, LocalModelSource):
            self._check_remote_allowed(source)
        with self._jobs_lock:
            for job in self._jobs.values():
                if job.source == str(source) and not job.in_terminal_state:
                    return job  # the same source twice at once is one job, not two copies
        return self._submit(source, config, inplace)

    def _check_remote_allowed(self, source: AnyModelSource) -> None:
        """Refuse a source on a private address before any job exists (403 in the API).

        A preflight only: every connection of the download is checked and pinned again by the
        download layer, so a lookup that fails here is left for the job to report.
        """
        from modeldepot.remote import CivitaiModelSource, HFModelSource, URLModelSource

        url = None
        if isinstance(source, URLModelSource):
            url = source.url
        elif isinstance(source, HFModelSource):
            url = self.app_config.hf_endpoint
        elif isinstance(source, CivitaiModelSource):
            url = self.app_config.civitai_endpoint
        if url is not None:
            with contextlib.suppress(OSError):
                ConnectPolicy.from_config(self.app_config).check_url(url, redact_url(url))

    def _submit(
        self,
        source: AnyModelSource,
        config: dict[str, Any] | None,
        inplace: bool,
        job_id: int | None = None,
    ) -> ModelInstallJob:
        from modeldepot.remote import LocalModelSource

        job = ModelInstallJob(
            id=job_id if job_id is not None else next(self._ids),
            source=str(source),
            source_type=str(source.type),
            config_in=dict(config or {}),
            inplace=inplace,
        )
        job._source_obj = source
        job._access_token = getattr(source, "access_token", None)
        with self._jobs_lock:
            self._jobs[job.id] = job
        self._persist(job)
        self._emit(job, "model_install_waiting")
        existing = None if isinstance(source, LocalModelSource) else self._installed_from(job.source)
        if existing is not None:
            # Installing the same remote source again: nothing to download, unless the stored
            # copy fails verification (checked off the caller's thread: it reads every byte).
            threading.Thread(
                target=self._reinstall_if_damaged, args=(job, existing), name=f"install-{job.id}", daemon=True
            ).start()
        elif isinstance(source, LocalModelSource):
            job.local_path = Path(source.path)
            self._queue.put(job)
        else:
            threading.Thread(target=self._start_download, args=(job,), name=f"install-{job.id}", daemon=True).start()
        return job

    def _reinstall_if_damaged(self, job: ModelInstallJob, existing: Any) -> None:
        try:
            sound = self._stored_copy_sound(existing)
        except Exception as exc:
            self._fail(job, exc)
            return
        if not sound:
            # The fresh download replaces the damaged blobs (the verify marked them bad).
            job.notes.append(f"re-downloading: the installed copy of {existing.name!r} failed verification")
            self._start_download(job)
            return
        job.config_out = existing
        job.outcome = "already_installed"
        job.notes.append(f"already installed as {existing.name!r} (key {existing.key})")
        self._finish(job, InstallStatus.COMPLETED, "model_install_completed")

    def _installed_from(self, source: str) -> Any:
        for record in self.record_store.search_models(q=source):
            if record.source == source and Path(record.path).exists():
                return record
        return None

    # Downloading --------------------------------------------------------------------------

    def _start_download(self, job: ModelInstallJob) -> None:
        from modeldepot.install._remote import plan_download

        try:
            plan = plan_download(self.app_config, job._source_obj, self._staging(job.id))
        except Exception as exc:
            self._fail(job, exc)
            return
        job._metadata = plan.metadata
        job.notes.extend(plan.notes)
        job.total_bytes = plan.total_bytes
        if job.cancelled:
            return
        handlers: dict[str, Any] = {
            "on_start": lambda dj: self._on_download_progress(job, dj),
            "on_progress": lambda dj: self._on_download_progress(job, dj),
            "on_complete": lambda dj: self._on_download_complete(job, dj, plan.model_subpath),
            "on_error": lambda dj, exc: self._fail(job, exc or RuntimeError(dj.error or "download failed")),
            "on_cancelled": lambda dj: self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled"),
            "on_paused": lambda dj: self._on_download_paused(job),
        }
        token = job._access_token.get_secret_value() if job._access_token is not None else plan.token
        queue_ = self._downloads()
        assert queue_ is not None, "install service built without a download queue"
        with self._jobs_lock:
            if job.in_terminal_state:
                return  # cancelled while the plan was being made
            job.status = InstallStatus.DOWNLOADING
        self._persist(job)
        plan.dest.mkdir(parents=True, exist_ok=True)  # a folder: the file is named by the server
        if len(plan.files) == 1 and plan.single_url:
            f = plan.files[0]
            # Resuming after a restart: aim at the partial file directly, so no probe request
            # re-sends bytes that are already on disk.
            partial = sorted(plan.dest.glob("*.part.json"))
            target = (
                partial[0].with_name(partial[0].name.removesuffix(".part.json")) if len(partial) == 1 else plan.dest
            )
            job._download = queue_.download(f.url, target, access_token=token, expected_sha256=f.sha256, **handlers)
        else:
            job._download = queue_.multifile_download(plan.files, plan.dest, access_token=token, **handlers)

    def _on_download_progress(self, job: ModelInstallJob, dj: Any) -> None:
        job.status = InstallStatus.DOWNLOADING
        job.bytes = dj.bytes
        job.total_bytes = max(dj.total_bytes, job.total_bytes)
        job.speed = dj.speed
        parts = getattr(dj, "download_parts", None) or [dj]
        job.parts = [
            {
                "path": str(Path(p.download_path).name if p.download_path else p.dest),
                "bytes": p.bytes,
                "total_bytes": p.total_bytes,
                "status": p.status.value,
            }
            for p in parts
        ]
        self._emit(job, "model_install_downloading")

    def _on_download_paused(self, job: ModelInstallJob) -> None:
        if not job.in_terminal_state:
            job.status = InstallStatus.PAUSED
            self._emit(job, "model_install_paused")

    def _on_download_complete(self, job: ModelInstallJob, dj: Any, subpath: str | None) -> None:
        if getattr(dj, "download_parts", None) is None:
            job.local_path = Path(dj.download_path)
        else:
            job.local_path = Path(dj.dest) / subpath if subpath else Path(dj.dest)
        job.bytes = dj.bytes
        job.status = InstallStatus.DOWNLOADS_DONE
        self._emit(job, "model_install_downloads_done")
        self._queue.put(job)

    # The serial worker ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if job.in_terminal_state:
                continue
            try:
                self._install_job(job)
            except Exception as exc:
                self._fail(job, exc)

    def _install_job(self, job: ModelInstallJob) -> None:
        from modeldepot.install._remote import check_looks_like_model
        from modeldepot.remote import LocalModelSource

        job.status = InstallStatus.RUNNING
        self._emit(job, "model_install_running")
        assert job.local_path is not None
        config = dict(job.config_in)
        force = bool(config.pop("force", False))
        if isinstance(job._source_obj, LocalModelSource):
            if job.inplace:
                result = self.register_path_result(job.local_path, config, force=force)
            else:
                result = self.install_path_result(job.local_path, config, force=force)
        else:
            check_looks_like_model(job.local_path)
            result = self.install_path_result(
                job.local_path,
                config,
                move=True,
                source=job.source,
                source_type=job._source_obj.type,
                metadata=job._metadata,
                force=force,
            )
            shutil.rmtree(self._staging(job.id), ignore_errors=True)
        job.outcome = result.outcome
        if not result.created:
            job.notes.append(result.message)
        job.config_out = self.record_store.get_model(result.key)
        self._finish(job, InstallStatus.COMPLETED, "model_install_completed")

    # Ending -------------------------------------------------------------------------------

    def _fail(self, job: ModelInstallJob, exc: BaseException) -> None:
        if job.in_terminal_state:
            return
        job._exception = exc
        job.error_type = type(exc).__name__
        job.error = str(exc)
        if not isinstance(exc, ModelDepotError):
            log.error("install job %s failed", job.id, exc_info=exc)
        if not self.app_config.preserve_partial_downloads:
            shutil.rmtree(self._staging(job.id), ignore_errors=True)
        self._finish(job, InstallStatus.ERROR, "model_install_error")

    def _finish(self, job: ModelInstallJob, status: InstallStatus, event: str) -> None:
        from datetime import datetime

        with self._jobs_cond:
            if job.in_terminal_state:
                return
            job.status = status
            job.ended_at = datetime.now(UTC)
            self._jobs_cond.notify_all()
        self._persist(job)
        if status == InstallStatus.CANCELLED:
            shutil.rmtree(self._staging(job.id), ignore_errors=True)
        self._emit(job, event)
        job._done.set()

    def _emit(self, job: ModelInstallJob, name: str) -> None:
        self.event_bus.emit(name, **job.event_payload())

    # Queries and control -------------------------------------------------------------------

    def list_jobs(self) -> list[ModelInstallJob]:
        with self._jobs_lock:
            return sorted(self._jobs.values(), key=lambda j: j.id)

    def get_job_by_id(self, id: int) -> ModelInstallJob:
        with self._jobs_lock:
            job = self._jobs.get(int(id))
        if job is None:
            raise UnknownJobIDException(f"no install job with id {id}", job_id=id)
        return job

    def get_job_by_source(self, source: Any) -> list[ModelInstallJob]:
        wanted = str(source)
        if isinstance(source, str):
            try:
                from modeldepot.remote import parse_source

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
        """Block until every job has ended; returns them."""
        deadline = time.monotonic() + timeout if timeout else None
        for job in self.list_jobs():
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            if not job._done.wait(left):
                raise TimeoutError(f"installs did not finish within {timeout} s")
        return self.list_jobs()

    def cancel_job(self, job: ModelInstallJob) -> None:
        if job.in_terminal_state:
            return
        download = job._download
        if download is not None and not download.in_terminal_state:
            queue_ = self._downloads()
            if queue_ is not None:
                queue_.cancel_job(download)
        self._finish(job, InstallStatus.CANCELLED, "model_install_cancelled")

    def pause_job(self, job: ModelInstallJob) -> None:
        """Pause a job's downloads; the partial files stay for ``resume_job``."""
        download = job._download
        if (
            download is None
            or job.in_terminal_state
            or job.status
            not in (
                InstallStatus.DOWNLOADING,
                InstallStatus.WAITING,
            )
        ):
            return
        queue_ = self._downloads()
        assert queue_ is not None
        queue_.pause_job(download)
        job.status = InstallStatus.PAUSED
        self._persist(job)
        self._emit(job, "model_install_paused")

    def resume_job(self, job: ModelInstallJob) -> None:
        """Continue a paused job's downloads from the bytes already on disk."""
        download = job._download
        if job.status != InstallStatus.PAUSED or download is None:
            return
        queue_ = self._downloads()
        assert queue_ is not None
        # A part may still be winding down from the pause; restart only once it has stopped,
        # so its late "paused" report cannot overwrite the resumed state.
        queue_.wait_for_job(download, timeout=60)
        job.status = InstallStatus.DOWNLOADING
        queue_.start_job(download)
        self._emit(job, "model_install_downloading")

    def prune_jobs(self) -> None:
        """Forget finished jobs."""
        with self._jobs_lock:
            for job_id in [j.id for j in self._jobs.values() if j.in_terminal_state]:
                del self._jobs[job_id]
