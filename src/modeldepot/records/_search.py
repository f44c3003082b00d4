"""How a ``RecordFilter`` becomes SQL: which table drives the query, so that filtering and the
listing order (base, type, name, key) are one ordered index range, and how free text is found.

Drivers, most selective first:

- tags: ``model_tags`` of the first tag, walked in ``ix_model_tags_order`` (tag, base, type,
  name, key); more tags and a base are tested per row by primary key (``EXISTS``), so a page of
  50 stops after 50 matches instead of sorting every record that carries the tag;
- a base: ``model_bases`` (which also lists compatible bases), in its (base, own_base, type,
  name, key) index;
- otherwise ``models`` itself, in the index of its filter column or the listing-order index.

Free text (``q``, a substring of the lower-cased ``search_text``) has two plans. Where the SQLite
trigram index exists and the query has at least ``MIN_TRIGRAM_QUERY`` characters, the store
first counts the index's hits, no further than ``dense_hits``: fewer hits are fetched from the
index and sorted (``text_index=True``); more hits are dense enough that walking the listing
order and testing each row with ``LIKE`` fills the page sooner than sorting them all (SQLite's
listing-order index carries ``search_text``, so that test reads no table row). Queries of one
or two characters have no trigram and always take the ``LIKE`` walk. On PostgreSQL the SQL is
``LIKE`` (``strpos`` below three characters): its planner chooses between the ``pg_trgm`` index
and the walk itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from modeldepot.records._query import RecordFilter, key_prefix_upper_bound
from modeldepot.records._schema import FTS_TABLE, model_bases, model_tags, models

#: Listing order of records.
ORDER = (models.c.base, models.c.type, models.c.name, models.c.key)
#: Trigrams need three characters: shorter queries scan.
MIN_TRIGRAM_QUERY = 3
#: What testing one record while walking the listing-order index costs, relative to fetching
#: and sorting one hit (a row lookup): measured ~0.17 us against ~0.8 us at 1M records, then
#: raised because that walk estimate assumes hits spread evenly through the listing order, and
#: they cluster (names sharing a prefix sort together): err towards sorting.
WALK_PER_SORT = 0.3

_fts = sa.table(FTS_TABLE, sa.column("rowid"), sa.column(FTS_TABLE))
_models_rowid: sa.ColumnClause[int] = sa.literal_column("models.rowid", sa.Integer)


class _NoIndex(sa.ColumnElement[Any]):
    """A column SQLite must not use an index for (SQLite's unary ``+``); elsewhere the column.

    Keeps SQLite's planner on the driving index chosen here: an equality on a column otherwise
    counts as a constant that drops out of ORDER BY (so ``tag, type`` no longer matches the
    (tag, base, type, name) order and SQLite sorts), or tempts it to walk another index.
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: sa.ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_NoIndex)
def _plain(element: _NoIndex, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_NoIndex, "sqlite")
def _plus(element: _NoIndex, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


class _Contains(sa.ColumnElement[bool]):
    """``column`` contains ``text``: ``LIKE '%text%'`` with LIKE's wildcards escaped, except for
    text too short for a trigram on PostgreSQL: there ``strpos()``, because a LIKE lets the
    planner pick the ``pg_trgm`` index, which finds no trigram in the pattern and rechecks every
    row (measured 7x a plain scan at 100k records)."""

    inherit_cache = True
    type = sa.Boolean()
    _traverse_internals = [
        ("as_like", InternalTraversal.dp_clauseelement),
        ("as_position", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: sa.ColumnElement[str], text: str) -> None:
        self.as_like: sa.ColumnElement[bool] = column.like(f"%{like_escape(text)}%", escape="\\")
        short = len(text) < MIN_TRIGRAM_QUERY
        self.as_position: sa.ColumnElement[bool] = sa.func.strpos(column, text) > 0 if short else self.as_like


@compiles(_Contains)
def _like(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.as_like, **kw)


@compiles(_Contains, "postgresql")
def _position(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.as_position, **kw)


def dense_hits(records: int, depth: int | None) -> int:
    """From how many trigram hits walking the listing order beats sorting the hits.

    A page ending at ``depth`` (offset + limit) walks about ``depth * records / hits`` records
    and sorting costs ``hits`` lookups: they meet at ``sqrt(WALK_PER_SORT * depth * records)``
    (about 3,900 hits for a first page of 50 among a million records, 1,200 among 100,000).
    Everything (a count, no limit: ``depth`` None) walks all ``records``.
    """
    if depth is None:
        return max(1, int(WALK_PER_SORT * records))
    return max(1, math.isqrt(int(WALK_PER_SORT * depth * records)))


def newest_rowid() -> sa.Select[Any]:
    """An estimate of the number of records from one index descent (a new rowid follows the
    largest; deleted records leave gaps, so this only overestimates)."""
    return sa.select(sa.func.coalesce(sa.func.max(_models_rowid), 0)).select_from(models)


def text_index_can_serve(q: str | None) -> bool:
    """Whether the trigram index can answer ``q`` (three characters or more, no NUL)."""
    return q is not None and len(q) >= MIN_TRIGRAM_QUERY and "\x00" not in q


def fts_phrase(q: str) -> str:
    """``q`` as one FTS5 phrase: every character literal (``AND``, ``*``, ``NEAR``, ``"`` too)."""
    return '"' + q.replace('"', '""') + '"'


def _fts_hits(q: str) -> sa.Select[Any]:
    return sa.select(_fts.c.rowid).where(_fts.c[FTS_TABLE].match(fts_phrase(q)))


def count_hits(q: str, limit: int) -> sa.Select[Any]:
    """How many records the trigram index finds for ``q``, counting no further than ``limit``."""
    return sa.select(sa.func.count()).select_from(_fts_hits(q).limit(limit).subquery())


def count_all_hits(q: str) -> sa.Select[Any]:
    """How many records contain ``q``, counted inside the trigram index alone."""
    return sa.select(sa.func.count()).select_from(_fts).where(_fts.c[FTS_TABLE].match(fts_phrase(q)))


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def key_prefix_range(prefix: str) -> Any:
    """``key LIKE 'prefix%'`` as a range on the primary key, which every database indexes (SQLite's
    LIKE is case-insensitive and cannot use a binary index; a range can)."""
    upper = key_prefix_upper_bound(prefix)
    cond = models.c.key >= prefix
    return cond if upper is None else sa.and_(cond, models.c.key < upper)


def select(
    columns: Sequence[Any], flt: RecordFilter, *, ordered: bool = True, text_index: bool = False
) -> sa.Select[Any]:
    """The SQL for a filter (see the module docstring for which table drives it).

    ``text_index``: find ``flt.q`` through the trigram index (SQLite; the caller has checked
    that the index exists and that the hits are few), else with ``LIKE``.
    """
    if text_index:
        return _select_text_hits(columns, flt, ordered=ordered)
    c = models.c
    on_models = bool(flt.format or flt.path or flt.paths or flt.hash or flt.q)
    if flt.tags:
        t = model_tags.c
        driver: Any = model_tags
        where: list[Any] = [t.tag == flt.tags[0]]
        if flt.base is not None:
            bx = model_bases.alias("bx")
            where.append(sa.exists().where(bx.c.key == t.key, bx.c.base == flt.base.value))
        if flt.type is not None:
            where.append(_NoIndex(t.type) == flt.type.value)
        if flt.name is not None:
            where.append(t.name == flt.name)
        where += _other_tags(t.key, flt.tags[1:])
        order: tuple[Any, ...] = (t.base, t.type, t.name, t.key)
    elif flt.base is not None:
        b = model_bases.c
        driver = model_bases
        where = [b.base == flt.base.value]
        if flt.type is not None:
            where.append(b.type == flt.type.value)
        if flt.name is not None:
            where.append(b.name == flt.name)
        order = (b.own_base, b.type, b.name, b.key)
    else:
        driver = models
        where = []
        if flt.type is not None:
            where.append(c.type == flt.type.value)
        if flt.name is not None:
            where.append(c.name == flt.name)
        order = ORDER
    # A count filtered only on the driver's own columns never reads models (index-only).
    joined = driver is not models and (ordered or on_models)
    source = driver.join(models, c.key == driver.c.key) if joined else driver
    if flt.format is not None:
        where.append(c.format == flt.format.value)
    if flt.path is not None:
        where.append(c.path == flt.path)
    if flt.paths:
        where.append(c.path.in_(flt.paths))
    if flt.hash is not None:
        where.append(c.hash == flt.hash)
    if flt.q is not None:
        where.append(_Contains(c.search_text, flt.q))
    stmt = sa.select(*columns).select_from(source).where(*where)
    return stmt.order_by(*order) if ordered else stmt


def _other_tags(key: Any, tags: Sequence[str]) -> list[Any]:
    """Each tag as a primary-key probe per row (EXISTS), which can never drive the query."""
    out = []
    for i, tag in enumerate(tags, 1):
        tx = model_tags.alias(f"t{i}")
        out.append(sa.exists().where(tx.c.key == key, tx.c.tag == tag))
    return out


def _select_text_hits(columns: Sequence[Any], flt: RecordFilter, *, ordered: bool) -> sa.Select[Any]:
    """The trigram index's hits (few: the caller counted them) drive: each is read by rowid,
    the other filters test it, and the survivors are sorted. Nothing else may drive: the
    base and tags become primary-key probes and the other columns SQLite's ``+column``."""
    assert flt.q is not None
    c = models.c
    where: list[Any] = [_models_rowid.in_(_fts_hits(flt.q))]
    if flt.base is not None:
        bx = model_bases.alias("bx")
        where.append(sa.exists().where(bx.c.key == c.key, bx.c.base == flt.base.value))
    where += _other_tags(c.key, flt.tags)
    for column, value in ((c.type, flt.type), (c.format, flt.format)):
        if value is not None:
            where.append(_NoIndex(column) == value.value)
    for column, text in ((c.name, flt.name), (c.path, flt.path), (c.hash, flt.hash)):
        if text is not None:
            where.append(_NoIndex(column) == text)
    if flt.paths:
        where.append(_NoIndex(c.path).in_(flt.paths))
    stmt = sa.select(*columns).select_from(models).where(*where)
    return stmt.order_by(*(_NoIndex(col) for col in ORDER)) if ordered else stmt


__all__ = [
    "MIN_TRIGRAM_QUERY",
    "ORDER",
    "WALK_PER_SORT",
    "count_all_hits",
    "count_hits",
    "dense_hits",
    "fts_phrase",
    "key_prefix_range",
    "like_escape",
    "newest_rowid",
    "select",
    "text_index_can_serve",
]
