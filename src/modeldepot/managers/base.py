"""``BaseModelManager``: one service's models, from its reference to ``loaded_models[key]`` (documents 000/001).

``load(key)`` downloads what is not available (through the depot's download queue and install
service, so bytes are deduplicated and recorded), validates the files against the reference's
digests (through the hash cache: each file version is read once), and loads through the depot's
load service and its cache. Subclasses say how a service's model is built from the loaded parts
(:meth:`BaseModelManager.load_model`); ``new.py`` is the template.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from modeldepot.errors import (
    DownloadError,
    IntegrityError,
    ModelDepotError,
    ModelNotFoundException,
    UnknownModelException,
)
from modeldepot.managers._files import (
    check_entry,
    check_file,
    link_into_view,
    mismatch_error,
    model_units,
    nataili_home,
    unit_root,
    unit_targets,
)
from modeldepot.reference import ModelReference, ReferenceEntry
from modeldepot.taxonomy import ModelSourceType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.load import LoadedModel, ModelLoadService
    from modeldepot.manager import ModelManager

log = logging.getLogger(__name__)

#: Every record a manager makes carries this tag, ``service:<service>`` and ``reference:<key>``.
TAG = "nataili"


def service_tags(service: str, key: str) -> list[str]:
    return [TAG, f"service:{service}", f"reference:{key}"]


@dataclass(eq=False)
class ManagedModel:
    """What ``loaded_models[key]`` holds: the built model and the cache entries it is made of.

    Indexable like Nataili's dicts: ``loaded["model"]``, ``loaded["device"]``,
    ``loaded["half_precision"]`` and any extra (``loaded["processor"]``).
    """

    key: str
    service: str
    model: Any
    device: str
    dtype: str | None
    record: ModelConfigBase
    parts: dict[str, LoadedModel] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def half_precision(self) -> bool:
        return self.dtype in ("float16", "bfloat16")

    def __getitem__(self, name: str) -> Any:
        if name in ("model", "device", "dtype", "half_precision", "record", "key"):
            return getattr(self, name)
        try:
            return self.extras[name]
        except KeyError:
            raise KeyError(f"{self.key!r} has no {name!r}; it has model, device, {', '.join(self.extras)}") from None

    def __contains__(self, name: object) -> bool:
        return name in ("model", "device", "dtype", "half_precision") or name in self.extras


def _primary_unit(entry: ReferenceEntry) -> list[str]:
    """The unit holding the entry's first file: the model ``load`` loads (GFPGAN, not its face detector)."""
    units = model_units(entry)
    return next((u for u in units if entry.files and entry.files[0].path in u), units[0])


