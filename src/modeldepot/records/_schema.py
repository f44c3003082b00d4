"""SQL schema of the record store: the query-side tables and the numbered migrations.

Migrations build their own table objects (never the query-side ones below) so that step 1 keeps
creating exactly the v1 schema however the current definition evolves.

Layout: ``models`` holds one row per record: the indexed columns every search filters or sorts
on, plus ``config``, the whole record as JSON text (the source of truth; the columns are copies).
``model_bases`` lists every base a record works with (its ``base`` and its ``compatible_bases``),
with copies of the record's base, type and name, so "search by base [and type]" is one ordered
index range; ``model_tags`` does the same for tags, holding each tag case-folded
(``str.casefold``) so a tag search is case-insensitive and still one index lookup; the record's
``config`` keeps the spelling the user typed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modeldepot._db import Migration

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
)


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


MIGRATIONS: list[Migration] = [_v1_create_tables, _v2_fold_tags]
SCHEMA_VERSION = len(MIGRATIONS)

__all__ = ["COMPONENT", "MIGRATIONS", "SCHEMA_VERSION", "model_bases", "model_tags", "models"]
