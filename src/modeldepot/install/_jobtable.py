"""The ``install_jobs`` table: jobs, which process owns each one, and its lease.

A job is owned by the process running it: the ``owner`` column names it (host, pid, a random
token) and ``lease_until`` is renewed by that process's heartbeat. Another process takes a job
only when it has no owner, its lease expired, or its owner is a dead process on this host. Every
change a process makes to a job row is conditional on still owning it, so a process that lost its
lease (it stalled, another took over) cannot overwrite the new owner's progress.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modeldepot.errors import UnknownJobIDException
from modeldepot.install._schema import ensure_schema

if TYPE_CHECKING:
    from modeldepot._db import Database

#: Statuses of jobs that have ended.
ENDED = ("completed", "error", "cancelled")
_NOT_ENDED = "status NOT IN ('completed', 'error', 'cancelled')"
_COLUMNS = (
    "id, source, inplace, config_in, status, created_at, owner, lease_until, model_key, error, bytes, total_bytes"
)


@dataclass(frozen=True)
class Owner:
    """This process, as it signs the jobs it runs: ``host:pid:token``."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def _host_and_pid(owner_id: str) -> tuple[str, int | None]:
    host, _, rest = owner_id.partition(":")
    pid_text = rest.partition(":")[0]
    return host, int(pid_text) if pid_text.isdigit() else None


def owner_gone(owner_id: str | None) -> bool:
    """True when ``owner_id`` names a process on this host that no longer runs."""
    if not owner_id:
        return True
    host, pid = _host_and_pid(owner_id)
    if host != socket.gethostname() or pid is None:
        return False  # another machine: only its lease can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def owner_pid(owner_id: str | None) -> int | None:
    return _host_and_pid(owner_id)[1] if owner_id else None


@dataclass(frozen=True)
class JobRow:
    id: int
    source: str
    inplace: bool
    config_in: dict[str, Any]
    status: str
    created_at: float
    owner: str | None
    lease_until: float
    model_key: str | None
    error: str | None
    bytes: int
    total_bytes: int

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def takeable(self, now: float) -> bool:
        """No live process runs it: unowned, lease expired, or its owner died on this host."""
        return not self.ended and (self.owner is None or self.lease_until < now or owner_gone(self.owner))

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status,
            "inplace": self.inplace,
            "created_at": self.created_at,
            "owner": self.owner,
            "pid": owner_pid(self.owner),
            "model_key": self.model_key,
            "error": self.error,
            "bytes": self.bytes,
            "total_bytes": self.total_bytes,
        }


def _row(r: Any) -> JobRow:
    return JobRow(
        id=int(r[0]),
        source=str(r[1]),
        inplace=bool(r[2]),
        config_in=json.loads(r[3]) if r[3] else {},
        status=str(r[4]),
        created_at=float(r[5]),
        owner=r[6],
        lease_until=float(r[7] or 0),
        model_key=r[8],
        error=r[9],
        bytes=int(r[10] or 0),
        total_bytes=int(r[11] or 0),
    )


