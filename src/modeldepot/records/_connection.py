"""A :class:`~modeldepot._db.Database` over a caller's ``sqlite3.Connection`` (InvokeAI's
``ModelRecordServiceSQL.from_connection(conn, lock)``).

The caller keeps the connection (closing the store never closes it) and uses it from its own code
under ``lock``. Every use here holds that lock as well. A use nested inside another in the same
thread (a read during a write) must not wait for a lock its own thread holds, so the lock is taken
once per thread; the nested use shares the transaction of the outer one, which alone commits or
rolls it back.

SQLAlchemy sees one fresh proxy of the connection per checkout (a ``NullPool`` whose "connections"
are proxies): a static one-connection pool would hand the same pool entry to a nested checkout
and then check it in twice.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from modeldepot._db import APP_ID, VERSIONS_TABLE_DDL, WRITE_FLAG, Database
from modeldepot.errors import DatabaseError


class _Shared:
    """What every proxy of one connection shares: the connection, the caller's lock, and which
    proxy (if any) began the open transaction."""

    def __init__(self, raw: sqlite3.Connection, lock: Any) -> None:
        self.raw = raw
        self.lock = lock
        self.owner_thread: int | None = None
        self.depth = 0
        self.tx_owner: _Proxy | None = None

    def acquire(self) -> None:
        me = threading.get_ident()
        # Only this thread ever sets owner_thread to its own id, so the unlocked read is safe.
        if self.owner_thread == me:
            self.depth += 1
            return
        self.lock.acquire()
        self.owner_thread, self.depth = me, 1

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.owner_thread = None
            self.lock.release()


class _Proxy:
    """The caller's connection as one pool checkout sees it."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        # A transaction the caller left open is theirs: we join it and never end it.
        self._found_open = shared.raw.in_transaction

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shared.raw, name)

    def close(self) -> None:
        """The connection is the caller's: closing a checkout leaves it open."""

    def begin_write(self) -> None:
        raw = self._shared.raw
        if not raw.in_transaction:
            # IMMEDIATE: take the write lock now, as Database.begin does on its own files.
            raw.execute("BEGIN IMMEDIATE")
            self._shared.tx_owner = self

    def _ends_here(self) -> bool:
        owner = self._shared.tx_owner
        return owner is self or (owner is None and not self._found_open)

    def commit(self) -> None:
        if self._ends_here():
            self._shared.tx_owner = None
            self._end("COMMIT")

    def rollback(self) -> None:
        if self._ends_here():
            self._shared.tx_owner = None
            self._end("ROLLBACK")

    def _end(self, verb: str) -> None:
        raw = self._shared.raw
        if getattr(raw, "autocommit", None) is True:
            # Python >= 3.12 autocommit mode: commit() / rollback() do nothing; SQL does.
            if raw.in_transaction:
                raw.execute(verb)
        elif verb == "COMMIT":
            raw.commit()
        else:
            raw.rollback()


class _SharedPool(NullPool):
    """Every checkout holds the caller's lock (once per thread) until it is checked in."""

    def __init__(self, shared: _Shared, **kw: Any) -> None:
        super().__init__(lambda: _Proxy(shared), **kw)
        self.shared = shared

    def _do_get(self) -> Any:
        self.shared.acquire()
        try:
            return super()._do_get()
        except BaseException:
            self.shared.release()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self.shared.release()

    def recreate(self) -> _SharedPool:
        return _SharedPool(self.shared, dialect=self._dialect)


def _main_file(raw: sqlite3.Connection) -> str:
    for _seq, name, file in raw.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file) if file else ":memory:"
    return ":memory:"


def is_shared(db: Database) -> bool:
    """Whether ``db`` runs on a caller's connection (then it has no pool of its own to read from)."""
    return isinstance(db.engine.pool, _SharedPool)


def connection_database(conn: sqlite3.Connection, lock: Any = None) -> Database:
    """A ``Database`` that runs every statement on ``conn`` while holding ``lock``
    (a ``threading.Lock``/``RLock``; ``None``: a lock of our own, for a connection nobody else uses).

    Raises:
        DatabaseError: ``conn`` is not an open ``sqlite3.Connection``, or ``lock`` is no lock.
    """
    if not isinstance(conn, sqlite3.Connection):
        raise DatabaseError(f"from_connection needs a sqlite3.Connection, not {type(conn).__name__}")
    if lock is None:
        lock = threading.Lock()
    if not (callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None))):
        raise DatabaseError(f"from_connection needs a threading.Lock (or RLock), not {type(lock).__name__}")
    shared = _Shared(conn, lock)
    shared.acquire()
    try:
        url = _main_file(conn)
    except sqlite3.ProgrammingError as exc:
        raise DatabaseError(f"cannot use the sqlite3 connection: {exc}") from exc
    finally:
        shared.release()
    engine = sa.create_engine("sqlite://", pool=_SharedPool(shared))

    @event.listens_for(engine, "begin")
    def _on_begin(c: Connection) -> None:
        # Reads run without BEGIN (each statement its own snapshot, no lock held); writers begin
        # IMMEDIATE, so they queue on the database's busy timeout instead of failing to upgrade.
        if c.info.get(WRITE_FLAG):
            proxy = c.connection.dbapi_connection
            assert isinstance(proxy, _Proxy)
            proxy.begin_write()

    db = Database(engine, url)
    try:
        with db.begin() as c:
            # Database.open's table, without its "a database of another program" refusal: sharing
            # the caller's database (InvokeAI keeps records in invokeai.db) is the point here. An
            # empty database becomes ours, so from_db_file opens it later.
            if not c.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
                c.exec_driver_sql(f"PRAGMA application_id={APP_ID}")
            c.exec_driver_sql(VERSIONS_TABLE_DDL)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"cannot set up the model records in {url}: {exc}", path=url) from exc
    return db


__all__ = ["connection_database", "is_shared"]
