"""Maintenance over the stores: scan, re-identify, repair, Civitai lookup, the download cache.

Plain functions over a home's services (and the local installer where they register models);
the install service exposes them as methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from pydantic import SecretStr

from modeldepot._fs import atomic_write_text, fsync_dir, join_inside, tree_size
from modeldepot.configs import class_for
from modeldepot.download import DownloadJob
from modeldepot.errors import (
    DownloadError,
    DuplicateModelException,
    InvalidSourceError,
    ModelDepotError,
    ModelNotFoundException,
    UnknownModelException,
)
from modeldepot.hashing import civitai_hashes
from modeldepot.identify import identify, record_fields
from modeldepot.install._handoff import Handoff
from modeldepot.install._local import LocalInstaller
from modeldepot.install._locations import known_location, record_location
from modeldepot.remote.civitai import CivitaiClient
from modeldepot.remote.plan import DownloadPlan, plan_download
from modeldepot.remote.sources import AnyModelSource, LocalModelSource, parse_source
from modeldepot.storage._split import is_split_dir, write_header_stub
from modeldepot.storage._verify import problems
from modeldepot.taxonomy import WEIGHT_SUFFIXES, ModelSourceType

if TYPE_CHECKING:
    from modeldepot._compose import DepotServices
    from modeldepot.configs import ModelConfigBase
    from modeldepot.download import AnyDownloadJob, DownloadQueueService
    from modeldepot.storage import VerifyReport

log = logging.getLogger(__name__)
_CACHE_ENTRY = "entry.json"
# Seed 002's own example names a repo file from the repo root: org/name::/checkpoints/sd4.safetensors.
_ROOTED_SUBPATH = re.compile(r"^(?P<head>[^:/\s]+/[^:/\s]+(?:@[^:\s]+)?:[^:/]*:)/+(?P<rest>\S.*)$")
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
            elif entry.suffix.lower() in WEIGHT_SUFFIXES and entry.is_file():
                found.append(entry)
    return sorted(found)


def scan_folder(services: DepotServices, folder: str | Path) -> list[dict[str, Any]]:
    """What model files are under ``folder`` and whether each is registered.

    ``is_installed``: a model is registered at that path; ``duplicate_of``: the path is a known
    copy (an extra location) of that model's content.
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ModelNotFoundException(f"{root}: no such folder", path=root)
    store = services.store
    out = []
    for path in find_models(root):
        hits = store.search_by_path(path)
        entry: dict[str, Any] = {"path": str(path), "is_installed": bool(hits), "key": hits[0].key if hits else None}
        if not hits:
            copy = known_location(services.db, path)
            if copy is not None and store.exists(copy.model_key):
                entry["duplicate_of"] = copy.model_key
        out.append(entry)
    return out


def scan_and_register(installer: LocalInstaller, folder: str | Path, inplace: bool = True) -> list[dict[str, Any]]:
    """Register (in place) or install every model under ``folder``; one result per model.

    Statuses: ``registered`` (a new record), ``present`` (registered at that path before),
    ``duplicate`` (the same content as a registered model; the path is remembered),
    ``known`` (a copy remembered by an earlier scan), ``skipped`` (not a model, or unreadable).
    """
    services = installer.services
    results: list[dict[str, Any]] = []
    for entry in scan_folder(services, folder):
        path = Path(entry["path"])
        if entry["is_installed"]:
            results.append({"path": str(path), "status": "present", "key": entry["key"]})
            continue
        if entry.get("duplicate_of"):
            key = entry["duplicate_of"]
            name = services.store.get_model(key).name
            detail = f"a copy of {name!r} (key {key}), already known"
            results.append({"path": str(path), "status": "known", "key": key, "detail": detail})
            continue
        try:
            result = installer.register(path) if inplace else installer.install(path)
        except DuplicateModelException as exc:
            results.append({"path": str(path), "status": "duplicate", "key": exc.key, "detail": str(exc)})
            continue
        except ModelDepotError as exc:
            results.append({"path": str(path), "status": "skipped", "detail": str(exc)})
            continue
        if result.created:
            results.append({"path": str(path), "status": "registered", "key": result.key})
            continue
        if not inplace:
            record_location(services.db, path, result.key)
        results.append({"path": str(path), "status": "duplicate", "key": result.key, "detail": result.message})
    return results


def reidentify(services: DepotServices, key: str) -> ModelConfigBase:
    """Identify a model's files again and update what identification decides in its record
    (through the same mapping an install uses)."""
    config = services.store.get_model(key)
    path = Path(config.path)
    if is_split_dir(path):  # split_single_files: identify the original header, kept in split.json
        services.config.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=services.config.tmp_dir) as tmp:
            fields = record_fields(identify(write_header_stub(path, Path(tmp) / f"{path.name}.safetensors")))
    else:
        fields = record_fields(identify(path))
    allowed = class_for(fields["type"], fields["format"]).model_fields
    return services.store.update_model(key, {k: v for k, v in fields.items() if k in allowed})


