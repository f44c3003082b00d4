"""The install_jobs table: ids from the database, ownership, leases, compare-and-set takeover."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot._db import Database
from modeldepot.install._jobtable import JobTable, Owner, owner_gone


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobTable]:
    url = str(tmp_path / "jobs.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = Database.open(url)
    try:
        yield JobTable(db)
    finally:
        db.close()


def _other(pid: int = 1) -> Owner:
    # pid 1 is alive on every Linux machine; a different token makes it another owner.
    return Owner(socket.gethostname(), pid, "other")


def test_ids_come_from_the_database_and_one_source_is_one_job(table: JobTable) -> None:
    me = Owner.this_process()
    a, created_a = table.open_job("org/a", False, {}, me, 30)
    b, created_b = table.open_job("org/b", False, {}, me, 30)
    again, created_again = table.open_job("org/a", False, {}, _other(), 30)
    assert created_a and created_b and not created_again
    assert b.id == a.id + 1 and again.id == a.id and again.owner == me.id


def test_a_live_owner_keeps_its_job_and_of_two_takers_one_wins(table: JobTable) -> None:
    live = _other()
    row, _ = table.open_job("org/a", False, {}, live, 30)
    assert table.claim(row.id, Owner.this_process(), 30) is None  # owner alive, lease valid
    table.release(live)
    first, second = Owner.this_process(), Owner(socket.gethostname(), os.getpid(), "second")
    assert table.claim(row.id, first, 30) is not None
    assert table.claim(row.id, second, 30) is None  # the first took it
    assert table.get(row.id).owner == first.id


def test_an_expired_lease_is_taken_and_the_old_owner_learns_it(table: JobTable) -> None:
    stale = _other()
    row, _ = table.open_job("org/a", False, {}, stale, -1)  # its lease ran out a second ago
    me = Owner.this_process()
    assert table.claim(row.id, me, 30) is not None
    assert table.heartbeat(stale, 30, {row.id: ("downloading", 5, 10)}) == {row.id}
    assert not table.finish(row.id, stale, "completed", model_key="k")  # not its job any more
    assert table.finish(row.id, me, "completed", model_key="k")
    ended = table.get(row.id)
    assert (ended.status, ended.model_key, ended.owner) == ("completed", "k", None)
    assert table.claim(row.id, stale, 30) is None  # an ended job is nobody's


def test_a_dead_owner_on_this_host_is_gone() -> None:
    assert not owner_gone(Owner.this_process().id)
    assert owner_gone(f"{socket.gethostname()}:{2**22 + 7}:x")  # above pid_max: never a process
    assert not owner_gone("another-host:1:x")  # only its lease can tell


def test_cancel_from_anywhere_is_seen_by_the_owner(table: JobTable) -> None:
    me = Owner.this_process()
    row, _ = table.open_job("org/a", False, {}, me, 30)
    assert table.cancel(row.id) == "waiting"
    assert table.heartbeat(me, 30, {row.id: ("downloading", 1, 2)}) == {row.id}
    assert table.get(row.id).status == "cancelled"
    assert table.cancel(row.id) == "cancelled"  # ended: left as it was
