"""One SQL layer (SQLAlchemy Core) for SQLite and PostgreSQL, with per-component migrations.

Every service that keeps state in the database (records, hash cache, storage manifests, jobs) owns
a *component* with an ordered list of migrations; ``Database.migrate(component, steps)`` applies
the missing ones in one transaction each and records the version in ``schema_versions``. SQLite
runs in WAL mode with a busy timeout so several threads and processes can share one file.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.exc import OperationalError

from modeldepot.errors import DatabaseError

Migration = Callable[[Connection], None]
WRITE_FLAG = "modeldepot_write"
#: Each component's schema version (``Database.migrate``).
VERSIONS_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_versions (component VARCHAR(64) PRIMARY KEY, version INTEGER NOT NULL)"
)
#: Marker table: a file without it (and not empty) is not ours.
APP_ID = 0x4D445054  # "MDPT", stored in SQLite's application_id
BUSY_TIMEOUT_MS = 30_000


def _sqlite_engine(path: Path) -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Manage transactions ourselves: pysqlite's implicit BEGIN defers locks and
        # then fails with "database is locked" on upgrade instead of waiting.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers (``Database.begin``) take the write lock up front with IMMEDIATE, so concurrent
        # writers queue on busy_timeout instead of failing on a lock upgrade; readers
        # (``Database.connect``) use a deferred BEGIN and never block anyone in WAL mode.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(WRITE_FLAG) else "BEGIN")

    return engine


class Database:
    """A connection pool plus the schema-version bookkeeping. Create with :meth:`open`."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._lock = threading.Lock()
        self._migrated: set[str] = set()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @classmethod
    def open(cls, url_or_path: str | Path) -> Database:
        """Open a SQLite file (path or ``sqlite:///``) or a ``postgresql://`` URL."""
        text = str(url_or_path)
        if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            url = "postgresql+psycopg://" + text.split("://", 1)[1]
            try:
                engine = sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)
                with engine.connect():
                    pass
            except ModuleNotFoundError as exc:
                raise DatabaseError(
                    "PostgreSQL needs the 'postgres' extra: pip install 'modeldepot[postgres]'", path=_redact(text)
                ) from exc
            except OperationalError as exc:
                raise DatabaseError(f"cannot connect to {_redact(text)}: {exc.orig}", path=_redact(text)) from exc
            db = cls(engine, _redact(text))
        else:
            path = Path(text.removeprefix("sqlite:///")).expanduser()
            # Processes opening one new file at once: the first makes it a WAL database of ours,
            # the others then find it so. Unserialised, switching to WAL under another process's
            # lock failed with "database is locked" (the busy handler does not cover it).
            with _opening(path):
                _check_sqlite_file(path)
                db = cls(_sqlite_engine(path), str(path))
                db._ensure_versions_table()
            return db
        db._ensure_versions_table()
        return db

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; translates driver errors into ``DatabaseError``."""
        try:
            with self.engine.connect() as conn:
                conn.info[WRITE_FLAG] = True
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.info.pop(WRITE_FLAG, None)
        except OperationalError as exc:
            raise DatabaseError(f"database {self.url}: {exc.orig}", path=self.url) from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (autocommit, no write lock)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` across every process that shares this database.

        SQLite databases live on one machine: an ``flock`` on a file beside the database. On
        PostgreSQL (several machines): a session advisory lock held on its own connection. Either
        is released when the holder dies, so a killed process never leaves a lock behind.
        """
        if self.is_sqlite:
            import fcntl

            lock_path = Path(f"{self.url}.{name}.lock")
            with lock_path.open("a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return
        key = zlib.crc32(f"modeldepot:{name}".encode()) & 0x7FFFFFFF
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    def _ensure_versions_table(self) -> None:
        try:
            with self.begin() as conn:
                if self.is_sqlite:
                    app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
                    tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                    if app_id not in (0, APP_ID) or (tables and app_id == 0):
                        raise DatabaseError(
                            f"{self.url} is a SQLite database of another program (not modeldepot); "
                            "refusing to modify it",
                            path=self.url,
                        )
                    if app_id == 0:
                        conn.exec_driver_sql(f"PRAGMA application_id={APP_ID}")
                else:
                    # Two processes opening a fresh PostgreSQL database at once would both try to
                    # create the table ("IF NOT EXISTS" is not atomic there): one waits.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
                conn.exec_driver_sql(VERSIONS_TABLE_DDL)
        except SADatabaseError as exc:
            raise DatabaseError(f"{self.url} is not a usable database: {exc.orig}", path=self.url) from exc

    def version(self, component: str) -> int:
        with self.connect() as conn:
            row = conn.execute(
                sa.text("SELECT version FROM schema_versions WHERE component = :c"), {"c": component}
            ).first()
        return int(row[0]) if row else 0

    def migrate(self, component: str, steps: Sequence[Migration]) -> int:
        """Apply the migrations of ``component`` not yet applied; returns the schema version.

        Raises:
            DatabaseError: when the database is newer than this program knows.
        """
        with self._lock:
            with self.begin() as conn:
                if not self.is_sqlite:
                    # Serialise migrations across processes on PostgreSQL.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
                row = conn.execute(
                    sa.text("SELECT version FROM schema_versions WHERE component = :c"), {"c": component}
                ).first()
                current = int(row[0]) if row else 0
                if current > len(steps):
                    raise DatabaseError(
                        f"database {self.url} has {component} schema v{current}, newer than this "
                        f"modeldepot knows (v{len(steps)}); upgrade modeldepot",
                        path=self.url,
                    )
                for step in steps[current:]:
                    step(conn)
                if current < len(steps):
                    if row:
                        conn.execute(
                            sa.text("UPDATE schema_versions SET version = :v WHERE component = :c"),
                            {"v": len(steps), "c": component},
                        )
                    else:
                        conn.execute(
                            sa.text("INSERT INTO schema_versions (component, version) VALUES (:c, :v)"),
                            {"c": component, "v": len(steps)},
                        )
            self._migrated.add(component)
            return len(steps)


@contextmanager
def _opening(path: Path) -> Iterator[None]:
    """Hold ``<file>.open.lock`` (``flock``, released if the process dies) while opening ``path``."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.open.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not ours before anything (even WAL mode) touches it."""
    if not path.exists():
        return
    if path.is_dir():
        raise DatabaseError(f"database path {path} is a folder, not a file", path=path)
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return
    if head != b"SQLite format 3\x00":
        raise DatabaseError(f"{path} is not a SQLite database; refusing to overwrite it", path=path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            # One statement, so one snapshot: read apart, another process creating the database
            # could commit between them (application id still 0, tables already there).
            app_id, tables = con.execute(
                "SELECT (SELECT application_id FROM pragma_application_id()),"
                " (SELECT count(*) FROM sqlite_master WHERE type='table')"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{path} is not a usable SQLite database: {exc}", path=path) from exc
    if app_id != APP_ID and (app_id != 0 or tables):
        raise DatabaseError(
            f"{path} is a SQLite database of another program (not modeldepot); refusing to modify it", path=path
        )


def _redact(url: str) -> str:
    """Hide a password in a database URL before it reaches a message or log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


__all__ = ["Database", "Migration"]
