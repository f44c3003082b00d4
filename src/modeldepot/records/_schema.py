"""SQL schema of the record store: the query-side tables and the numbered migrations.

Migrations build their own table objects (never the query-side ones below) so that step 1 keeps
creating exactly the v1 schema however the current definition evolves.

Layout: ``models`` holds one row per record: the indexed columns every search filters or sorts
on, plus ``config``, the whole record as JSON text (the source of truth; the columns are copies).
``model_bases`` lists every base a record works with (its ``base`` and its ``compatible_bases``),
with copies of the record's base, type and name, so "search by base [and type]" is one ordered
index range; ``model_tags`` does the same for tags (v3 on), holding each tag case-folded
(``str.casefold``) so a tag search is case-insensitive and still one ordered index range; the
record's ``config`` keeps the spelling the user typed.

Free text (``q``, a substring of ``search_text``) has a trigram index (v4 on): on SQLite the FTS5
table ``models_fts`` (``trigram`` tokenizer, external content over ``models``), kept in sync by
triggers; on PostgreSQL a ``pg_trgm`` GIN index on ``search_text``. Either is optional: a SQLite
without FTS5 trigram (older than 3.34) or a PostgreSQL role that may not create ``pg_trgm`` gets
a log line and the ``LIKE`` scan, never an error. ``sync_search_index`` runs at every open and
brings the index to what the engine supports, so one appears once the engine can have it.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modeldepot._db import Database, Migration
from modeldepot.configs import ModelConfigBase
from modeldepot.records._query import fold_tag, search_text

log = logging.getLogger(__name__)

COMPONENT = "records"

_md = sa.MetaData()

models = sa.Table(
    "models",
    _md,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("base", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("hash", sa.String(255)),
    sa.Column("source", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
)

model_bases = sa.Table(
    "model_bases",
    _md,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("base", sa.String(64), primary_key=True),
    sa.Column("own_base", sa.String(64), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
)

model_tags = sa.Table(
    "model_tags",
    _md,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
    # Copies of the record's own base, type and name (v3): a tag search walks
    # ix_model_tags_order (tag, base, type, name, key) in listing order instead of sorting.
    sa.Column("base", sa.String(64), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
)

#: The SQLite FTS5 table of ``models.search_text`` and its triggers.
FTS_TABLE = "models_fts"
#: The PostgreSQL trigram index of ``models.search_text``.
TRGM_INDEX = "ix_models_search_trgm"


def record_row(cfg: ModelConfigBase) -> dict[str, Any]:
    """The ``models`` row of a record."""
    return {
        "key": cfg.key,
        "name": cfg.name,
        "type": cfg.type.value,
        "format": cfg.format.value,
        "base": cfg.base.value,
        "path": cfg.path,
        "hash": cfg.hash,
        "source": cfg.source,
        "description": cfg.description,
        "search_text": search_text(cfg),
        "created_at": cfg.created_at,
        "updated_at": cfg.updated_at,
        "config": cfg.model_dump_json(),
    }


def tag_rows(cfg: ModelConfigBase) -> list[dict[str, Any]]:
    # model_tags indexes the case-folded tag (searches are case-insensitive); the record's
    # config keeps the spelling the user gave. Base, type and name are copies for the order.
    own = {"key": cfg.key, "base": cfg.base.value, "type": cfg.type.value, "name": cfg.name}
    return [own | {"tag": t} for t in dict.fromkeys(fold_tag(t) for t in cfg.tags)]


def bases_rows(cfg: ModelConfigBase) -> list[dict[str, Any]]:
    own, type_ = cfg.base.value, cfg.type.value
    return [
        {"key": cfg.key, "base": b.value, "own_base": own, "type": type_, "name": cfg.name}
        for b in sorted(cfg.compatible_bases, key=lambda b: b.value)
    ]


def _v1_create_tables(conn: Connection) -> None:
    # PostgreSQL's default collation sorts like a dictionary ("a" < "B"); "C" sorts by code
    # point, as SQLite and Python do, so every store lists records in the same order.
    coll = "C" if conn.dialect.name == "postgresql" else None
    md = sa.MetaData()

    def text() -> sa.Text:
        return sa.Text(collation=coll)

    def short(n: int = 64) -> sa.String:
        return sa.String(n, collation=coll)

    m = sa.Table(
        "models",
        md,
        sa.Column("key", short(), primary_key=True),
        sa.Column("name", text(), nullable=False),
        sa.Column("type", short(), nullable=False),
        sa.Column("format", short(), nullable=False),
        sa.Column("base", short(), nullable=False),
        sa.Column("path", text(), nullable=False),
        sa.Column("hash", short(255)),
        sa.Column("source", text()),
        sa.Column("description", text()),
        sa.Column("search_text", text(), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
    )
    # Each filter index ends with the listing order (base, type, name, key), so a filtered
    # listing is one ordered index range: no full scan and no sort, whatever the statistics.
    sa.Index("ix_models_base_type_name", m.c.base, m.c.type, m.c.name, m.c.key)
    sa.Index("ix_models_name", m.c.name, m.c.base, m.c.type, m.c.key)
    sa.Index("ix_models_type", m.c.type, m.c.base, m.c.name, m.c.key)
    sa.Index("ix_models_format", m.c.format, m.c.base, m.c.type, m.c.name, m.c.key)
    # Partial: records without a hash (registered before hashing finished) would otherwise
    # make the planner's statistics call every hash lookup unselective.
    has_hash = m.c.hash.isnot(None)
    sa.Index(
        "ix_models_hash",
        m.c.hash,
        m.c.base,
        m.c.type,
        m.c.name,
        m.c.key,
        sqlite_where=has_hash,
        postgresql_where=has_hash,
    )
    sa.Index("ux_models_path", m.c.path, unique=True)
    b = sa.Table(
        "model_bases",
        md,
        sa.Column("key", short(), sa.ForeignKey("models.key", ondelete="CASCADE"), primary_key=True),
        sa.Column("base", short(), primary_key=True),
        # Copies of the record's own base, type and name: a search by base (which must also
        # match compatible_bases) then filters and sorts inside this table's indexes.
        sa.Column("own_base", short(), nullable=False),
        sa.Column("type", short(), nullable=False),
        sa.Column("name", text(), nullable=False),
    )
    sa.Index("ix_model_bases_base", b.c.base, b.c.own_base, b.c.type, b.c.name, b.c.key)
    sa.Index("ix_model_bases_base_type", b.c.base, b.c.type, b.c.own_base, b.c.name, b.c.key)
    t = sa.Table(
        "model_tags",
        md,
        sa.Column("key", short(), sa.ForeignKey("models.key", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", text(), primary_key=True),
    )
    sa.Index("ix_model_tags_tag", t.c.tag, t.c.key)
    md.create_all(conn)


def _v2_fold_tags(conn: Connection) -> None:
    """Tags became case-insensitive: index each one case-folded. Done in Python, because SQL's
    ``lower()`` folds only ASCII on SQLite (and under PostgreSQL's "C" collation)."""
    t = sa.table("model_tags", sa.column("key"), sa.column("tag"))
    rows = conn.execute(sa.select(t.c.key, t.c.tag)).all()
    folded = list(dict.fromkeys((key, tag.casefold()) for key, tag in rows))
    if folded == [tuple(r) for r in rows]:
        return
    conn.execute(t.delete())
    for i in range(0, len(folded), 500):
        conn.execute(t.insert(), [{"key": k, "tag": tag} for k, tag in folded[i : i + 500]])


def _v3_tag_order(conn: Connection) -> None:
    """Tag searches walk an ordered index: copy each record's base, type and name beside its tags
    (as model_bases does), index (tag, base, type, name, key), and drop the (tag, key) index it
    replaces. On SQLite the listing-order index also takes ``search_text``, so a text filter that
    matches often is tested inside the index while walking it (no table row read per record)."""
    pg = conn.dialect.name == "postgresql"
    coll = ' COLLATE "C"' if pg else ""
    for column, sql_type in (("base", "VARCHAR(64)"), ("type", "VARCHAR(64)"), ("name", "TEXT")):
        conn.exec_driver_sql(f"ALTER TABLE model_tags ADD COLUMN {column} {sql_type}{coll} NOT NULL DEFAULT ''")
    t = sa.table("model_tags", sa.column("key"), sa.column("base"), sa.column("type"), sa.column("name"))
    m = sa.table("models", sa.column("key"), sa.column("base"), sa.column("type"), sa.column("name"))
    copied = {col: sa.select(m.c[col]).where(m.c.key == t.c.key).scalar_subquery() for col in ("base", "type", "name")}
    conn.execute(t.update().values(**copied))
    conn.exec_driver_sql("CREATE INDEX ix_model_tags_order ON model_tags (tag, base, type, name, key)")
    conn.exec_driver_sql("DROP INDEX ix_model_tags_tag")
    if not pg:
        # PostgreSQL's B-tree refuses entries over ~2.7 kB (a long description would fail an
        # insert); its trigram index serves text search there instead.
        conn.exec_driver_sql("DROP INDEX ix_models_base_type_name")
        conn.exec_driver_sql("CREATE INDEX ix_models_base_type_name ON models (base, type, name, key, search_text)")


def _v4_text_search(conn: Connection) -> None:
    """The trigram index for free text, where the engine can have one (see ``sync_search_index``)."""
    sync_search_index(conn)


# ---- the free-text index -----------------------------------------------------------------------

# Case-sensitive trigrams: search_text and every query are lower-cased in Python already, and
# SQLite's own case folding would make a few characters match others (the long s U+017F matches
# "s", the micro sign U+00B5 matches Greek mu) where LIKE never did. Without folding, a phrase of
# trigrams matches exactly where the text contains the query: the LIKE answer.
_FTS_DDL = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(search_text, content='models', content_rowid='rowid', "
    "tokenize='trigram case_sensitive 1')"
)
# Triggers rather than the store's own code: every writer of models (a caller that shares its
# database through from_connection, a later migration) keeps the index in the same transaction.
# External content is addressed by models' rowid; models has indexes, and SQLite's VACUUM keeps
# the rowids of such tables (it renumbers only tables without any index; a test holds it to that).
_FTS_TRIGGERS = {
    f"{FTS_TABLE}_ai": f"AFTER INSERT ON models BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.rowid, new.search_text); END",
    f"{FTS_TABLE}_ad": f"AFTER DELETE ON models BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END",
    f"{FTS_TABLE}_au": f"AFTER UPDATE OF search_text ON models WHEN old.search_text IS NOT new.search_text BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); "
    f"INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.rowid, new.search_text); END",
}


def sqlite_has_fts5_trigram(conn: Connection) -> bool:
    """Whether this SQLite has FTS5 (compiled in or loaded) with the trigram tokenizer (3.34+)."""
    version = tuple(int(x) for x in str(conn.exec_driver_sql("SELECT sqlite_version()").scalar()).split(".")[:2])
    if version < (3, 34):
        return False
    try:
        conn.exec_driver_sql("SELECT fts5_source_id()")
    except sa.exc.OperationalError:  # "no such function": FTS5 is not there
        return False
    return True


def search_index_state(conn: Connection) -> str:
    """``"ready"`` (queries may use the index), ``"none"`` (the engine cannot have one and nothing
    needs changing), or ``"sync"`` (``sync_search_index`` has work to do). Reads only."""
    if conn.dialect.name == "postgresql":
        found = conn.execute(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": TRGM_INDEX}).first()
        return "ready" if found else "sync"
    names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'models_fts%'")}
    complete = FTS_TABLE in names and set(_FTS_TRIGGERS) <= names
    if sqlite_has_fts5_trigram(conn):
        return "ready" if complete else "sync"
    return "sync" if names & set(_FTS_TRIGGERS) else "none"


def open_search_index(db: Database) -> bool:
    """Run at every open of a store: sync the free-text index if needed (rarely: a new engine, or
    pg_trgm still refused; only then is the write lock taken); returns whether free-text queries
    may use the SQLite trigram index (PostgreSQL's planner picks its own)."""
    with db.connect() as c:
        state = search_index_state(c)
    if state == "sync":
        with db.begin() as c:
            ready = sync_search_index(c)
    else:
        ready = state == "ready"
        if not ready:
            log.info("free-text model search in %s scans every record (no trigram index)", db.url)
    return ready and db.is_sqlite


def sync_search_index(conn: Connection) -> bool:
    """Bring the free-text index to what this engine supports, inside the caller's (write)
    transaction; returns whether queries may use it. Idempotent.

    SQLite: create the FTS5 table and its triggers and fill it from ``models`` (also when a
    SQLite without FTS5 had the triggers dropped, so the index is rebuilt from scratch). A SQLite
    without FTS5 trigram drops the triggers (every write would fail on them) and keeps scanning.
    PostgreSQL: ``CREATE EXTENSION pg_trgm`` and a GIN index; without the rights, scanning.
    """
    if conn.dialect.name == "postgresql":
        return _sync_pg_trigram(conn)
    names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'models_fts%'")}
    if not sqlite_has_fts5_trigram(conn):
        for trigger in sorted(names & set(_FTS_TRIGGERS)):
            conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        version = conn.exec_driver_sql("SELECT sqlite_version()").scalar()
        log.warning(
            "free-text model search scans every record: SQLite %s lacks FTS5 with the trigram tokenizer "
            "(needs 3.34 or later)",
            version,
        )
        return False
    if FTS_TABLE in names and set(_FTS_TRIGGERS) <= names:
        return True
    if FTS_TABLE not in names:
        conn.exec_driver_sql(_FTS_DDL)
    for trigger, body in _FTS_TRIGGERS.items():
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.exec_driver_sql(f"CREATE TRIGGER {trigger} {body}")
    # Without its triggers the index may be stale: fill it again from models.
    log.info("building the free-text index of the model records (once; about 20 s per million records)")
    conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    return True


_PG_TRGM_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON models USING gin (search_text gin_trgm_ops)",
)


def _sync_pg_trigram(conn: Connection) -> bool:
    if conn.execute(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": TRGM_INDEX}).first():
        return True
    try:
        with conn.begin_nested():  # a refused statement must not abort the caller's transaction
            for ddl in _PG_TRGM_DDL:
                conn.exec_driver_sql(ddl)
    except sa.exc.DBAPIError as exc:
        log.warning(
            "free-text model search scans every record: cannot set up pg_trgm (%s); a superuser can run "
            "CREATE EXTENSION pg_trgm in this database, the index is built at the next open",
            str(getattr(exc, "orig", exc)).strip().splitlines()[0],
        )
        return False
    return True


MIGRATIONS: list[Migration] = [_v1_create_tables, _v2_fold_tags, _v3_tag_order, _v4_text_search]
SCHEMA_VERSION = len(MIGRATIONS)

__all__ = [
    "COMPONENT",
    "FTS_TABLE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TRGM_INDEX",
    "bases_rows",
    "model_bases",
    "model_tags",
    "models",
    "open_search_index",
    "record_row",
    "search_index_state",
    "sqlite_has_fts5_trigram",
    "sync_search_index",
    "tag_rows",
]