class BaseModelManager:
    """The models of one service: ``models`` (the reference), ``available_models``, ``loaded_models``.

    Args:
        reference: a path, URL or :class:`ModelReference` (default: the copy shipped for the service).
        depot: the :class:`~modeldepot.ModelManager` whose store, queue and cache to use (default:
            one opened from the settings, closed with this manager).
        cache_home: the Nataili folder (default ``$NATAILI_CACHE_HOME`` / ``$XDG_CACHE_HOME`` /
            ``~/.cache``, then ``nataili``); files are reachable at ``<cache_home>/<service>/<path>``.
    """

    service: ClassVar[str] = ""
    #: Reference ``type`` values this manager loads (empty: any).
    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        reference: str | os.PathLike[str] | ModelReference | None = None,
        depot: ModelManager | None = None,
        *,
        cache_home: str | os.PathLike[str] | None = None,
    ) -> None:
        if not self.service:
            raise TypeError(f"{type(self).__name__} must set `service`")
        self._owns_depot = depot is None
        if depot is None:
            from modeldepot.manager import ModelManager

            depot = ModelManager()
        self.depot = depot
        remote = isinstance(reference, str | os.PathLike) and os.fspath(reference).startswith(("http://", "https://"))
        self.models = ModelReference.load(
            reference,
            service=self.service,
            downloads=depot.downloads if remote else None,
            cache_dir=depot.config.home / "references" if remote else None,
        )
        self.cache_home = Path(cache_home).expanduser() if cache_home is not None else nataili_home()
        self.path = self.cache_home / self.service
        self.loaded_models: dict[str, ManagedModel] = {}
        self.tainted_models: list[str] = []
        self._lock = threading.RLock()
        self._load_services: dict[tuple[str, str], ModelLoadService] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.models)} models, {len(self.loaded_models)} loaded, path={self.path})"

    def __enter__(self) -> BaseModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unload everything; close the depot if this manager opened it."""
        for key in list(self.loaded_models):
            self.unload_model(key)
        if self._owns_depot:
            self.depot.close()

    # Availability ------------------------------------------------------------------------------
    @property
    def available_models(self) -> list[str]:
        """Keys whose files are all present and validated, not tainted (computed, never read from the JSON)."""
        return [k for k in self.models if self.is_available(k)]

    def is_available(self, key: str) -> bool:
        """All files present and matching the reference's digests (as already validated; no file is read)."""
        entry = self.models[key]
        if key in self.tainted_models:
            return False
        return not check_entry(entry, self.path, self.depot.hash_cache, cached_only=True)

    def file_path(self, key: str, index: int = 0) -> Path:
        """Where the ``index``-th file of ``key`` is in the Nataili folder view."""
        return self.path / self.models[key].files[index].path

    @staticmethod
    def cuda_available() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def describe(self, key: str) -> dict[str, Any]:
        """One entry as the CLI and API list it: reference fields, computed availability, the depot record."""
        entry = self.models[key]
        record = self.record_for(key)
        return {
            "service": self.service,
            "key": key,
            "name": entry.name,
            "type": entry.type,
            "description": entry.description,
            "baseline": entry.baseline,
            "nsfw": entry.nsfw,
            "size_on_disk_bytes": entry.size_on_disk_bytes,
            "available": self.is_available(key),
            "record_key": record.key if record is not None else None,
        }

    def problems(self, key: str, skip_checksum: bool = False) -> list[str]:
        """Why ``key``'s files are not valid (one line each); empty when they are. See :meth:`validate_model`."""
        entry = self.models[key]
        if skip_checksum:
            return [f"{self.path / f.path} is missing" for f in entry.files if not (self.path / f.path).exists()]
        return check_entry(entry, self.path, self.depot.hash_cache)

    def validate_model(self, key: str, skip_checksum: bool = False) -> bool:
        """Check every file of ``key`` against the reference's sha256 (else md5), case-insensitively.

        Digests come from the depot's hash cache (no sidecar files); a file version is read at most
        once. False, with the reason logged, when a file is missing or differs.
        """
        problems = self.problems(key, skip_checksum)
        if problems:
            log.error("%s", mismatch_error(key, problems))
            return False
        return True

    def taint_model(self, key: str) -> None:
        """Mark ``key`` as bad: unavailable until downloaded again (the next ``load`` does)."""
        self.models[key]
        with self._lock:
            if key not in self.tainted_models:
                self.tainted_models.append(key)

    def taint_models(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.taint_model(key)

    # Downloads ---------------------------------------------------------------------------------
    def download_model(self, key: str) -> bool:
        """Make ``key`` available: adopt valid files already in the folder, restore them from the
        depot, or download them; then record them in the depot and link them into the folder.

        Raises:
            UnknownModelException: ``key`` is not in the reference.
            IntegrityError: a file does not match the reference's digest.
            DownloadError / ModelNotFoundException: a file could not be fetched (or must be placed by hand).
        """
        entry = self.models[key]
        with self._lock:
            forced = key in self.tainted_models
            if not forced and self._restore(key, entry):
                return True
            self._fetch(key, entry)
            if forced:
                self.tainted_models.remove(key)
            return True

    def download_all(self) -> list[str]:
        """Download every entry marked ``download_all``; returns their keys."""
        keys = [k for k, e in self.models.items() if e.download_all]
        for key in keys:
            self.download_model(key)
        return keys

    def record_for(self, key: str) -> ModelConfigBase | None:
        """The depot's record of ``key``'s main file (tagged ``service:<service>``, ``reference:<key>``)."""
        return self._unit_record(key, _primary_unit(self.models[key]))

    def _unit_record(self, key: str, unit: list[str]) -> ModelConfigBase | None:
        found = self.depot.store.search_by_tag([*service_tags(self.service, key), f"file:{unit[0]}"])
        return found[0] if found else None

    def _restore(self, key: str, entry: ReferenceEntry) -> bool:
        """Without the network: files already valid in the folder, or valid in the depot."""
        cache = self.depot.hash_cache
        if not check_entry(entry, self.path, cache):
            for unit in model_units(entry):
                self._ensure_record(key, entry, unit)
            return True
        links: list[tuple[Path, str]] = []
        for unit in model_units(entry):
            record = self._unit_record(key, unit)
            if record is None:
                return False
            for rel, target in unit_targets(unit, Path(record.path)).items():
                if check_file(target, entry.file_record(rel), cache) is not None:
                    return False
                links.append((target, rel))
        for target, rel in links:
            link_into_view(target, self.path / rel)
        self._symlinks(entry)
        return bool(links)

    def _staging(self, key: str) -> Path:
        digest = hashlib.sha256(f"{self.service}/{key}".encode()).hexdigest()[:16]
        return self.depot.config.home / "tmp" / "nataili" / digest

    def _fetch(self, key: str, entry: ReferenceEntry) -> None:
        stage = self._staging(key)
        stage.mkdir(parents=True, exist_ok=True)
        downloads = entry.config.download
        if not downloads:
            raise ModelNotFoundException(f"model {key!r}: the reference lists no download for it", self.path)
        jobs = []
        for i, d in enumerate(downloads):
            if d.symlink is not None:
                continue
            dest = stage / d.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            frec = entry.file_for(d, i)
            if d.file_url is None and d.file_content is None:
                raise ModelNotFoundException(
                    f"model {key!r}: {d.file_name} must be downloaded by hand"
                    f"{f' from {entry.homepage}' if entry.homepage else ''} and placed at {self.path / d.relpath}",
                    self.path / d.relpath,
                )
            if d.file_url is None:
                dest.write_text(d.file_content or "", encoding="utf-8")
                continue
            want = frec.sha256sum.lower() if frec is not None and frec.sha256sum else None
            jobs.append((d, frec, dest, self.depot.downloads.download(d.file_url, dest, expected_sha256=want)))
        for d, frec, dest, job in jobs:
            self.depot.downloads.wait_for_job(job)
            if job.status.value != "completed":
                exc = job.exception
                if isinstance(exc, IntegrityError):
                    raise IntegrityError(f"model {key!r}: {d.file_name}: {exc}") from exc
                if isinstance(exc, ModelDepotError):
                    raise exc
                raise DownloadError(f"model {key!r}: {d.file_name}: {job.error or job.status.value}")
            if job.sha256:
                self.depot.hash_cache.put(dest, "sha256", f"sha256:{job.sha256}")
            why = check_file(dest, frec, self.depot.hash_cache)
            if why is not None:
                dest.unlink(missing_ok=True)
                raise mismatch_error(key, [f"{d.file_url}: {why.split(': ', 1)[-1]}"])
        for unit in model_units(entry):
            source = next((d.file_url for d in downloads if d.relpath in unit and d.file_url), None)
            self._install(key, entry, stage, unit, source)
        self._symlinks(entry)
        shutil.rmtree(stage, ignore_errors=True)

    def _install(self, key: str, entry: ReferenceEntry, stage: Path, unit: list[str], source: str | None) -> None:
        """Install one unit's staged files as a depot model, then link each into the Nataili folder."""
        root = unit_root(unit)
        result = self.depot.install.install_path_result(
            stage / root if root else stage,
            self._record_config(key, entry, unit),
            move=True,
            source=source or f"nataili:{self.service}/{key}",
            source_type=ModelSourceType.Url if source else ModelSourceType.External,
            force=True,
        )
        record = self._tagged(result.key, key, unit)
        for rel, target in unit_targets(unit, Path(record.path)).items():
            link_into_view(target, self.path / rel)

    def _symlinks(self, entry: ReferenceEntry) -> None:
        """Nataili's ``symlink`` download entries (an HF cache tree's snapshot -> blob links)."""
        for d in entry.config.download:
            if d.symlink is not None:
                link = self.path / d.relpath
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(os.path.relpath(self.path / d.symlink, link.parent))

    def _record_config(self, key: str, entry: ReferenceEntry, unit: list[str]) -> dict[str, Any]:
        return {
            "name": key if len(model_units(entry)) == 1 else f"{key} {PurePosixPath(unit[0]).stem}",
            "description": entry.description or entry.name,
            "tags": [*service_tags(self.service, key), f"file:{unit[0]}", *(entry.tags or [])],
        }

    def _tagged(self, record_key: str, key: str, unit: list[str]) -> ModelConfigBase:
        """The record, carrying this unit's tags (content already installed by another name gets them added)."""
        record = self.depot.store.get_model(record_key)
        have = list(record.tags or [])
        lower = {h.lower() for h in have}
        missing = [t for t in [*service_tags(self.service, key), f"file:{unit[0]}"] if t.lower() not in lower]
        if missing:
            record = self.depot.store.update_model(record_key, {"tags": have + missing})
        return record

    def _ensure_record(self, key: str, entry: ReferenceEntry, unit: list[str]) -> ModelConfigBase:
        """The depot record of a unit whose files are valid in the folder; adopts a user's files in place."""
        record = self._unit_record(key, unit)
        if record is not None and Path(record.path).exists():
            return record
        root = unit_root(unit)
        if root:
            result = self.depot.install.register_path_result(
                self.path / root, self._record_config(key, entry, unit), force=True
            )
            return self._tagged(result.key, key, unit)
        # Files spread over the service folder itself: install a copy (the folder is not one model).
        stage = self._staging(key)
        shutil.rmtree(stage, ignore_errors=True)
        for rel in unit:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.path / rel, stage / rel)
        self._install(key, entry, stage, unit, None)
        shutil.rmtree(stage, ignore_errors=True)
        found = self._unit_record(key, unit)
        assert found is not None
        return found

    # Loading -----------------------------------------------------------------------------------
    def load(self, key: str, half_precision: bool = True, gpu_id: int = 0, cpu_only: bool = False) -> ManagedModel:
        """Load ``key`` (downloading and validating it first if needed) into ``loaded_models[key]``.

        ``half_precision`` is honoured only where it runs: on CPU (or without CUDA) the model is
        float32. A second call returns the same object.

        Raises:
            UnknownModelException, IntegrityError, DownloadError, LoaderNotFoundError, ModelLoadError.
        """
        entry = self.models[key]
        with self._lock:
            if key in self.loaded_models:
                return self.loaded_models[key]
            if self.model_types and entry.type not in self.model_types:
                raise UnknownModelException(
                    f"model {key!r} has type {entry.type!r}; {type(self).__name__} loads {', '.join(self.model_types)}",
                    key=key,
                )
            if not self.is_available(key):
                self.download_model(key)
                # Also covers files[] that no download entry produces (they must be there already).
                problems = check_entry(entry, self.path, self.depot.hash_cache)
                if problems:
                    raise mismatch_error(key, problems)
            primary = _primary_unit(entry)
            record = self._ensure_record(key, entry, primary)
            for unit in model_units(entry):
                if unit != primary:
                    self._ensure_record(key, entry, unit)
            device, dtype = self._placement(half_precision, gpu_id, cpu_only)
            managed = self.load_model(key, entry, record, device=device, dtype=dtype)
            self.loaded_models[key] = managed
            return managed

    def unload_model(self, key: str) -> bool:
        """Forget ``loaded_models[key]`` and drop its parts from the cache; False if it was not loaded."""
        with self._lock:
            managed = self.loaded_models.pop(key, None)
        if managed is None:
            return False
        for part in managed.parts.values():
            part.evict()
        return True

    def _placement(self, half_precision: bool, gpu_id: int, cpu_only: bool) -> tuple[str, str]:
        """(device, dtype) overridden to what exists: no CUDA means CPU, and CPU means float32."""
        if cpu_only or not self.depot.load.device.name.startswith("cuda"):
            return "cpu", "float32"
        return f"cuda:{gpu_id}", "float16" if half_precision else "float32"

    def load_service(self, device: str, dtype: str) -> ModelLoadService:
        """The depot's load service, or (for another device or dtype) one beside it on the same records."""
        main = self.depot.load
        if (main.device.name == device and main.precision == dtype) or (device == "cpu" and main.device.name == "cpu"):
            return main
        with self._lock:
            svc = self._load_services.get((device, dtype))
            if svc is None:
                from modeldepot.load import ModelLoadService

                config = self.depot.config.model_copy(update={"device": device, "precision": dtype})
                svc = ModelLoadService(config, events=self.depot.events, record_store=self.depot.store)
                self._load_services[(device, dtype)] = svc
            return svc

    def load_part(self, record: ModelConfigBase, submodel: str | None, device: str, dtype: str) -> LoadedModel:
        """One model (or submodel) of ``record`` through the load service and its cache."""
        return self.load_service(device, dtype).load_model(record, submodel)

    def load_model(
        self, key: str, entry: ReferenceEntry, record: ModelConfigBase, *, device: str, dtype: str
    ) -> ManagedModel:
        """Build the service's model from the depot record (Nataili's ``load_<service>``); override per service."""
        part = self.load_part(record, None, device, dtype)
        return ManagedModel(key, self.service, part.model, device, part.precision, record, {"model": part})


__all__ = ["TAG", "BaseModelManager", "ManagedModel", "service_tags"]
