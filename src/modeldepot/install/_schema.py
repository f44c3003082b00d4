"""The install component's tables: ``install_jobs`` (jobs, their owner and lease) and
``install_locations`` (extra copies of registered content). Migrations only; no queries."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from modeldepot._db import Database


def _v1(conn: sa.Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS install_jobs ("
        " id INTEGER PRIMARY KEY, source TEXT NOT NULL, inplace INTEGER NOT NULL,"
        " config_in TEXT NOT NULL, status VARCHAR(32) NOT NULL, created_at FLOAT NOT NULL)"
    )
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_install_jobs_status ON install_jobs (status)")


def _v2(conn: sa.Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS install_locations ("
        " path TEXT PRIMARY KEY, model_key VARCHAR(255) NOT NULL, size BIGINT NOT NULL,"
        " mtime_ns BIGINT NOT NULL, recorded_at FLOAT NOT NULL)"
    )
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_install_locations_key ON install_locations (model_key)")


def _v3(conn: sa.Connection) -> None:
    # Several processes share a home (or a PostgreSQL): a job belongs to the process running it
    # (owner + lease renewed by its heartbeat), ids come from the database, and what a job ended
    # with is recorded so another process waiting for it can report it.
    for column in (
        "owner VARCHAR(128)",
        "lease_until FLOAT NOT NULL DEFAULT 0",
        "model_key VARCHAR(255)",
        "error TEXT",
        "bytes BIGINT NOT NULL DEFAULT 0",
        "total_bytes BIGINT NOT NULL DEFAULT 0",
        "updated_at FLOAT NOT NULL DEFAULT 0",
    ):
        conn.exec_driver_sql(f"ALTER TABLE install_jobs ADD COLUMN {column}")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_install_jobs_source ON install_jobs (source)")
    # Servers that take queued jobs (``install --no-wait`` asks whether one runs).
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS install_watchers (owner VARCHAR(128) PRIMARY KEY, lease_until FLOAT NOT NULL)"
    )
    if conn.dialect.name != "sqlite":
        # SQLite's INTEGER PRIMARY KEY already takes the next rowid; PostgreSQL needs a sequence.
        conn.exec_driver_sql("CREATE SEQUENCE IF NOT EXISTS install_jobs_id_seq OWNED BY install_jobs.id")
        conn.exec_driver_sql(
            "SELECT setval('install_jobs_id_seq', COALESCE((SELECT MAX(id) FROM install_jobs), 0) + 1, false)"
        )
        conn.exec_driver_sql("ALTER TABLE install_jobs ALTER COLUMN id SET DEFAULT nextval('install_jobs_id_seq')")


MIGRATIONS: list[Any] = [_v1, _v2, _v3]
_ensured: weakref.WeakSet[Database] = weakref.WeakSet()


def ensure_schema(db: Database) -> None:
    """Create or upgrade the install tables (once per database per process)."""
    if db in _ensured:
        return
    db.migrate("install", MIGRATIONS)
    _ensured.add(db)
