"""Verify: re-hash blobs and materialised files, report damage per model, optionally repair.

Repair order: a corrupt or missing blob is restored from a materialised file whose content still
hashes to the digest (a copy or reflink); then every damaged model folder is rebuilt from blobs.
A blob with no good copy anywhere stays reported (never served: copy-mode materialisation
re-hashes and fails, and the model is listed as affected) and is remembered as bad, so the next
ingest of the same content (a reinstall) replaces it. After a repair everything is checked again:
``VerifyReport.remaining`` lists what is still wrong.
"""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH114, PTH116

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from modeldepot._fs import join_inside
from modeldepot.errors import ModelDepotError, StorageError
from modeldepot.storage._blobs import hash_path
from modeldepot.storage.base import ModelManifest, VerifyReport

if TYPE_CHECKING:
    from modeldepot.storage._store import ContentStore

log = logging.getLogger(__name__)


def _file_of(man: ModelManifest, relpath: str) -> Path:
    assert man.dest is not None
    return man.dest if man.kind == "file" else join_inside(man.dest, relpath)


def verify(store: ContentStore, *, key: str | None = None, repair: bool = False) -> VerifyReport:
    report = VerifyReport()
    keys = [key] if key is not None else store.keys()
    manifests = [store.manifest(k) for k in keys]
    if store.mirror is not None:
        # A fleet's manifests are every worker's: check the models this worker holds.
        held = [m for m in manifests if m.dest is not None and (m.dest.exists() or m.dest.is_symlink())]
        if key is not None and not held:
            raise StorageError(f"model {key} is not local on this worker; `modeldepot pull` it first")
        manifests = held
    bad_blobs: dict[str, str] = {}  # digest -> "corrupt" | "missing"
    checked: set[str] = set()
    for man in manifests:
        if man.inplace:
            continue
        for e in man.entries:
            if e.digest in checked:
                continue
            checked.add(e.digest)
            state = store.blobs.verify(e.digest)
            report.blobs_checked += 1
            if state is None:
                bad_blobs[e.digest] = "missing"
                report.missing_blobs.append(e.digest)
            elif state is False:
                bad_blobs[e.digest] = "corrupt"
                report.corrupt_blobs.append(e.digest)
    good_copies: dict[str, Path] = {}
    damaged_models: set[str] = set()
    for man in manifests:
        if man.dest is None:
            continue
        for e in man.entries:
            path = _file_of(man, e.relpath)
            report.files_checked += 1
            problem = _check_file(store, man, e.digest, path, good_copies)
            if problem is None and e.digest in bad_blobs and not man.inplace:
                problem = f"{e.relpath}: its blob is {bad_blobs[e.digest]}"
            if problem is not None:
                report.damaged_files.append(path)
                report._affect(man.key, problem)
                if not man.inplace:
                    damaged_models.add(man.key)
        for e in man.entries:
            if e.digest in bad_blobs and not man.inplace:
                report._affect(man.key, f"{e.relpath}: blob {e.digest} is {bad_blobs[e.digest]}")
                damaged_models.add(man.key)
    store.mark_blobs(bad_blobs, checked - set(bad_blobs))
    if repair:
        report.repair_attempted = True
        if not report.ok:
            _repair(store, report, bad_blobs, good_copies, damaged_models)
            report.remaining = problems(verify(store, key=key))
    return report


def problems(report: VerifyReport) -> list[str]:
    """One line per problem a report found."""
    out = [f"corrupt blob {d}" for d in report.corrupt_blobs]
    out += [f"missing blob {d}" for d in report.missing_blobs]
    out += [f"damaged file {p}" for p in report.damaged_files]
    return out


def _check_file(store: ContentStore, man: ModelManifest, digest: str, path: Path, good: dict[str, Path]) -> str | None:
    """None if ``path`` serves ``digest``; else what is wrong with it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path} is missing"
    if man.inplace:
        return None if hash_path(path) == digest else f"{path} changed since it was registered"
    blob = store.blobs.path_for(digest)
    if os.path.islink(path):
        if os.path.realpath(path) != os.path.realpath(blob):
            return f"{path} is a symlink that no longer points at its blob"
        return None
    try:
        bst = os.stat(blob)
        if (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino):
            return None  # hardlink: the blob check covers its content
    except FileNotFoundError:
        pass
    if hash_path(path) != digest:
        return f"{path} was modified (content no longer matches the manifest)"
    good.setdefault(digest, path)
    if man.link_mode == "hardlink":
        return f"{path} is no longer linked to its blob"
    return None


def _repair(
    store: ContentStore,
    report: VerifyReport,
    bad_blobs: dict[str, str],
    good: dict[str, Path],
    damaged_models: set[str],
) -> None:
    unrepairable: set[str] = set()
    for digest, state in bad_blobs.items():
        source = good.get(digest)
        if source is None:
            unrepairable.add(digest)
            log.error("blob %s is %s and no good copy exists; reinstall the affected models", digest, state)
            continue
        with store.blobs.locked():
            store.blobs.path_for(digest).unlink(missing_ok=True)
        info = store.blobs.add_file(source, move=False)
        if info.digest != digest:  # the copy changed under us
            unrepairable.add(digest)
            continue
        report.repaired.append(f"blob {digest} restored from {source}")
    with store.db.connect() as c:
        from modeldepot.storage._schema import q

        users = {
            d: [
                str(r[0])
                for r in c.execute(q("SELECT DISTINCT model_key FROM storage_manifest WHERE digest = :d"), {"d": d})
            ]
            for d in bad_blobs
        }
    # Hardlinked files of a restored blob still share the old (corrupt) inode: rebuild them too.
    for digest in bad_blobs:
        if digest not in unrepairable:
            damaged_models.update(users.get(digest, []))
    for key in sorted(damaged_models):
        man = store.manifest(key)
        if man.inplace or man.dest is None or any(e.digest in unrepairable for e in man.entries):
            continue
        try:
            store.materialise(key)
        except ModelDepotError as exc:
            log.error("could not rebuild model %s: %s", key, exc)
            continue
        report.repaired.append(f"model {key} rebuilt at {man.dest}")
