"""``ModelRecordServiceSQL.from_connection(conn, lock)`` and ``ModelRecordServiceBase.open(config,
conn, lock)``: records kept in a SQLite connection the caller opened and guards with a lock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _records_helpers import rec

from modeldepot.config import DepotConfig
from modeldepot.errors import DatabaseError, DuplicateModelException
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceFile, ModelRecordServiceSQL


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The application's own database, holding a table of its own."""
    c = sqlite3.connect(tmp_path / "app.db", check_same_thread=False)
    c.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, who TEXT)")
    c.commit()
    yield c
    c.close()


@pytest.fixture
def store(conn: sqlite3.Connection) -> Iterator[ModelRecordServiceSQL]:
    s = ModelRecordServiceSQL.from_connection(conn, threading.Lock())
    yield s
    s.close()


def test_records_live_in_the_callers_database(conn: sqlite3.Connection, store: ModelRecordServiceSQL) -> None:
    key = store.add_model(rec("a")).key
    assert conn.execute("SELECT key FROM models").fetchall() == [(key,)]
    assert not conn.in_transaction, "every write is committed"
    assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)  # the caller's table is untouched


def test_closing_the_store_leaves_the_connection_open(conn: sqlite3.Connection) -> None:
    store = ModelRecordServiceSQL.from_connection(conn, threading.Lock())
    store.add_model(rec("a"))
    store.close()
    assert conn.execute("SELECT count(*) FROM models").fetchone() == (1,)
    again = ModelRecordServiceSQL.from_connection(conn, threading.Lock())
    assert [m.name for m in again.all_models()] == ["a"]
    again.close()


def test_in_memory_connection(tmp_path: Path) -> None:
    c = sqlite3.connect(":memory:")
    store = ModelRecordServiceSQL.from_connection(c)  # no lock: one of its own
    try:
        key = store.add_model(rec("a")).key
        assert store.exists(key) and store.version() == "3.2"
    finally:
        store.close()
        c.close()


def test_the_caller_and_threads_share_connection_and_lock(conn: sqlite3.Connection) -> None:
    lock = threading.Lock()
    shared = ModelRecordServiceSQL.from_connection(conn, lock)
    errors: list[BaseException] = []

    def add(prefix: str) -> None:
        try:
            for i in range(15):
                shared.add_model(rec(f"{prefix}-{i}"))
                assert shared.search_by_attr(name=f"{prefix}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for n in range(15):
        with lock:  # the application's own use of the connection, as the seed doc describes
            conn.execute("INSERT INTO sessions (who) VALUES (?)", (f"user{n}",))
            conn.commit()
    for t in threads:
        t.join()
    assert not errors
    assert len(shared.all_models()) == 60
    shared.close()
    assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (15,)


def test_a_read_inside_a_write_shares_the_transaction(store: ModelRecordServiceSQL) -> None:
    with store.db.begin() as c:
        key = store.add_model(rec("a"), conn=c).key
        assert store.get_model(key).name == "a"  # same thread, same connection: no deadlock
    assert store.exists(key)
    with pytest.raises(RuntimeError), store.db.begin() as c:
        store.add_model(rec("b"), conn=c)
        store.all_models()  # a nested read must not end the outer transaction
        raise RuntimeError("abort")
    assert [m.name for m in store.all_models()] == ["a"]


def test_a_transaction_the_caller_left_open_is_theirs(conn: sqlite3.Connection, store: ModelRecordServiceSQL) -> None:
    conn.execute("INSERT INTO sessions (who) VALUES ('pending')")
    assert conn.in_transaction
    store.add_model(rec("a"))
    assert conn.in_transaction, "the store joined the caller's transaction and left it to them"
    conn.rollback()
    assert store.all_models() == []


def test_errors_are_model_depot_errors(store: ModelRecordServiceSQL, tmp_path: Path) -> None:
    store.add_model(rec("a"))
    with pytest.raises(DuplicateModelException):
        store.add_model(rec("a"))
    with pytest.raises(DatabaseError, match=r"sqlite3\.Connection"):
        ModelRecordServiceSQL.from_connection(str(tmp_path / "x.db"))  # type: ignore[arg-type]
    closed = sqlite3.connect(":memory:")
    with pytest.raises(DatabaseError, match="Lock"):
        ModelRecordServiceSQL.from_connection(closed, "not a lock")
    closed.close()
    with pytest.raises(DatabaseError, match="closed"):
        ModelRecordServiceSQL.from_connection(closed)


def test_open_uses_the_connection_given(conn: sqlite3.Connection, tmp_path: Path) -> None:
    config = DepotConfig(home=tmp_path / "home")
    store = ModelRecordServiceBase.open(config, conn, threading.Lock())
    try:
        assert isinstance(store, ModelRecordServiceSQL)
        assert store.models_dir == config.models_path
        added = store.add_model(rec("a", path="sd-1/lora/a.safetensors"))
        assert added.path == str(config.models_path / "sd-1" / "lora" / "a.safetensors")
        assert conn.execute("SELECT path FROM models").fetchall() == [("sd-1/lora/a.safetensors",)]
    finally:
        store.close()


def test_open_without_a_connection_opens_the_configured_database(tmp_path: Path) -> None:
    config = DepotConfig(home=tmp_path / "home")
    store = ModelRecordServiceBase.open(config)
    try:
        assert isinstance(store, ModelRecordServiceSQL) and store.db.url == config.db_url
    finally:
        store.close()
    yaml_config = DepotConfig(home=tmp_path / "home", db="records.yaml")
    memory = sqlite3.connect(":memory:")
    yaml_store = ModelRecordServiceBase.open(yaml_config, memory, threading.Lock())
    try:
        assert isinstance(yaml_store, ModelRecordServiceFile)  # a configured file wins, as in the doc
        assert yaml_store.models_dir == yaml_config.models_path
    finally:
        yaml_store.close()
        memory.close()


def test_an_empty_database_becomes_ours_and_a_shared_one_stays_the_callers(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    empty = sqlite3.connect(tmp_path / "empty.db")
    ModelRecordServiceSQL.from_connection(empty).close()
    empty.close()
    ModelRecordServiceSQL.from_db_file(tmp_path / "empty.db").close()  # recognised as a modeldepot database
    ModelRecordServiceSQL.from_connection(conn).close()
    assert conn.execute("PRAGMA application_id").fetchone() == (0,)  # the application's file keeps its identity
    with pytest.raises(DatabaseError, match="another program"):
        ModelRecordServiceSQL.from_db_file(tmp_path / "app.db")
