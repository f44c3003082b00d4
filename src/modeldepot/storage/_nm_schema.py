"""Tables of the normalized view (component ``storage_nm``), named after the seed design.

- ``nm_model_path``  (MODEL_PATH): one row per *part* — a set of blobs (a unet folder, a vae
  folder, a single checkpoint file) identified by its part digest, with its materialised path.
- ``nm_model_name``  (MODEL_NAME): user-visible models (name, type, format), unique by (name, type).
- ``nm_model_base``  (MODEL_BASE): the bases each model is compatible with (multi-base).
- ``nm_pipeline``    (PIPELINE): pipelines, with the store key of their top-level files.
- ``nm_pipeline_parts`` (PIPELINE_PARTS): pipeline -> (submodel, folder name, part digest).
- ``nm_part_refcounts`` (view): how many models use each part.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from modeldepot._db import Database

COMPONENT = "storage_nm"


def _v1(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE nm_model_path ("
        " part_digest CHAR(64) PRIMARY KEY,"
        " store_key VARCHAR(255) NOT NULL,"
        " kind VARCHAR(8) NOT NULL,"
        " path TEXT NOT NULL,"
        " size BIGINT NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_model_name ("
        " model_id VARCHAR(64) PRIMARY KEY,"
        " name VARCHAR(255) NOT NULL,"
        " type VARCHAR(64) NOT NULL,"
        " format VARCHAR(64) NOT NULL,"
        " part_digest CHAR(64) REFERENCES nm_model_path(part_digest),"
        " created_at DOUBLE PRECISION NOT NULL,"
        " UNIQUE (name, type))"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_model_base ("
        " model_id VARCHAR(64) NOT NULL REFERENCES nm_model_name(model_id) ON DELETE CASCADE,"
        " base VARCHAR(64) NOT NULL,"
        " is_primary INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (model_id, base))"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_pipeline ("
        " model_id VARCHAR(64) PRIMARY KEY REFERENCES nm_model_name(model_id) ON DELETE CASCADE,"
        " top_key VARCHAR(255),"
        " path TEXT)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_pipeline_parts ("
        " model_id VARCHAR(64) NOT NULL REFERENCES nm_pipeline(model_id) ON DELETE CASCADE,"
        " submodel VARCHAR(64) NOT NULL,"
        " folder TEXT NOT NULL,"
        " part_digest CHAR(64) NOT NULL REFERENCES nm_model_path(part_digest),"
        " PRIMARY KEY (model_id, folder))"
    )
    conn.exec_driver_sql("CREATE INDEX ix_nm_pipeline_parts_part ON nm_pipeline_parts (part_digest)")
    conn.exec_driver_sql(
        "CREATE VIEW nm_part_refcounts AS"
        " SELECT p.part_digest AS part_digest,"
        " (SELECT COUNT(*) FROM nm_pipeline_parts pp WHERE pp.part_digest = p.part_digest)"
        " + (SELECT COUNT(*) FROM nm_model_name n WHERE n.part_digest = p.part_digest) AS refcount"
        " FROM nm_model_path p"
    )


def migrate(db: Database) -> None:
    db.migrate(COMPONENT, [_v1])
