"""The hash cache: digests of unchanged files, remembered in the database.

A row is valid for one *version* of one file: it is found by ``(device, inode, algorithm)`` and
used only when ``size`` and ``mtime_ns`` still match the file's current ``stat``, so the effective
key is ``(device, inode, size, mtime_ns, algorithm)``. Keeping one row per ``(device, inode,
algorithm)`` means a file rewritten in place replaces its row instead of piling up stale ones.
``path`` is stored for people and for :meth:`HashCache.prune` only; a rename keeps the inode, so a
renamed file is still a hit.

Racy entries: a file written in the same timestamp tick as our ``stat`` could change again
without its ``mtime`` moving (the "racy git" problem; FAT has 2 s ticks, Linux file systems a few
ms). :meth:`HashCache.record` therefore refuses to remember a digest whose file was modified less
than ``racy_window_ns`` before hashing started, or that changed while it was hashed. The
lower-level :meth:`HashCache.put` stores unconditionally: use it when you vouch for the bytes (a
blob you just wrote and hashed while writing it).
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modeldepot._db import Database
from modeldepot.errors import HashingError

COMPONENT = "hashcache"
#: Default racy window: the coarsest common timestamp tick (FAT/exFAT on USB drives).
RACY_WINDOW_NS = 2_000_000_000
_U64 = 1 << 64
_S64_MAX = (1 << 63) - 1

StrPath = str | os.PathLike[str]


def _v1(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE hash_cache ("
        " device BIGINT NOT NULL,"
        " inode BIGINT NOT NULL,"
        " algorithm VARCHAR(64) NOT NULL,"
        " size BIGINT NOT NULL,"
        " mtime_ns BIGINT NOT NULL,"
        " digest TEXT NOT NULL,"
        " path TEXT NOT NULL,"
        " hashed_at_ns BIGINT NOT NULL,"
        " PRIMARY KEY (device, inode, algorithm))"
    )


MIGRATIONS = [_v1]

_SELECT = sa.text("SELECT digest, size, mtime_ns FROM hash_cache WHERE device = :d AND inode = :i AND algorithm = :a")
# Same spelling on SQLite (>= 3.24) and PostgreSQL.
_UPSERT = sa.text(
    "INSERT INTO hash_cache (device, inode, algorithm, size, mtime_ns, digest, path, hashed_at_ns)"
    " VALUES (:d, :i, :a, :s, :m, :g, :p, :t)"
    " ON CONFLICT (device, inode, algorithm) DO UPDATE SET size = excluded.size,"
    " mtime_ns = excluded.mtime_ns, digest = excluded.digest, path = excluded.path,"
    " hashed_at_ns = excluded.hashed_at_ns"
)


def _s64(value: int) -> int:
    """st_dev / st_ino are unsigned 64-bit; both databases store signed BIGINT."""
    return value - _U64 if value > _S64_MAX else value


def _printable(path: StrPath) -> str:
    # Undecodable file names carry lone surrogates, which neither database accepts.
    return str(Path(path).absolute()).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


class HashCache:
    """Digests keyed by ``(device, inode, size, mtime_ns, algorithm)`` in the ``hash_cache`` table.

    Thread-safe: every call checks its own connection out of the database pool.
    """

    def __init__(self, db: Database, *, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self.db = db
        self.racy_window_ns = racy_window_ns
        db.migrate(COMPONENT, MIGRATIONS)

    # -- reads ---------------------------------------------------------------------------------
    def get(self, path: StrPath, algorithm: str) -> str | None:
        """The cached digest of ``path`` for ``algorithm``, or None when unknown or out of date."""
        try:
            st = Path(path).stat()
        except OSError:
            return None
        return self.lookup(st, algorithm)

    def lookup(self, st: os.stat_result, algorithm: str) -> str | None:
        """Like :meth:`get` for a ``stat`` the caller already has (saves the second stat)."""
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        with self.db.connect() as conn:
            row = conn.execute(_SELECT, {"d": _s64(st.st_dev), "i": _s64(st.st_ino), "a": algorithm}).first()
        if row is None or row[1] != st.st_size or row[2] != st.st_mtime_ns:
            return None
        return str(row[0])

    def __len__(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM hash_cache")).scalar_one())

    # -- writes --------------------------------------------------------------------------------
    def put(self, path: StrPath, algorithm: str, digest: str, st: os.stat_result | None = None) -> None:
        """Remember ``digest`` for the current version of ``path`` (or for ``st``), unconditionally.

        Raises:
            HashingError: ``path`` cannot be stat'ed or is not a regular file.
        """
        self.put_many(path, {algorithm: digest}, st=st)

    def put_many(self, path: StrPath, digests: Mapping[str, str], st: os.stat_result | None = None) -> None:
        """Store several algorithms' digests of one file in one transaction."""
        if st is None:
            try:
                st = Path(path).stat()
            except OSError as exc:
                raise HashingError(f"cannot cache the hash of {path}: {exc.strerror or exc}", Path(path)) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            # A folder's mtime does not move when a nested file changes: never cache folders.
            raise HashingError(f"cannot cache the hash of {path}: not a regular file", Path(path))
        now = time.time_ns()
        params = [
            {
                "d": _s64(st.st_dev),
                "i": _s64(st.st_ino),
                "a": algorithm,
                "s": st.st_size,
                "m": st.st_mtime_ns,
                "g": digest,
                "p": _printable(path),
                "t": now,
            }
            for algorithm, digest in digests.items()
        ]
        if params:
            with self.db.begin() as conn:
                conn.execute(_UPSERT, params)

    def record(self, path: StrPath, st: os.stat_result, started_ns: int, digests: Mapping[str, str]) -> bool:
        """Store digests computed from ``path`` only if they are known to describe version ``st``.

        ``st`` is the stat taken before reading and ``started_ns`` the ``time.time_ns()`` at which
        reading started. Returns False (and stores nothing) when the file changed while it was
        read, or when it was modified so recently that a later same-tick write could go unseen.
        """
        if started_ns - st.st_mtime_ns < self.racy_window_ns:
            return False
        try:
            after = Path(path).stat()
        except OSError:
            return False
        if not _same_version(st, after):
            return False
        self.put_many(path, digests, st=st)
        return True

    def forget(self, path: StrPath) -> int:
        """Drop every cached digest of the file at ``path``; returns the number of rows removed."""
        try:
            st = Path(path).stat()
        except OSError:
            return 0
        with self.db.begin() as conn:
            res = conn.execute(
                sa.text("DELETE FROM hash_cache WHERE device = :d AND inode = :i"),
                {"d": _s64(st.st_dev), "i": _s64(st.st_ino)},
            )
        return int(res.rowcount or 0)

    def prune(self) -> int:
        """Remove rows whose recorded path is gone or now holds a different file version."""
        with self.db.connect() as conn:
            rows = conn.execute(sa.text("SELECT device, inode, algorithm, size, mtime_ns, path FROM hash_cache")).all()
        stale = []
        for device, inode, algorithm, size, mtime_ns, path in rows:
            try:
                st = Path(path).stat()
            except OSError:
                stale.append({"d": device, "i": inode, "a": algorithm})
                continue
            if (_s64(st.st_dev), _s64(st.st_ino), st.st_size, st.st_mtime_ns) != (device, inode, size, mtime_ns):
                stale.append({"d": device, "i": inode, "a": algorithm})
        if stale:
            with self.db.begin() as conn:
                conn.execute(
                    sa.text("DELETE FROM hash_cache WHERE device = :d AND inode = :i AND algorithm = :a"), stale
                )
        return len(stale)

    def clear(self) -> None:
        with self.db.begin() as conn:
            conn.exec_driver_sql("DELETE FROM hash_cache")


__all__ = ["COMPONENT", "RACY_WINDOW_NS", "HashCache"]
