import pytest

from modeldepot._db import Database


def test_pg_fixture_gives_fresh_database(pg_url: str) -> None:
    db = Database.open(pg_url)
    assert db.migrate("x", [lambda c: c.exec_driver_sql("CREATE TABLE t (a int)")]) == 1
    db.close()


def test_foreign_sqlite_refused(tmp_path) -> None:
    import sqlite3

    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("create table foo (a)")
    con.commit()
    con.close()
    from modeldepot.errors import DatabaseError

    with pytest.raises(DatabaseError, match="another program"):
        Database.open(p)


def _open_at(path: str, start: object, errors: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    try:
        Database.open(path).close()
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_processes_opening_one_new_database_at_once_all_succeed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Several processes (installers, a ``list``) creating the same new home at the same moment:
    none may take it for another program's file or fail on a lock (each round had a few percent
    chance to before the open was serialised)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for i in range(40):
        path = str(tmp_path / f"r{i}" / "modeldepot.db")
        start = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_at, args=(path, start, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
