"""``ModelRecordServiceSQL``: the record store on SQLite (default) or PostgreSQL, one code path.

Writes run in ``Database.begin()`` transactions (on SQLite ``BEGIN IMMEDIATE`` under WAL, so
writers from several threads and processes queue on the busy timeout instead of failing), or in
a caller's transaction when ``conn=`` is given, so another service (the content-addressed store)
can write its manifests and the record atomically.

Reads use a separate connection pool in autocommit mode (read-only on SQLite): each query sees
the latest committed state without taking SQLite's write lock, so readers never wait for a
writer, and a PostgreSQL lookup is a single round trip. Pass ``conn=`` to read inside a
transaction instead (to see its uncommitted writes).

``from_connection(conn, lock)`` runs everything on a caller's ``sqlite3`` connection instead (the
seed doc's way to keep records in the application's own database), under the caller's lock.

Paths under ``models_dir`` are stored relative to it (``records/_paths.py``); the unique index on
``path`` then holds one spelling per model, and a lookup asks for both spellings, so a row an
older version stored absolute is still found (and a duplicate of it still refused).

Searches are built in ``records/_search.py`` (which table drives a filter, and the free-text
plans); the schema and its free-text index in ``records/_schema.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from modeldepot._db import BUSY_TIMEOUT_MS, Database
from modeldepot.configs import CONFIG_CLASSES, ModelConfigBase, apply_changes, tag_for
from modeldepot.errors import (
    DatabaseError,
    DuplicateModelException,
    ModelDepotError,
    UnknownModelException,
)
from modeldepot.records._connection import connection_database, is_shared
from modeldepot.records._paths import ModelPaths
from modeldepot.records._query import coerce_enum
from modeldepot.records._schema import (
    COMPONENT,
    MIGRATIONS,
    model_bases,
    model_tags,
    models,
    open_search_index,
)
from modeldepot.records._schema import bases_rows as _bases_rows
from modeldepot.records._schema import record_row as _row_of
from modeldepot.records._schema import tag_rows as _tag_rows
from modeldepot.records._search import (
    count_all_hits,
    count_hits,
    dense_hits,
    key_prefix_range,
    newest_rowid,
    select,
    text_index_can_serve,
)
from modeldepot.records.base import (
    ModelRecordServiceBase,
    RecordFilter,
    as_changes,
    keyed_config,
    name_taken,
    to_config,
    with_unique_tags,
)
from modeldepot.taxonomy import BaseModelType, ModelType

if TYPE_CHECKING:
    import sqlite3

_ROW_COLS = (models.c.key, models.c.type, models.c.format, models.c.base, models.c.config)
_CHUNK = 500  # bound parameter lists well under SQLite's and PostgreSQL's limits
READ_CACHE_KIB = -16384  # SQLite's page cache per read connection (negative: KiB)


def _sqlite_read_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit: a SELECT is its own snapshot and never holds a transaction open.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA query_only=ON")
        # 16 MB (the default is 2 MB): a million records' tables and indexes have ~10 MB of
        # interior pages; cached, a row lookup by rowid reads one leaf page instead of four, which
        # makes sorting the trigram index's hits 2-3x faster. Filled only as a database needs it.
        cur.execute(f"PRAGMA cache_size={READ_CACHE_KIB}")
        cur.close()

    return engine


def _postgres_read_engine(url: sa.URL) -> Engine:
    # Autocommit and no pre-ping: a lookup is one round trip instead of four (ping, BEGIN,
    # SELECT, ROLLBACK). A dead connection surfaces as an error on that one read.
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=16)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Records live on local disks (SSD): the default random_page_cost (4, tuned for
        # spinning disks) makes the planner prefer sequential scans over our indexes.
        dbapi_conn.execute("SET random_page_cost = 1.1")
        if not dbapi_conn.autocommit:
            dbapi_conn.commit()  # a session setting survives the commit

    return engine


class ModelRecordServiceSQL(ModelRecordServiceBase):
    """Records in the ``models`` table of a :class:`~modeldepot._db.Database`."""

    def __init__(self, db: Database, *, models_dir: str | Path | None = None, _owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = _owns_db
        self._paths = ModelPaths.of(models_dir)
        try:
            self._version = db.migrate(COMPONENT, MIGRATIONS)
            #: Whether free text may use the SQLite trigram index (PostgreSQL's planner picks its own).
            self._text_index = open_search_index(db)
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot set up the model records in {db.url}: {exc}", path=db.url) from exc
        url = db.engine.url
        if is_shared(db):
            self._reader = db.engine  # one caller's connection: there is nothing else to read from
        else:
            self._reader = _sqlite_read_engine(url) if db.is_sqlite else _postgres_read_engine(url)
        # get_model is the hot path: run one precompiled statement on a pooled DB-API
        # connection, skipping SQLAlchemy's per-execution bookkeeping.
        compiled = sa.select(*_ROW_COLS).where(models.c.key == sa.bindparam("k")).compile(dialect=self._reader.dialect)
        self._get_sql = str(compiled)
        self._get_positional = bool(compiled.positional)
        self._dbapi_error: type[Exception] = self._reader.dialect.loaded_dbapi.Error

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_db_file(cls, db_file: str | Path, *, models_dir: str | Path | None = None) -> ModelRecordServiceSQL:
        """Open (creating if needed) a SQLite database file; a ``postgresql://`` URL also works."""
        return cls._open(db_file, models_dir)

    @classmethod
    def from_url(cls, url: str, *, models_dir: str | Path | None = None) -> ModelRecordServiceSQL:
        """Open a SQLite path / ``sqlite:///`` URL or a ``postgresql://`` URL."""
        return cls._open(url, models_dir)

    @classmethod
    def from_connection(
        cls, connection: sqlite3.Connection, lock: Any = None, *, models_dir: str | Path | None = None
    ) -> ModelRecordServiceSQL:
        """Keep the records in a database the caller already has open (the seed doc's form).

        Every statement runs on ``connection`` while holding ``lock`` (the ``threading.Lock`` the
        caller guards the connection with; None: one of our own). Closing the store leaves the
        connection open. Open it with ``check_same_thread=False`` to use the store from threads.

        Raises:
            DatabaseError: not a ``sqlite3.Connection`` (or not a lock), or a closed one.
        """
        return cls(connection_database(connection, lock), models_dir=models_dir, _owns_db=True)

    @classmethod
    def _open(cls, target: str | Path, models_dir: str | Path | None = None) -> ModelRecordServiceSQL:
        db = Database.open(target)
        try:
            return cls(db, models_dir=models_dir, _owns_db=True)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        if self._reader is not self.db.engine:
            self._reader.dispose()
        if self._owns_db:
            self.db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.url!r})"

    # ---- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _writing(self, conn: Connection | None) -> Iterator[Connection]:
        try:
            if conn is not None:
                yield conn
            else:
                with self.db.begin() as c:
                    yield c
        except ModelDepotError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database {self.db.url}: {exc}", path=self.db.url) from exc

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        try:
            if conn is not None:
                yield conn
            else:
                with self._reader.connect() as c:
                    yield c
        except ModelDepotError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database {self.db.url}: {exc}", path=self.db.url) from exc

    def _parse(self, key: str, type_: str, format_: str, base: str, config: str | bytes) -> ModelConfigBase:
        cls = CONFIG_CLASSES.get(tag_for(type_, format_, base))
        if cls is None:
            raise DatabaseError(
                f"record {key} in {self.db.url} has type/format {type_}.{format_}, unknown to this modeldepot",
                path=self.db.url,
            )
        try:
            return cls.model_validate_json(config)
        except ValidationError as exc:
            raise DatabaseError(f"record {key} in {self.db.url} does not validate: {exc}", path=self.db.url) from exc

    def _fetch_one(self, c: Connection, key: str, *, for_update: bool = False) -> ModelConfigBase | None:
        stmt = sa.select(*_ROW_COLS).where(models.c.key == key)
        if for_update:
            stmt = stmt.with_for_update()
        row = c.execute(stmt).first()
        return None if row is None else self._parse(*row)

    def _check_free(self, c: Connection, cfg: ModelConfigBase, *, check_key: bool = True) -> None:
        """Refuse a record whose key, or path in either spelling, another record holds."""
        same_path = models.c.path.in_(self._paths.forms(cfg.path))
        cond = sa.or_(models.c.key == cfg.key, same_path) if check_key else sa.and_(same_path, models.c.key != cfg.key)
        row = c.execute(sa.select(models.c.key, models.c.name, models.c.path).where(cond).limit(1)).first()
        if row is None:
            return
        if check_key and row.key == cfg.key:
            raise DuplicateModelException(f"a model with key {cfg.key} is already registered", key=cfg.key)
        raise DuplicateModelException(
            f"path {self._paths.readable(row.path)} is already registered as model {row.name!r} (key {row.key})",
            key=row.key,
        )

    def _check_name_free(self, c: Connection, cfg: ModelConfigBase) -> None:
        if not self.db.is_sqlite:
            # READ COMMITTED would let two renames to one name both pass the check; a lock per
            # (base, type, name) queues the second until the first commits, then it sees it.
            # (SQLite writers are already serialised by BEGIN IMMEDIATE.)
            c.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"),
                {"n": f"modeldepot.records.name:{cfg.base.value}/{cfg.type.value}/{cfg.name}"},
            )
        m = models.c
        stmt = (
            sa.select(m.key)
            .where(m.base == cfg.base.value, m.type == cfg.type.value, m.name == cfg.name, m.key != cfg.key)
            .limit(1)
        )
        other = c.execute(stmt).scalar()
        if other is not None:
            raise name_taken(cfg, other)

    def _insert_rows(self, c: Connection, cfgs: Sequence[ModelConfigBase]) -> None:
        try:
            c.execute(models.insert(), [_row_of(x) for x in cfgs])
            c.execute(model_bases.insert(), [row for x in cfgs for row in _bases_rows(x)])
            tags = [row for x in cfgs for row in _tag_rows(x)]
            if tags:
                c.execute(model_tags.insert(), tags)
        except sa.exc.IntegrityError as exc:
            # Only reachable when another writer slipped in between our check and the insert.
            raise DuplicateModelException(f"key or path already registered: {exc.orig}") from exc

    # ---- writes --------------------------------------------------------------------------------

    def add_model(self, key: Any = None, config: Any = None, *, conn: Connection | None = None) -> ModelConfigBase:
        cfg = self._stored(keyed_config(key, config))
        with self._writing(conn) as c:
            self._check_free(c, cfg)
            self._insert_rows(c, [cfg])
        return self._readable(cfg.model_copy())

    def add_models(
        self, configs: Iterable[ModelConfigBase | dict[str, Any]], *, conn: Connection | None = None
    ) -> list[ModelConfigBase]:
        """Add many records in one transaction: all or none."""
        cfgs = [self._stored(to_config(x)) for x in configs]
        keys: set[str] = set()
        paths: set[str] = set()
        for x in cfgs:
            if x.key in keys:
                raise DuplicateModelException(f"key {x.key} appears twice in the batch", key=x.key)
            if x.path in paths:
                raise DuplicateModelException(f"path {x.path} appears twice in the batch", key=x.key)
            keys.add(x.key)
            paths.add(x.path)
        with self._writing(conn) as c:
            for i in range(0, len(cfgs), _CHUNK):
                chunk = cfgs[i : i + _CHUNK]
                forms = [f for x in chunk for f in self._paths.forms(x.path)]
                cond = sa.or_(models.c.key.in_([x.key for x in chunk]), models.c.path.in_(forms))
                row = c.execute(sa.select(models.c.key, models.c.path).where(cond).limit(1)).first()
                if row is not None:
                    what = f"key {row.key}" if row.key in keys else f"path {self._paths.readable(row.path)}"
                    raise DuplicateModelException(f"{what} is already registered", key=row.key)
                self._insert_rows(c, chunk)
        return [self._readable(x.model_copy()) for x in cfgs]

    def update_model(
        self, key: str, changes: ModelConfigBase | dict[str, Any], *, conn: Connection | None = None
    ) -> ModelConfigBase:
        delta = as_changes(changes)
        with self._writing(conn) as c:
            old = self._fetch_one(c, key, for_update=True)
            if old is None:
                raise UnknownModelException(f"unknown model key {key}", key=key)
            # Stored spelling in, stored spelling out: a legacy absolute path under models_dir is
            # rewritten relative here, and a whole record read back (absolute path) is no move.
            new = self._stored(with_unique_tags(apply_changes(old, delta)))
            if new.path != old.path:
                self._check_free(c, new, check_key=False)
            if new.name != old.name:
                self._check_name_free(c, new)
            row = _row_of(new)
            del row["key"]
            c.execute(models.update().where(models.c.key == key).values(**row))
            if _bases_rows(new) != _bases_rows(old):
                c.execute(model_bases.delete().where(model_bases.c.key == key))
                c.execute(model_bases.insert(), _bases_rows(new))
            if _tag_rows(new) != _tag_rows(old):
                c.execute(model_tags.delete().where(model_tags.c.key == key))
                if new.tags:
                    c.execute(model_tags.insert(), _tag_rows(new))
        return self._readable(new)

    def del_model(self, key: str, *, conn: Connection | None = None) -> None:
        with self._writing(conn) as c:
            # Side rows first and explicitly: correct even where foreign keys are not enforced.
            c.execute(model_tags.delete().where(model_tags.c.key == key))
            c.execute(model_bases.delete().where(model_bases.c.key == key))
            if c.execute(models.delete().where(models.c.key == key)).rowcount == 0:
                raise UnknownModelException(f"unknown model key {key}", key=key)

    # ---- reads ---------------------------------------------------------------------------------

    def get_model(self, key: str, *, conn: Connection | None = None) -> ModelConfigBase:
        if conn is not None:
            found = self._fetch_one(conn, key)
        else:
            row = self._fast_get(key)
            found = None if row is None else self._parse(*row)
        if found is None:
            raise UnknownModelException(f"unknown model key {key}", key=key)
        return self._readable(found)

    def _fast_get(self, key: str) -> tuple[str, str, str, str, str] | None:
        params: tuple[str] | dict[str, str] = (key,) if self._get_positional else {"k": key}
        try:
            raw = self._reader.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute(self._get_sql, params)
                row = cur.fetchone()
                cur.close()
            finally:
                raw.close()
        except (self._dbapi_error, sa.exc.SQLAlchemyError) as exc:
            raise DatabaseError(f"database {self.db.url}: {exc}", path=self.db.url) from exc
        return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    def exists(self, key: str, *, conn: Connection | None = None) -> bool:
        with self._reading(conn) as c:
            return c.execute(sa.select(models.c.key).where(models.c.key == key)).first() is not None

    def search_by_path(self, path: str | Path, *, conn: Connection | None = None) -> list[ModelConfigBase]:
        return self._search(RecordFilter(paths=self._paths.forms(path)), conn=conn)

    def search_by_hash(self, hash: str, *, conn: Connection | None = None) -> list[ModelConfigBase]:
        return self._search(RecordFilter(hash=hash), conn=conn)

    def _search(
        self, flt: RecordFilter, offset: int = 0, limit: int | None = None, *, conn: Connection | None = None
    ) -> list[ModelConfigBase]:
        with self._reading(conn) as c:
            rows = c.execute(self._page(c, flt, offset, limit)).all()
        return [self._readable(self._parse(*r)) for r in rows]

    def _page(self, c: Connection, flt: RecordFilter, offset: int, limit: int | None) -> sa.Select[Any]:
        """The statement for one page of ``flt`` (the plan depends on how deep the page ends)."""
        depth = None if limit is None else offset + limit
        stmt = select(_ROW_COLS, flt, text_index=self._few_text_hits(c, flt, depth))
        if offset:
            stmt = stmt.offset(offset)
        return stmt if limit is None else stmt.limit(limit)

    def _few_text_hits(self, c: Connection, flt: RecordFilter, depth: int | None) -> bool:
        """Whether to find ``flt.q`` through the trigram index: it exists, can serve ``q``, and
        finds few enough records to sort for a page ending at ``depth`` (None: all of them)
        rather than walk the listing order (``records/_search.py`` says why)."""
        if not (self._text_index and text_index_can_serve(flt.q)):
            return False
        assert flt.q is not None
        enough = dense_hits(int(c.execute(newest_rowid()).scalar_one()), depth)
        return int(c.execute(count_hits(flt.q, enough)).scalar_one()) < enough

    def search_by_key_prefix(
        self, prefix: str, limit: int | None = None, *, conn: Connection | None = None
    ) -> list[ModelConfigBase]:
        stmt = sa.select(*_ROW_COLS).where(key_prefix_range(prefix)).order_by(models.c.key)
        if limit is not None:
            stmt = stmt.limit(max(limit, 0))
        with self._reading(conn) as c:
            rows = c.execute(stmt).all()
        return [self._readable(self._parse(*r)) for r in rows]

    def _count(self, flt: RecordFilter, at_most: int | None = None) -> int:
        with self._reading(None) as c:
            if flt.q is not None and flt == RecordFilter(q=flt.q) and self._text_index and text_index_can_serve(flt.q):
                # Inside the trigram index alone.
                stmt = count_all_hits(flt.q) if at_most is None else count_hits(flt.q, at_most)
            else:
                # A count stopped after ``at_most`` rows plans like a page ending there.
                text_index = self._few_text_hits(c, flt, at_most)
                if at_most is None:
                    stmt = select([sa.func.count()], flt, ordered=False, text_index=text_index)
                else:
                    rows = select([sa.literal(1)], flt, ordered=False, text_index=text_index)
                    stmt = sa.select(sa.func.count()).select_from(rows.limit(at_most).subquery())
            return int(c.execute(stmt).scalar_one())

    def taken_names(
        self, name: str, base: BaseModelType | str, type: ModelType | str, *, conn: Connection | None = None
    ) -> set[str]:
        """One range of the listing-order index: ``name`` and every ``name (...)`` of this base and type."""
        b, t = coerce_enum(BaseModelType, base, "base"), coerce_enum(ModelType, type, "type")
        assert b is not None and t is not None
        m = models.c
        # [name, name + " )") holds name and every name starting "name (" (")" follows "(");
        # the few other names in it ("name !...") are dropped below.
        stmt = sa.select(m.name).where(m.base == b.value, m.type == t.value, m.name >= name, m.name < f"{name} )")
        with self._reading(conn) as c:
            found = c.execute(stmt).scalars().all()
        return {n for n in found if n == name or n.startswith(f"{name} (")}

    def schema_version(self) -> int:
        return self.db.version(COMPONENT)

    # ---- diagnostics -------------------------------------------------------------------------

    def explain(
        self,
        flt: RecordFilter | None = None,
        *,
        key: str | None = None,
        key_prefix: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        conn: Connection | None = None,
    ) -> list[str]:
        """The database's query plan for a search (a page of it with ``offset``/``limit``), or a
        get by ``key``, or a ``key_prefix`` lookup; one line per step."""
        stmt: sa.Select[Any]
        with self._reading(conn) as c:
            if key is not None:
                stmt = sa.select(*_ROW_COLS).where(models.c.key == key)
            elif key_prefix is not None:
                stmt = sa.select(*_ROW_COLS).where(key_prefix_range(key_prefix)).order_by(models.c.key)
            else:
                stmt = self._page(c, flt or RecordFilter(), offset, limit)
            compiled = stmt.compile(dialect=self._reader.dialect, compile_kwargs={"literal_binds": True})
            prefix = "EXPLAIN QUERY PLAN " if self.db.is_sqlite else "EXPLAIN "
            rows = c.exec_driver_sql(prefix + str(compiled)).all()
        return [str(r[-1]) for r in rows]


__all__ = ["ModelRecordServiceSQL"]
