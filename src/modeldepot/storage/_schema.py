"""Tables of the ``storage`` component (same database as the records, so one transaction holds both).

- ``storage_models``: one row per stored model: kind (file/folder), in place or not, the
  materialised path (``dest``; for in-place models the user's path) and the link mode used.
- ``storage_manifest``: per model, its files (relpath, blake3 digest, size, mode).
- ``storage_pending``: blobs written by an ingest not yet committed (protected from gc).
- ``storage_refcounts`` (view): refcount of a blob = manifest entries of store-owned models.
- ``storage_bad_blobs``: blobs a verify found corrupt or missing. An ingest of the same content
  replaces such a blob instead of deduplicating onto it (the healing path of a reinstall).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modeldepot._db import Database

COMPONENT = "storage"


def _v1(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE storage_models ("
        " model_key VARCHAR(255) PRIMARY KEY,"
        " kind VARCHAR(8) NOT NULL,"
        " inplace INTEGER NOT NULL DEFAULT 0,"
        " dest TEXT,"
        " link_mode VARCHAR(64),"
        " created_at DOUBLE PRECISION NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE storage_manifest ("
        " model_key VARCHAR(255) NOT NULL REFERENCES storage_models(model_key) ON DELETE CASCADE,"
        " relpath TEXT NOT NULL,"
        " digest CHAR(64) NOT NULL,"
        " size BIGINT NOT NULL,"
        " mode INTEGER NOT NULL,"
        " PRIMARY KEY (model_key, relpath))"
    )
    conn.exec_driver_sql("CREATE INDEX ix_storage_manifest_digest ON storage_manifest (digest)")
    conn.exec_driver_sql(
        "CREATE TABLE storage_pending ("
        " stage_id VARCHAR(64) NOT NULL,"
        " digest CHAR(64) NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (stage_id, digest))"
    )
    conn.exec_driver_sql("CREATE INDEX ix_storage_pending_digest ON storage_pending (digest)")
    conn.exec_driver_sql(
        "CREATE VIEW storage_refcounts AS"
        " SELECT m.digest AS digest, COUNT(*) AS refcount, COUNT(DISTINCT m.model_key) AS models,"
        " MAX(m.size) AS size"
        " FROM storage_manifest m JOIN storage_models s ON s.model_key = m.model_key"
        " WHERE s.inplace = 0 GROUP BY m.digest"
    )


def _v2(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE storage_bad_blobs ("
        " digest CHAR(64) PRIMARY KEY,"
        " state VARCHAR(16) NOT NULL,"
        " found_at DOUBLE PRECISION NOT NULL)"
    )


def migrate(db: Database) -> None:
    db.migrate(COMPONENT, [_v1, _v2])


def q(sql: str) -> sa.TextClause:
    return sa.text(sql)
