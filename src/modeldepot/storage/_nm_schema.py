"""Tables of the normalized view (component ``storage_nm``), named after the seed design.

Version 2 (one namespace): the record store is MODEL_NAME and the diffusers main records are
PIPELINE; parts are recorded for every installed model:

- ``nm_part``       (MODEL_PATH): one row per part (``storage._parts``: a content hash over its
  tensors, or over its files), with the store key and path of its own materialised diffusers
  component once one was built (a single file's embedded VAE on first request).
- ``nm_part_base``  (MODEL_BASE): the bases each part works with (an SD-1 VAE part: sd-1, sd-2).
- ``nm_model_part`` (PIPELINE_PARTS): model key -> (folder, submodel, part, embedded?).
- ``nm_part_use``   (view): how many models use each part (the refcount).

Version 1 tables (a separate namespace) stay until the normalized view moves their models into
the record store (``NormalizedStore._adopt_v1``):

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


def _v2(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE nm_part ("
        " part_id CHAR(64) PRIMARY KEY,"
        " kind VARCHAR(16) NOT NULL,"
        " submodel VARCHAR(64) NOT NULL,"
        " size BIGINT NOT NULL,"
        " store_key VARCHAR(255),"
        " path TEXT)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_part_base ("
        " part_id CHAR(64) NOT NULL REFERENCES nm_part(part_id) ON DELETE CASCADE,"
        " base VARCHAR(64) NOT NULL,"
        " PRIMARY KEY (part_id, base))"
    )
    conn.exec_driver_sql(
        "CREATE TABLE nm_model_part ("
        " model_key VARCHAR(255) NOT NULL,"
        " folder TEXT NOT NULL,"
        " submodel VARCHAR(64) NOT NULL,"
        " part_id CHAR(64) NOT NULL REFERENCES nm_part(part_id),"
        " embedded INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (model_key, folder))"
    )
    conn.exec_driver_sql("CREATE INDEX ix_nm_model_part_part ON nm_model_part (part_id)")
    conn.exec_driver_sql(
        "CREATE VIEW nm_part_use AS SELECT p.part_id AS part_id,"
        " (SELECT COUNT(DISTINCT mp.model_key) FROM nm_model_part mp WHERE mp.part_id = p.part_id) AS refcount"
        " FROM nm_part p"
    )


def migrate(db: Database) -> None:
    db.migrate(COMPONENT, [_v1, _v2])
