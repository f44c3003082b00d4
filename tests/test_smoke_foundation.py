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
