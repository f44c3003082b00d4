"""Tables of the ``fleet`` component, in the database the workers share (PostgreSQL).

- ``fleet_workers``: one row per worker (home): host, home folder, when it was last seen.
- ``fleet_local``: which worker holds which model in its local store, where (that worker's path,
  so a model deleted from another worker leaves no folder behind here), and when it last used it
  (the LRU order of ``local_cache_gb``).
- ``fleet_uploads``: who sent each blob to the bucket, and when (each blob crosses once).
- ``fleet_gc_marks``: bucket objects a gc found unreferenced, and since when; a later gc removes
  them only if they are still unreferenced after the grace period (mark and sweep).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from modeldepot._db import Database

COMPONENT = "fleet"


def _v1(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE fleet_workers ("
        " worker_id VARCHAR(128) PRIMARY KEY,"
        " host VARCHAR(255) NOT NULL,"
        " home TEXT NOT NULL,"
        " started_at DOUBLE PRECISION NOT NULL,"
        " last_seen DOUBLE PRECISION NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE fleet_local ("
        " worker_id VARCHAR(128) NOT NULL,"
        " model_key VARCHAR(255) NOT NULL,"
        " path TEXT NOT NULL,"
        " pulled_at DOUBLE PRECISION NOT NULL,"
        " last_used DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (worker_id, model_key))"
    )
    conn.exec_driver_sql(
        "CREATE TABLE fleet_uploads ("
        " digest CHAR(64) PRIMARY KEY,"
        " size BIGINT NOT NULL,"
        " worker_id VARCHAR(128) NOT NULL,"
        " uploaded_at DOUBLE PRECISION NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE fleet_gc_marks (digest CHAR(64) PRIMARY KEY, marked_at DOUBLE PRECISION NOT NULL)"
    )


def migrate(db: Database) -> None:
    db.migrate(COMPONENT, [_v1])
