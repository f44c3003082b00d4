"""Maintenance half of the install service: scan, sync, re-identify, Civitai lookup, cached downloads."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modeldepot.errors import DuplicateModelException, ModelDepotError, UnknownJobIDException, UnknownModelException
from modeldepot.install._base import InstallBase
from modeldepot.install._locations import known_location, record_location

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase
    from modeldepot.storage import VerifyReport

log = logging.getLogger(__name__)
#: Files a scan treats as models (folders with a model_index.json/config.json are models too).
MODEL_SUFFIXES = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf"})
_FOLDER_MARKERS = ("model_index.json", "config.json", "pytorch_lora_weights.safetensors", "learned_embeds.safetensors")


def find_models(folder: Path) -> list[Path]:
    """Model files and model folders under ``folder``; a model folder is not searched further."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # a symlink loop or a folder reached twice
        seen.add((st.st_dev, st.st_ino))
        if current != folder and any((current / m).is_file() for m in _FOLDER_MARKERS):
            found.append(current)
            continue
        try:
            entries = sorted(current.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(entry)
            elif entry.suffix.lower() in MODEL_SUFFIXES and entry.is_file():
                found.append(entry)
    return sorted(found)


class Maintenance(InstallBase):
    def scan_folder(self, folder: str | Path) -> list[dict[str, Any]]:
        """What model files are under ``folder`` and whether each is registered.

        ``is_installed``: a model is registered at that path; ``duplicate_of``: the path is a
        known copy (an extra location) of that model's content.
        """
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            from modeldepot.errors import ModelNotFoundException

            raise ModelNotFoundException(f"{root}: no such folder", path=root)
        out = []
        for path in find_models(root):
            hits = self.record_store.search_by_path(path)
            entry: dict[str, Any] = {
                "path": str(path),
                "is_installed": bool(hits),
                "key": hits[0].key if hits else None,
            }
            if not hits and self._db is not None:
                copy = known_location(self.db, path)
                if copy is not None and self.record_store.exists(copy.model_key):
                    entry["duplicate_of"] = copy.model_key
            out.append(entry)
        return out

    def scan_and_register(self, folder: str | Path, inplace: bool = True) -> list[dict[str, Any]]:
        """Register (in place) or install every model under ``folder``; one result per model.

        Statuses: ``registered`` (a new record), ``present`` (registered at that path before),
        ``duplicate`` (the same content as a registered model; the path is remembered),
        ``known`` (a copy remembered by an earlier scan), ``skipped`` (not a model, or unreadable).
        """
        results: list[dict[str, Any]] = []
        for entry in self.scan_folder(folder):
            path = Path(entry["path"])
            if entry["is_installed"]:
                results.append({"path": str(path), "status": "present", "key": entry["key"]})
                continue
            if entry.get("duplicate_of"):
                key = entry["duplicate_of"]
                name = self.record_store.get_model(key).name
                detail = f"a copy of {name!r} (key {key}), already known"
                results.append({"path": str(path), "status": "known", "key": key, "detail": detail})
                continue
            try:
                result = self.register_path_result(path) if inplace else self.install_path_result(path)
            except DuplicateModelException as exc:
                results.append({"path": str(path), "status": "duplicate", "key": exc.key, "detail": str(exc)})
                continue
            except ModelDepotError as exc:
                results.append({"path": str(path), "status": "skipped", "detail": str(exc)})
                continue
            if result.created:
                results.append({"path": str(path), "status": "registered", "key": result.key})
                continue
            if not inplace and self._db is not None:
                record_location(self.db, path, result.key)
            results.append({"path": str(path), "status": "duplicate", "key": result.key, "detail": result.message})
        return results

    def repair_storage(self, key: str | None = None) -> VerifyReport:
        """Verify and repair the store; what no good copy can restore is fetched again from the
        damaged model's recorded source (a local path that still exists, or the remote source).

        ``VerifyReport.remaining`` lists what is still damaged afterwards (empty: all healed).
        """
        from modeldepot.storage._verify import problems

        report = self.storage.verify(key=key, repair=True)
        if report.healthy:
            return report
        for damaged in sorted(report.affected_models):
            if self.storage.verify(key=damaged).ok:
                continue  # repaired from a good copy already
            try:
                record = self.record_store.get_model(damaged)
            except UnknownModelException:
                continue
            how = self._refetch(record)
            if how is not None:
                report.repaired.append(f"model {record.name} ({record.key}) {how}")
        report.remaining = problems(self.storage.verify(key=key))
        return report

    def _stored_copy_sound(self, record: ModelConfigBase) -> bool:
        """Whether an installed model's bytes verify (repairing from good copies where possible)."""
        storage = self._storage()
        if storage is None or self._db is None or record.inplace or not storage.has_model(record.key):
            return True
        return storage.verify(key=record.key, repair=True).healthy

    def _refetch(self, record: ModelConfigBase) -> str | None:
        """Read a damaged model's bytes again from its source; None if that was not possible."""
        from modeldepot.taxonomy import ModelSourceType

        source = record.source
        if record.inplace or not source:
            return None
        if record.source_type in (None, ModelSourceType.Path):
            path = Path(source)
            if not path.exists():
                log.error("cannot repair %s: its source %s is gone", record.key, path)
                return None
            staged = self.storage.stage(path)  # the store replaces the blobs it knows are bad
            self.storage.discard(staged)
            return f"re-read from {path}" if staged.healed else None
        job = self.heuristic_import(source)  # sees the damaged copy and downloads again
        self.wait_for_job(job)
        if not job.complete:
            log.error("cannot repair %s: re-downloading %s failed: %s", record.key, source, job.error)
            return None
        return f"downloaded again from {source}"

    def reidentify(self, key: str) -> ModelConfigBase:
        """Identify a model's files again and update type/base/format/variant in its record."""
        from modeldepot.identify import identify

        config = self.record_store.get_model(key)
        ident = identify(config.path)
        changes: dict[str, Any] = {
            "type": ident.type,
            "format": ident.format,
            "base": ident.base,
            "compatible_bases": set(ident.compatible_bases) | {ident.base},
            "identification": ident.to_dict(),
        }
        if ident.variant is not None:
            changes["variant"] = ident.variant
        if ident.prediction_type is not None:
            changes["prediction_type"] = ident.prediction_type
        from modeldepot.configs import class_for

        fields = class_for(ident.type, ident.format).model_fields
        return self.record_store.update_model(key, {k: v for k, v in changes.items() if k in fields})

    def sync_to_config(self, prune_missing: bool = False) -> dict[str, Any]:
        """Report records whose files vanished (forget them with ``prune_missing``), clean staging."""
        missing = []
        for record in self.record_store.all_models():
            if not Path(record.path).exists():
                missing.append({"key": record.key, "name": record.name, "path": record.path})
                if prune_missing:
                    self.unregister(record.key)
        cleaned = self._clean_staging()
        resumed = sum(1 for j in self.list_jobs() if not j.in_terminal_state)
        return {"missing": missing, "cleaned": cleaned, "resumed": resumed}

    def persisted_jobs(self) -> list[dict[str, Any]]:
        """Every recorded install job, with the live status of the ones this process runs."""
        live = {j.id: j.status.value for j in self.list_jobs()}
        return [{**row, "status": live.get(row["id"], row["status"])} for row in persisted_jobs(self.db)]

    def cancel_persisted(self, job_id: int) -> str:
        """Cancel a job by id, whether it lives in this process or was left by an earlier one.

        Returns the status the job had before: anything but "completed", "error" or "cancelled"
        means it was cancelled now; those mean it had already ended and nothing changed.
        """
        try:
            job = self.get_job_by_id(job_id)
        except UnknownJobIDException:
            return cancel_persisted_job(self.db, self.app_config, job_id)
        before = job.status.value
        self.cancel_job(job)
        return before

    def civitai_lookup(self, key: str, apply: bool = True) -> dict[str, Any]:
        """Look a registered file up on Civitai by its SHA256 and (optionally) fill its metadata."""
        from modeldepot.hashing import civitai_hashes
        from modeldepot.remote import CivitaiClient

        config = self.record_store.get_model(key)
        path = Path(config.path)
        if not path.is_file():
            from modeldepot.errors import InvalidSourceError

            raise InvalidSourceError(f"{config.name}: only single files can be looked up on Civitai by hash")
        hashes = civitai_hashes(path, cache=self._hash_cache)
        with CivitaiClient.from_config(self.app_config) as client:
            version = client.get_version_by_hash(hashes.sha256)
            meta = client.metadata_for_record(version)
        meta.pop("type", None)
        meta.pop("base", None)  # the file's header decides the base; Civitai's is kept as a tag
        changes = {k: v for k, v in meta.items() if k != "name" or not config.name}
        changes["tags"] = list(dict.fromkeys([*config.tags, *meta.get("tags", [])]))
        if apply:
            self.record_store.update_model(key, changes)
        return {"civitai_version": version.id, **changes}

    def download_and_cache(self, source: str, access_token: str | None = None, timeout: float = 0) -> Path:
        """Download an arbitrary file (not registered) into a size-capped LRU cache; return its path."""
        cache = self.app_config.home / "download_cache"
        folder = cache / hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]
        done = (
            [p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".part", ".json"))]
            if folder.is_dir()
            else []
        )
        if done:
            os.utime(folder)  # most recently used
            return done[0]
        queue = self._downloads()
        assert queue is not None
        folder.mkdir(parents=True, exist_ok=True)  # a folder: the file keeps the server's name
        job = queue.download(source, folder, access_token=access_token)
        queue.wait_for_job(job, timeout=timeout)
        if not job.complete or job.download_path is None:
            raise job.exception if isinstance(job.exception, ModelDepotError) else RuntimeError(job.error)
        os.utime(folder)
        self._evict_download_cache(cache, keep=folder)
        return Path(job.download_path)

    def _evict_download_cache(self, cache: Path, keep: Path) -> None:
        cap = int(self.app_config.download_cache_gb * 1024**3)
        entries = []
        for folder in cache.iterdir():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            entries.append((folder.stat().st_mtime, size, folder))
        total = sum(e[1] for e in entries)
        for _mtime, size, folder in sorted(entries):
            if total <= cap:
                break
            if folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            log.info("download cache: evicted %s (%d bytes)", folder, size)