def repair_storage(
    installer: LocalInstaller, reinstall: Callable[[str], str | None], key: str | None = None
) -> VerifyReport:
    """Verify and repair the store; what no good copy can restore is read again from the damaged
    model's recorded source: a local path that still exists, or the remote source through
    ``reinstall(source)`` (which returns an error text, or None when it worked).

    ``VerifyReport.remaining`` lists what is still damaged afterwards (empty: all healed).
    """
    services = installer.services
    storage = services.storage
    report = storage.verify(key=key, repair=True)
    if report.healthy:
        return report
    for damaged in sorted(report.affected_models):
        if storage.verify(key=damaged).ok:
            continue  # repaired from a good copy already
        try:
            record = services.store.get_model(damaged)
        except UnknownModelException:
            continue
        how = _refetch(installer, reinstall, record)
        if how is not None:
            report.repaired.append(f"model {record.name} ({record.key}) {how}")
    report.remaining = problems(storage.verify(key=key))
    return report


def _refetch(installer: LocalInstaller, reinstall: Callable[[str], str | None], record: ModelConfigBase) -> str | None:
    """Read a damaged model's bytes again from its source; None if that was not possible."""
    source = record.source
    if record.inplace or not source:
        return None
    if record.source_type in (None, ModelSourceType.Path):
        path = Path(source)
        if not path.exists():
            log.error("cannot repair %s: its source %s is gone", record.key, path)
            return None
        storage = installer.services.storage
        staged = storage.stage(path)  # the store replaces the blobs it knows are bad
        storage.discard(staged)
        return f"re-read from {path}" if staged.healed else None
    error = reinstall(source)  # sees the damaged copy and downloads again
    if error is not None:
        log.error("cannot repair %s: re-downloading %s failed: %s", record.key, source, error)
        return None
    return f"downloaded again from {source}"


def civitai_lookup(services: DepotServices, key: str, apply: bool = True) -> dict[str, Any]:
    """Look a registered file up on Civitai by its SHA256 and (optionally) fill its metadata."""
    config = services.store.get_model(key)
    path = Path(config.path)
    if not path.is_file():
        raise InvalidSourceError(f"{config.name}: only single files can be looked up on Civitai by hash")
    hashes = civitai_hashes(path, cache=services.hash_cache)
    with CivitaiClient.from_config(services.config) as client:
        version = client.get_version_by_hash(hashes.sha256)
        meta = client.metadata_for_record(version)
    meta.pop("type", None)
    meta.pop("base", None)  # the file's header decides the base; Civitai's is kept as a tag
    changes = {k: v for k, v in meta.items() if k != "name" or not config.name}
    changes["tags"] = list(dict.fromkeys([*config.tags, *meta.get("tags", [])]))
    if apply:
        services.store.update_model(key, changes)
    return {"civitai_version": version.id, **changes}


def missing_models(services: DepotServices) -> list[dict[str, Any]]:
    """Records whose files vanished.

    On a fleet worker the records are every worker's: a model whose files are not here is not
    lost (the bucket has a stored model's blobs; a model registered in place lives on the machine
    that registered it), so nothing is reported for it and ``doctor --fix`` never forgets it.
    """
    if services.config.blob_remote is not None:
        return []
    return [
        {"key": r.key, "name": r.name, "path": r.path} for r in services.store.all_models() if not Path(r.path).exists()
    ]


def download_and_cache(
    services: DepotServices, source: str | AnyModelSource, access_token: str | None = None, timeout: float = 0
) -> Path:
    """Download a remote model (or any file) into the size-capped LRU download cache, unregistered,
    and return its local path: the file for a single file, the folder otherwise.

    ``source`` is a URL, a Civitai reference, or a Hugging Face repo id in seed 002's syntax:
    ``org/name`` (the model), ``org/name:fp16`` (a variant), ``org/name:fp16:vae`` or
    ``org/name::vae`` (a subfolder), ``org/name::path/file.safetensors`` (one file; a leading ``/``
    is allowed); typed sources work too. Files are chosen as an install chooses them
    (:func:`~modeldepot.remote.plan.plan_download`), downloaded into a staging folder and published
    with one rename, so a returned path is always complete. The same source again is served from the
    cache without a request. A local path is returned as it is.

    Raises:
        InvalidSourceError: ``source`` names nothing this can fetch.
        TimeoutError: not done within ``timeout`` seconds (0: no limit); the partial download is
            kept and the next call resumes it.
        DownloadError: the download failed (its subclasses say why).
    """
    parsed = _parse_cache_source(services, source, access_token)
    if isinstance(parsed, LocalModelSource):
        return Path(parsed.path)
    cache = services.config.home / "download_cache"
    entry = cache / hashlib.sha256(str(parsed).encode("utf-8")).hexdigest()[:32]
    hit = _cached(entry)
    if hit is not None:
        return hit
    staging = cache / ".staging" / entry.name
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        # One download per source at a time, across the threads and processes sharing this home.
        with FileLock(f"{staging}.lock", timeout=timeout if timeout else -1):
            hit = _cached(entry)
            if hit is not None:
                return hit  # another caller finished it while this one waited
            rel = _fetch_into(services, parsed, staging / "files", timeout)
            atomic_write_text(staging / _CACHE_ENTRY, json.dumps({"source": str(parsed), "path": rel}))
            shutil.rmtree(entry, ignore_errors=True)  # an entry without its marker (older versions)
            os.replace(staging, entry)
            fsync_dir(cache)
    except Timeout as exc:
        raise TimeoutError(f"{parsed} is being downloaded by another caller; not done within {timeout} s") from exc
    _evict_download_cache(cache, keep=entry, cap=int(services.config.download_cache_gb * 1024**3))
    hit = _cached(entry)
    if hit is None:
        raise ModelNotFoundException(f"the download of {parsed} vanished from the cache at {entry}", path=entry)
    return hit