class JobTable:
    """Queries on ``install_jobs``; every write that a job's owner makes is conditional on owning it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        ensure_schema(db)

    def _source_lock(self, conn: sa.Connection, source: str) -> None:
        # SQLite's write transactions are already exclusive (BEGIN IMMEDIATE); PostgreSQL needs a
        # lock so two processes cannot both see "no job for this source" and insert one each.
        if not self.db.is_sqlite:
            key = zlib.crc32(f"install:{source}".encode()) & 0x7FFFFFFF
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def open_job(
        self, source: str, inplace: bool, config_in: dict[str, Any], owner: Owner | None, lease_seconds: float
    ) -> tuple[JobRow, bool]:
        """The unfinished job for ``source`` if there is one, else a new job owned by ``owner``.

        Returns the row and whether it was created now. ``owner=None`` records a job no process
        runs yet (``install --no-wait``): the next process that starts installs takes it.
        """
        now = time.time()
        with self.db.begin() as conn:
            self._source_lock(conn, source)
            found = conn.execute(
                sa.text(f"SELECT {_COLUMNS} FROM install_jobs WHERE source = :s AND {_NOT_ENDED} ORDER BY id LIMIT 1"),
                {"s": source},
            ).first()
            if found is not None:
                return _row(found), False
            new_id = conn.execute(
                sa.text(
                    "INSERT INTO install_jobs (source, inplace, config_in, status, created_at, owner, lease_until,"
                    " updated_at) VALUES (:s, :inp, :cfg, 'waiting', :t, :o, :l, :t) RETURNING id"
                ),
                {
                    "s": source,
                    "inp": int(inplace),
                    "cfg": json.dumps(config_in, default=str),
                    "t": now,
                    "o": owner.id if owner else None,
                    "l": now + lease_seconds if owner else 0.0,
                },
            ).scalar_one()
        row = self.get(int(new_id))
        return row, True

    def claim(self, job_id: int, owner: Owner, lease_seconds: float) -> JobRow | None:
        """Take a job no live process runs; None if it is not takeable (ended, or owned and alive)."""
        now = time.time()
        with self.db.begin() as conn:
            found = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM install_jobs WHERE id = :i"), {"i": job_id}).first()
            if found is None:
                return None
            row = _row(found)
            if row.owner == owner.id and not row.ended:
                return row
            if not row.takeable(now):
                return None
            # Compare-and-set on the owner we saw: of two processes taking the same job at once,
            # the second updates nothing (PostgreSQL re-checks the row after the first commits).
            taken = conn.execute(
                sa.text(
                    "UPDATE install_jobs SET owner = :o, lease_until = :l, updated_at = :t WHERE id = :i"
                    f" AND {_NOT_ENDED} AND " + ("owner IS NULL" if row.owner is None else "owner = :old")
                ),
                {"o": owner.id, "l": now + lease_seconds, "t": now, "i": job_id, "old": row.owner},
            ).rowcount
        return self.get(job_id) if taken else None

    def takeable(self) -> list[JobRow]:
        now = time.time()
        with self.db.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM install_jobs WHERE {_NOT_ENDED} ORDER BY id")).all()
        return [r for r in map(_row, rows) if r.takeable(now)]

    def heartbeat(self, owner: Owner, lease_seconds: float, progress: dict[int, tuple[str, int, int]]) -> set[int]:
        """Renew the lease of the jobs ``owner`` runs and record their progress.

        ``progress`` maps job id to (status, bytes, total). Returns the ids this process no
        longer owns (cancelled from another process, or taken over after a stall).
        """
        now = time.time()
        lost: set[int] = set()
        with self.db.begin() as conn:
            for job_id, (status, done, total) in progress.items():
                updated = conn.execute(
                    sa.text(
                        "UPDATE install_jobs SET lease_until = :l, updated_at = :t, status = :s, bytes = :b,"
                        f" total_bytes = :tb WHERE id = :i AND owner = :o AND {_NOT_ENDED}"
                    ),
                    {
                        "l": now + lease_seconds,
                        "t": now,
                        "s": status,
                        "b": done,
                        "tb": total,
                        "i": job_id,
                        "o": owner.id,
                    },
                ).rowcount
                if not updated:
                    lost.add(job_id)
        return lost

    def set_status(self, job_id: int, owner: Owner, status: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE install_jobs SET status = :s, updated_at = :t"
                    f" WHERE id = :i AND owner = :o AND {_NOT_ENDED}"
                ),
                {"s": status, "t": time.time(), "i": job_id, "o": owner.id},
            )

    def finish(
        self, job_id: int, owner: Owner, status: str, *, model_key: str | None = None, error: str | None = None
    ) -> bool:
        """Record how a job ended (it stays ended); False if this process no longer owned it."""
        with self.db.begin() as conn:
            updated = conn.execute(
                sa.text(
                    "UPDATE install_jobs SET status = :s, model_key = :k, error = :e, owner = NULL, lease_until = 0,"
                    f" updated_at = :t WHERE id = :i AND owner = :o AND {_NOT_ENDED}"
                ),
                {"s": status, "k": model_key, "e": error, "t": time.time(), "i": job_id, "o": owner.id},
            ).rowcount
        return bool(updated)

    def release(self, owner: Owner, job_ids: list[int] | None = None) -> None:
        """Give up unfinished jobs (a clean stop): any process may take them at once."""
        with self.db.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE install_jobs SET owner = NULL, lease_until = 0, status = 'waiting', updated_at = :t"
                    f" WHERE owner = :o AND {_NOT_ENDED}" + (" AND id IN :ids" if job_ids else "")
                ).bindparams(*([sa.bindparam("ids", expanding=True)] if job_ids else [])),
                {"t": time.time(), "o": owner.id, **({"ids": job_ids} if job_ids else {})},
            )

    def watch(self, owner: Owner, lease_seconds: float) -> None:
        """Say that ``owner`` (a server) takes jobs no process runs, for the next lease period."""
        now = time.time()
        with self.db.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM install_watchers WHERE owner = :o OR lease_until < :t"), {"o": owner.id, "t": now}
            )
            conn.execute(
                sa.text("INSERT INTO install_watchers (owner, lease_until) VALUES (:o, :l)"),
                {"o": owner.id, "l": now + lease_seconds},
            )

    def unwatch(self, owner: Owner) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.text("DELETE FROM install_watchers WHERE owner = :o"), {"o": owner.id})

    def watchers(self) -> list[str]:
        """Live servers that take queued jobs (owner ids)."""
        now = time.time()
        with self.db.connect() as conn:
            rows = conn.execute(sa.text("SELECT owner, lease_until FROM install_watchers")).all()
        return [str(r[0]) for r in rows if float(r[1]) >= now and not owner_gone(str(r[0]))]

    def get(self, job_id: int) -> JobRow:
        with self.db.connect() as conn:
            found = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM install_jobs WHERE id = :i"), {"i": job_id}).first()
        if found is None:
            raise UnknownJobIDException(f"no install job with id {job_id}", job_id=job_id)
        return _row(found)

    def rows(self) -> list[JobRow]:
        with self.db.connect() as conn:
            return [_row(r) for r in conn.execute(sa.text(f"SELECT {_COLUMNS} FROM install_jobs ORDER BY id"))]

    def cancel(self, job_id: int) -> str:
        """Mark a job cancelled wherever it runs (its owner's heartbeat sees it); returns the status
        it had. An ended job is left as it was (a completed install is never undone)."""
        with self.db.begin() as conn:
            found = conn.execute(sa.text("SELECT status FROM install_jobs WHERE id = :i"), {"i": job_id}).first()
            if found is None:
                raise UnknownJobIDException(f"no install job with id {job_id}", job_id=job_id)
            before = str(found[0])
            if before not in ENDED:
                conn.execute(
                    sa.text(
                        "UPDATE install_jobs SET status = 'cancelled', owner = NULL, lease_until = 0, updated_at = :t"
                        " WHERE id = :i"
                    ),
                    {"t": time.time(), "i": job_id},
                )
        return before