def persisted_jobs(db: Database) -> list[dict[str, Any]]:
    """The install jobs recorded in the database, read without starting any service."""
    from modeldepot.install._runner import ensure_schema

    ensure_schema(db)
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, source, status, inplace, created_at FROM install_jobs ORDER BY id")
        ).fetchall()
    return [{"id": r[0], "source": r[1], "status": r[2], "inplace": bool(r[3]), "created_at": r[4]} for r in rows]


#: Statuses of jobs that have ended: cancelling them changes nothing.
ENDED = ("completed", "error", "cancelled")


def cancel_persisted_job(db: Database, config: DepotConfig, job_id: int) -> str:
    """Mark a recorded job cancelled (it will not resume) and delete its partial downloads.

    Returns the status the job had before; one of :data:`ENDED` means it had already ended and
    was left as it was (a completed install is never undone by a late cancel).

    Raises:
        UnknownJobIDException: no job with that id was ever recorded.
    """
    from modeldepot.install._runner import ensure_schema

    ensure_schema(db)
    with db.begin() as conn:
        row = conn.execute(sa.text("SELECT status FROM install_jobs WHERE id=:i"), {"i": job_id}).first()
        if row is None:
            raise UnknownJobIDException(f"no install job with id {job_id}", job_id=job_id)
        before = str(row[0])
        if before in ENDED:
            return before
        conn.execute(sa.text("UPDATE install_jobs SET status='cancelled' WHERE id=:i"), {"i": job_id})
    shutil.rmtree(config.tmp_dir / "install" / str(job_id), ignore_errors=True)
    return before
