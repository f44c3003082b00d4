"""Garbage collection of unreferenced blobs, and disk usage (logical / physical / saved)."""

# os.* on purpose: errno-level fallthrough, fd-based I/O, and fault injection in tests.
# ruff: noqa: PTH116

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from modeldepot.storage import _partdb
from modeldepot.storage._blobs import is_digest
from modeldepot.storage._schema import q
from modeldepot.storage.base import DuReport, GcReport, ModelUsage

if TYPE_CHECKING:
    from modeldepot.storage._store import ContentStore


def collect(store: ContentStore, *, dry_run: bool = False, grace_seconds: float = 3600) -> GcReport:
    """Remove blobs no manifest references and no live ingest protects.

    Runs under the blob publish lock, so an ingest cannot re-reference a blob between our read
    of the references and the unlink. A pending row younger than ``grace_seconds`` protects its
    blob; older ones are stale leftovers of a killed install and protect nothing.
    """
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds
    with store.blobs.locked():
        with store.db.connect() as c:
            referenced = {str(r[0]) for r in c.execute(q("SELECT digest FROM storage_refcounts"))}
            pending = {
                str(r[0])
                for r in c.execute(
                    q("SELECT DISTINCT digest FROM storage_pending WHERE created_at >= :c"), {"c": cutoff}
                )
            }
        for path in store.blobs.iter_files():
            name = path.name
            if not (path.is_file() and not path.is_symlink() and is_digest(name) and path.parent.name == name[:2]):
                report.unexpected_files.append(path)
                continue
            if name in referenced:
                continue
            if name in pending:
                report.kept_pending.append(name)
                continue
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
            report.removed.append(name)
            report.bytes_freed += size
        if not dry_run:
            with store.db.begin() as conn:
                conn.execute(q("DELETE FROM storage_pending WHERE created_at < :c"), {"c": cutoff})
    return report


def disk_usage(store: ContentStore) -> DuReport:
    """Logical bytes (sum of every store-owned model's files), physical bytes (blobs on disk plus
    materialised copies that do not share the blob's storage), bytes saved, and per model the
    bytes of blobs only that model references."""
    report = DuReport()
    with store.db.connect() as c:
        per_model = c.execute(
            q(
                "SELECT s.model_key, s.inplace, s.link_mode, COALESCE(SUM(m.size), 0) FROM storage_models s"
                " LEFT JOIN storage_manifest m ON m.model_key = s.model_key"
                " GROUP BY s.model_key, s.inplace, s.link_mode"
            )
        ).all()
        unique: dict[str, int] = dict(
            c.execute(
                q(
                    "SELECT m.model_key, COALESCE(SUM(r.size), 0) FROM"
                    " (SELECT DISTINCT model_key, digest FROM storage_manifest) m"
                    " JOIN storage_refcounts r ON r.digest = m.digest WHERE r.models = 1 GROUP BY m.model_key"
                )
            ).all()
        )
        referenced = {str(r[0]) for r in c.execute(q("SELECT digest FROM storage_refcounts")).all()}
        for _part, size, in_files, in_split in _partdb.embedded_parts(c):
            # Split, each part is stored once: every whole-file copy beyond the first is saved.
            extra = in_files - (0 if in_split else 1)
            if extra > 0:
                report.split_savings_bytes += extra * size
                report.split_shared_parts += 1
    copies = 0
    for key, inplace, link_mode, size in per_model:
        if inplace:
            report.inplace_bytes += int(size)
            continue
        report.logical_bytes += int(size)
        if link_mode == "copy":
            copies += int(size)  # a plain copy holds its own bytes beside the blob
        report.per_model[str(key)] = ModelUsage(logical=int(size), unique_bytes=int(unique.get(key, 0)))
    blob_bytes = 0
    for path in store.blobs.iter_files():
        if is_digest(path.name) and path.is_file():
            size = os.stat(path).st_size
            blob_bytes += size
            if path.name not in referenced:
                report.unreferenced_bytes += size  # garbage until gc: not "saved", not "used"
    report.physical_bytes = blob_bytes + copies
    report.saved_bytes = report.logical_bytes - (report.physical_bytes - report.unreferenced_bytes)
    return report
