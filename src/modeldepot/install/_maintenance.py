"""Maintenance half of the install service: scan, sync, re-identify, Civitai lookup, cached downloads."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modeldepot.errors import DuplicateModelException, ModelDepotError, UnknownJobIDException
from modeldepot.install._base import InstallBase

if TYPE_CHECKING:
    from modeldepot._db import Database
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase

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
        """What model files are under ``folder`` and whether each is registered."""
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            from modeldepot.errors import ModelNotFoundException

            raise ModelNotFoundException(f"{root}: no such folder", path=root)
        out = []
        for path in find_models(root):
            hits = self.record_store.search_by_path(path)
            out.append({"path": str(path), "is_installed": bool(hits), "key": hits[0].key if hits else None})
        return out

    def scan_and_register(self, folder: str | Path, inplace: bool = True) -> list[dict[str, Any]]:
        """Register (in place) or install every model under ``folder``; one result per model."""
        results = []
        for entry in self.scan_folder(folder):
            path = Path(entry["path"])
            if entry["is_installed"]:
                results.append({"path": str(path), "status": "present", "key": entry["key"]})
                continue
            try:
                key = self.register_path(path) if inplace else self.install_path(path)
                results.append({"path": str(path), "status": "registered", "key": key})
            except DuplicateModelException as exc:
                results.append({"path": str(path), "status": "duplicate", "key": exc.key, "detail": str(exc)})
            except ModelDepotError as exc:
                results.append({"path": str(path), "status": "skipped", "detail": str(exc)})
        return results

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

    def cancel_persisted(self, job_id: int) -> None:
        """Cancel a job by id, whether it lives in this process or was left by an earlier one."""
        try:
            self.cancel_job(self.get_job_by_id(job_id))
            return
        except UnknownJobIDException:
            pass
        cancel_persisted_job(self.db, self.app_config, job_id)

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
        from modeldepot.install._policy import check_public_url

        check_public_url(source, self.app_config.allow_private_urls)
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


def cancel_persisted_job(db: Database, config: DepotConfig, job_id: int) -> None:
    """Mark a recorded job cancelled (it will not resume) and delete its partial downloads."""
    from modeldepot.install._runner import ensure_schema

    ensure_schema(db)
    with db.begin() as conn:
        n = conn.execute(
            sa.text(
                "UPDATE install_jobs SET status='cancelled' WHERE id=:i"
                " AND status NOT IN ('completed', 'error', 'cancelled')"
            ),
            {"i": job_id},
        ).rowcount
        known = n or conn.execute(sa.text("SELECT 1 FROM install_jobs WHERE id=:i"), {"i": job_id}).first()
    if not known:
        raise UnknownJobIDException(f"no install job with id {job_id}", job_id=job_id)
    shutil.rmtree(config.tmp_dir / "install" / str(job_id), ignore_errors=True)
