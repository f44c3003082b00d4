"""Value objects of the content-addressed store, and the crash-point hook used by kill -9 tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

LinkModeName = Literal["reflink", "hardlink", "symlink", "copy"]
#: Environment variable naming a crash point; read at call time only (tests kill -9 an import there).
CRASH_ENV = "MODELDEPOT_STORAGE_CRASH_AT"


def crashpoint(name: str) -> None:
    """Die like ``kill -9`` when ``MODELDEPOT_STORAGE_CRASH_AT`` names this point (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), 9)


class BlobMirror(Protocol):
    """A second home of the blobs (a fleet's bucket): the store pushes what it stages and fetches a
    blob it lacks before materialising. ``fetch`` puts the verified blob into the local store."""

    def push(self, entries: tuple[ManifestEntry, ...]) -> None: ...

    def fetch(self, entries: tuple[ManifestEntry, ...]) -> None: ...

    def materialised(self, key: str, dest: Path) -> None: ...


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob: its blake3 hex digest and size in bytes.

    ``healed``: this ingest replaced a stored blob of the same digest that was known to be damaged.
    """

    digest: str
    size: int
    healed: bool = False


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a model: where it goes (relative POSIX path), what it holds, its mode bits."""

    relpath: str
    digest: str
    size: int
    mode: int = 0o444


@dataclass(frozen=True)
class StagedModel:
    """Files ingested into blobs, not yet owned by a model. Pass to :meth:`ContentStore.commit`.

    ``kind`` is ``"file"`` for a single file (one entry whose relpath is the file name) or
    ``"folder"``. ``stage_id`` names the pending rows that protect the new blobs from gc.
    ``move``: the sources are to be removed by :meth:`ContentStore.release_sources` once the
    manifest is committed (until then they share their inodes with the blobs: no extra space).
    """

    stage_id: str
    kind: Literal["file", "folder"]
    entries: tuple[ManifestEntry, ...]
    source: Path
    move: bool = False
    #: Digests whose damaged blob this stage replaced (the models using them were rebuilt).
    healed: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True)
class ModelManifest:
    key: str
    kind: Literal["file", "folder"]
    inplace: bool
    dest: Path | None
    link_mode: str | None
    entries: tuple[ManifestEntry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True)
class MaterialiseResult:
    path: Path
    mode_used: str


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    unexpected_files: list[Path] = field(default_factory=list)
    kept_pending: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class VerifyReport:
    corrupt_blobs: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    damaged_files: list[Path] = field(default_factory=list)
    affected_models: dict[str, list[str]] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    blobs_checked: int = 0
    files_checked: int = 0
    #: After a repair: the problems still there (checked again), empty when everything was healed.
    remaining: list[str] = field(default_factory=list)
    repair_attempted: bool = False

    @property
    def ok(self) -> bool:
        """Nothing was wrong when checked (before any repair)."""
        return not (self.corrupt_blobs or self.missing_blobs or self.damaged_files)

    @property
    def healthy(self) -> bool:
        """Nothing is wrong now: all good, or a repair fixed everything found."""
        return not self.remaining if self.repair_attempted else self.ok

    def _affect(self, key: str, what: str) -> None:
        items = self.affected_models.setdefault(key, [])
        if what not in items:
            items.append(what)


@dataclass(frozen=True)
class ModelUsage:
    logical: int
    unique_bytes: int


@dataclass
class DuReport:
    logical_bytes: int = 0
    physical_bytes: int = 0
    saved_bytes: int = 0
    inplace_bytes: int = 0
    #: Blobs no model references any more (removed by gc); counted in physical_bytes.
    unreferenced_bytes: int = 0
    per_model: dict[str, ModelUsage] = field(default_factory=dict)
    #: What ``split_single_files`` would save: parts (a VAE, a text encoder) embedded in several
    #: single-file checkpoints, each stored whole today, would be stored once.
    split_savings_bytes: int = 0
    split_shared_parts: int = 0


@dataclass
class ViewReport:
    created: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


__all__ = [
    "CRASH_ENV",
    "BlobInfo",
    "DuReport",
    "GcReport",
    "LinkModeName",
    "ManifestEntry",
    "MaterialiseResult",
    "ModelManifest",
    "ModelUsage",
    "StagedModel",
    "VerifyReport",
    "ViewReport",
    "crashpoint",
]
