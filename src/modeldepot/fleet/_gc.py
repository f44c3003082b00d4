"""Bucket gc (mark and sweep) and the fleet's status, both read from the shared database.

A bucket object leaves only when no record in the shared database references its digest, no
in-flight ingest holds it (a ``storage_pending`` row, written before the blob is pushed), it was
found so by an earlier gc at least ``grace_seconds`` ago (its mark), and it is itself older than
that. The sweep of a digest holds the same lock as an upload of it, and checks again under it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from modeldepot.fleet._fleet import Fleet

#: Pending rows older than this are leftovers of a killed ingest (as the local store's recover).
PENDING_LIFETIME = 24 * 3600.0
#: A multipart upload begun longer ago than this (seconds) belongs to a worker that died.
STALE_UPLOAD = 24 * 3600.0


@dataclass
class BucketGcReport:
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    marked: list[str] = field(default_factory=list)  # unreferenced, waiting out the grace period
    kept_in_flight: list[str] = field(default_factory=list)
    aborted_uploads: int = 0  # multipart uploads a killed worker left unfinished


def _referenced(conn: sa.Connection, digest: str | None = None) -> set[str]:
    """Digests a stored model's manifest names (all of them, or just ``digest`` if it is one)."""
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT m.digest FROM storage_manifest m JOIN storage_models s ON s.model_key = m.model_key"
            " WHERE s.inplace = 0" + (" AND m.digest = :d" if digest else "")
        ),
        {"d": digest},
    )
    return {str(r[0]) for r in rows}


def _pending(conn: sa.Connection, digest: str | None = None) -> set[str]:
    """Digests an ingest in progress holds (its pending rows are younger than PENDING_LIFETIME)."""
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT digest FROM storage_pending WHERE created_at >= :c"
            + (" AND digest = :d" if digest else "")
        ),
        {"c": time.time() - PENDING_LIFETIME, "d": digest},
    )
    return {str(r[0]) for r in rows}


def collect(fleet: Fleet, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> BucketGcReport:
    report = BucketGcReport(dry_run=dry_run)
    now = time.time()
    with fleet.db.connect() as conn:
        referenced = _referenced(conn)
        held = referenced | _pending(conn)
        marks = {str(r[0]): float(r[1]) for r in conn.execute(sa.text("SELECT digest, marked_at FROM fleet_gc_marks"))}
    new_marks: list[str] = []
    unmark = [d for d in marks if d in held]
    for blob in fleet.tier.list():
        if blob.digest in held:
            if blob.digest not in referenced:
                report.kept_in_flight.append(blob.digest)
            continue
        marked_at = marks.get(blob.digest)
        if marked_at is None or now - marked_at < grace_seconds or now - blob.modified < grace_seconds:
            if marked_at is None:
                new_marks.append(blob.digest)
            report.marked.append(blob.digest)
            continue
        if dry_run:
            report.removed.append(blob.digest)
            report.bytes_freed += blob.size
            continue
        with fleet.db.exclusive(fleet._lock("fleet-blob", blob.digest)):
            with fleet.db.connect() as conn:
                if _referenced(conn, blob.digest) or _pending(conn, blob.digest):
                    unmark.append(blob.digest)
                    continue
            fleet.tier.delete(blob.digest)
        with fleet.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM fleet_gc_marks WHERE digest = :d"), {"d": blob.digest})
            conn.execute(sa.text("DELETE FROM fleet_uploads WHERE digest = :d"), {"d": blob.digest})
        report.removed.append(blob.digest)
        report.bytes_freed += blob.size
    if not dry_run:
        # An upload can run for a long time (a slow link, a huge file): only day-old ones are dead.
        report.aborted_uploads = fleet.tier.abort_stale_uploads(max(grace_seconds, STALE_UPLOAD))
    if not dry_run and (new_marks or unmark):
        with fleet.db.begin() as conn:
            for digest in unmark:
                conn.execute(sa.text("DELETE FROM fleet_gc_marks WHERE digest = :d"), {"d": digest})
            for digest in new_marks:
                conn.execute(
                    sa.text("INSERT INTO fleet_gc_marks (digest, marked_at) VALUES (:d, :t)"), {"d": digest, "t": now}
                )
    return report


@dataclass
class FleetStatus:
    bucket: str
    endpoint: str | None
    worker: str  # this one
    workers: list[dict[str, Any]]
    bucket_objects: int
    bucket_bytes: int
    logical_bytes: int  # every stored model's files, as if each model kept its own copy
    unique_bytes: int  # the distinct blobs the records reference
    missing: int  # referenced blobs the bucket lacks (a worker that has not pushed)
    in_flight: list[dict[str, Any]]
    shared_db: bool  # PostgreSQL; a SQLite file is this machine's alone

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(fleet: Fleet, *, stale_after: float = 120.0) -> FleetStatus:
    now = time.time()
    with fleet.db.connect() as conn:
        workers = conn.execute(
            sa.text("SELECT worker_id, host, home, started_at, last_seen FROM fleet_workers ORDER BY worker_id")
        ).all()
        local = conn.execute(
            sa.text(
                "SELECT l.worker_id, COUNT(DISTINCT l.model_key), COALESCE(SUM(m.size), 0) FROM fleet_local l"
                " JOIN storage_manifest m ON m.model_key = l.model_key GROUP BY l.worker_id"
            )
        ).all()
        logical = conn.execute(
            sa.text(
                "SELECT COALESCE(SUM(m.size), 0) FROM storage_manifest m"
                " JOIN storage_models s ON s.model_key = m.model_key WHERE s.inplace = 0"
            )
        ).scalar_one()
        unique = conn.execute(sa.text("SELECT COALESCE(SUM(size), 0) FROM storage_refcounts")).scalar_one()
        referenced = _referenced(conn)
        jobs = (
            conn.execute(
                sa.text(
                    "SELECT id, source, status, owner, bytes, total_bytes FROM install_jobs"
                    " WHERE status NOT IN ('completed', 'error', 'cancelled') ORDER BY id"
                )
            ).all()
            if sa.inspect(conn).has_table("install_jobs")
            else []
        )
    per_worker = {str(r[0]): (int(r[1]), int(r[2])) for r in local}
    in_bucket = {b.digest: b.size for b in fleet.tier.list()}
    return FleetStatus(
        bucket=fleet.tier.url,
        endpoint=fleet.tier.endpoint,
        worker=fleet.worker,
        workers=[
            {
                "worker": str(w[0]),
                "host": str(w[1]),
                "home": str(w[2]),
                "last_seen_seconds": round(now - float(w[4]), 1),
                "alive": now - float(w[4]) < stale_after,
                "models": per_worker.get(str(w[0]), (0, 0))[0],
                "local_logical_bytes": per_worker.get(str(w[0]), (0, 0))[1],
            }
            for w in workers
        ],
        bucket_objects=len(in_bucket),
        bucket_bytes=sum(in_bucket.values()),
        logical_bytes=int(logical),
        unique_bytes=int(unique),
        missing=len(referenced - set(in_bucket)),
        in_flight=[
            {
                "id": int(j[0]),
                "source": str(j[1]),
                "status": str(j[2]),
                "owner": j[3],
                "bytes": int(j[4] or 0),
                "total_bytes": int(j[5] or 0),
            }
            for j in jobs
        ],
        shared_db=not fleet.db.is_sqlite,
    )