def start_plan_download(
    downloads: DownloadQueueService,
    plan: DownloadPlan,
    token: str | None,
    handoff: Handoff | None = None,
    **handlers: Any,
) -> AnyDownloadJob:
    """Start downloading ``plan`` into ``plan.dest`` (a partial file left there is resumed).

    With ``handoff``, the jobs also hash what the store will need while the bytes arrive.
    """
    plan.dest.mkdir(parents=True, exist_ok=True)  # a folder: a plain URL's file is named by the server
    if len(plan.files) == 1 and plan.single_url:
        f = plan.files[0]
        # Resuming: aim at the partial file directly, so no probe request re-sends bytes that are
        # already on disk.
        partial = sorted(plan.dest.glob("*.part.json"))
        target = partial[0].with_name(partial[0].name.removesuffix(".part.json")) if len(partial) == 1 else plan.dest
        job = DownloadJob(
            source=f.url,
            dest=target,
            access_token=token,
            expected_sha256=f.sha256.lower() if f.sha256 else None,
        )
        if handoff is not None:
            handoff.prepare([job])
        downloads.submit_download_job(job, **handlers)
        return job
    mf = downloads.multifile_download(list(plan.files), plan.dest, access_token=token, submit_job=False, **handlers)
    if handoff is not None:
        handoff.prepare(mf.download_parts)
    downloads.submit_multifile_download(mf)
    return mf


def _parse_cache_source(
    services: DepotServices, source: str | AnyModelSource, access_token: str | None
) -> AnyModelSource:
    if not isinstance(source, str):
        if access_token and not isinstance(source, LocalModelSource):
            return source.model_copy(update={"access_token": SecretStr(access_token)})
        return source
    rooted = _ROOTED_SUBPATH.match(source.strip())
    if rooted is not None:
        source = rooted["head"] + rooted["rest"]
    return parse_source(source, config=services.config, access_token=access_token)


def _cached(entry: Path) -> Path | None:
    """The file or folder a complete cache entry holds (and mark it recently used); None if none."""
    try:
        rel = json.loads((entry / _CACHE_ENTRY).read_text(encoding="utf-8"))["path"]
        path = join_inside(entry / "files", rel) if rel else entry / "files"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not path.exists():
        return None
    os.utime(entry)  # most recently used
    return path


def _fetch_into(services: DepotServices, source: AnyModelSource, dest: Path, timeout: float) -> str:
    """Download ``source`` into ``dest``; returns where the model is inside it ("" = dest itself)."""
    plan = plan_download(services.config, source, dest)
    downloads = services.downloads
    job = start_plan_download(downloads, plan, source.token_value() or plan.token)
    try:
        downloads.wait_for_job(job, timeout=timeout)
    except TimeoutError:
        downloads.pause_job(job)  # the partial files stay for the next call to resume
        with contextlib.suppress(TimeoutError):
            downloads.wait_for_job(job, timeout=30)
        raise TimeoutError(f"the download of {source} did not finish within {timeout} s") from None
    if not job.complete:
        if isinstance(job.exception, ModelDepotError):
            raise job.exception
        raise DownloadError(f"the download of {source} failed: {job.error or job.status.value}")
    if plan.single_url and job.download_path is not None:
        return Path(job.download_path).relative_to(dest).as_posix()
    return plan.model_subpath or ""


def _evict_download_cache(cache: Path, keep: Path, cap: int) -> None:
    entries = []
    for folder in cache.iterdir():
        if folder.name.startswith("."):
            continue  # staging: downloads in progress
        size = tree_size(folder)
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
