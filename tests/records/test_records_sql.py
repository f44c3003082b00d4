"""SQL store specifics: query plans, foreign/corrupt databases, caller transactions, reader isolation."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _records_helpers import rec

from modeldepot._db import Database
from modeldepot.configs import parse_config
from modeldepot.errors import DatabaseError, DuplicateModelException
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL, RecordFilter
from modeldepot.records._schema import COMPONENT, MIGRATIONS, SCHEMA_VERSION, model_bases, model_tags, models
from modeldepot.records.base import key_prefix_upper_bound
from modeldepot.records.sql import _bases_rows, _row_of


@pytest.fixture
def sql_store(tmp_path: Path) -> Iterator[ModelRecordServiceSQL]:
    store = ModelRecordServiceSQL.from_db_file(tmp_path / "records.db")
    yield store
    store.close()


LOOKUPS = {
    "key": None,
    "name": RecordFilter.build(name="x"),
    "base": RecordFilter.build(base="sd-1"),
    "type": RecordFilter.build(type="lora"),
    "format": RecordFilter.build(format="checkpoint"),
    "base+type": RecordFilter.build(base="sdxl", type="main"),
    "hash": RecordFilter(hash="blake3:00"),
    "path": RecordFilter(path="/m/x"),
    "path, both spellings": RecordFilter(paths=("sd-1/x", "/models/sd-1/x")),  # search_by_path under models_dir
    "tags": RecordFilter(tags=("a", "b")),
}


@pytest.mark.parametrize("analyze", [False, True], ids=["no-stats", "analyzed"])
@pytest.mark.parametrize("what", list(LOOKUPS))
def test_sqlite_lookups_are_served_by_an_index(sql_store: ModelRecordServiceSQL, what: str, analyze: bool) -> None:
    kinds = [("lora", "lycoris"), ("main", "checkpoint"), ("vae", "checkpoint")]
    sql_store.add_models(
        [
            rec(f"m{i}", *kinds[i % 3], base=("sd-1", "sdxl")[i % 2], tags=["a", "b"][: 1 + i % 2])
            | ({"hash": f"blake3:{i // 2:04x}"} if i % 3 else {})  # some unhashed, some shared
            for i in range(300)
        ]
    )
    if analyze:  # with statistics the planner may prefer a scan for unselective filters
        with sql_store.db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    plan = sql_store.explain(key="k" * 32) if what == "key" else sql_store.explain(LOOKUPS[what])
    text = "\n".join(plan)
    assert "USING INDEX" in text or "USING COVERING INDEX" in text, plan
    for line in plan:
        assert not line.startswith("SCAN"), plan  # no full scan of any table
    if what in ("name", "base", "type", "format", "base+type"):
        assert "TEMP B-TREE" not in text, plan  # the index also yields the listing order


def test_sqlite_listing_walks_the_order_index(sql_store: ModelRecordServiceSQL) -> None:
    assert sql_store.explain(RecordFilter()) == ["SCAN models USING INDEX ix_models_base_type_name"]


def test_postgres_lookups_can_use_indexes(pg_url: str) -> None:
    store = ModelRecordServiceSQL.from_url(pg_url)
    try:
        store.add_models([rec(f"m{i}") for i in range(20)])
        with store.db.begin() as conn:
            # Tiny tables make sequential scans cheapest; forbid them to show an index exists.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            for what, flt in LOOKUPS.items():
                plan = "\n".join(store.explain(flt, key="k" if what == "key" else None, conn=conn))
                assert "Index" in plan, (what, plan)
                assert "Seq Scan on models" not in plan, (what, plan)
    finally:
        store.close()


def test_random_bytes_db_is_refused_and_untouched(tmp_path: Path) -> None:
    bad = tmp_path / "records.db"
    payload = os.urandom(4096)
    bad.write_bytes(payload)
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        ModelRecordServiceBase.from_db_file(bad)
    assert bad.read_bytes() == payload


def test_foreign_sqlite_db_is_refused_and_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE models (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("INSERT INTO models (what) VALUES ('theirs')")
    conn.close()
    with pytest.raises(DatabaseError, match="another program"):
        ModelRecordServiceSQL.from_db_file(foreign)
    # Its content is intact and nothing of ours was added. (Database.open may have switched the
    # file to WAL journaling before refusing it; that header change loses no data.)
    with sqlite3.connect(foreign) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = conn.execute("SELECT id, what FROM models").fetchall()
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    conn.close()
    assert tables == ["models"]
    assert rows == [(1, "theirs")]
    assert app_id == 0


def test_newer_records_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    ModelRecordServiceSQL.from_db_file(path).close()
    db = Database.open(path)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE schema_versions SET version = 99 WHERE component = 'records'"))
    db.close()
    with pytest.raises(DatabaseError, match="newer"):
        ModelRecordServiceSQL.from_db_file(path)


def test_yaml_content_in_a_db_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    path.write_text("__metadata__: {format: modeldepot-records, version: 1}\nmodels: {}\n")
    with pytest.raises(DatabaseError):
        ModelRecordServiceBase.from_db_file(path)
    assert path.read_text().startswith("__metadata__")


def test_corrupt_stored_record_names_its_key(sql_store: ModelRecordServiceSQL) -> None:
    cfg = sql_store.add_model(rec("a"))
    with sql_store.db.begin() as conn:
        conn.execute(sa.text("UPDATE models SET config = '{\"name\": 5}' WHERE key = :k"), {"k": cfg.key})
    with pytest.raises(DatabaseError, match=cfg.key):
        sql_store.get_model(cfg.key)
    with pytest.raises(DatabaseError, match=cfg.key):
        sql_store.all_models()


def test_write_inside_a_caller_transaction(sql_store: ModelRecordServiceSQL) -> None:
    with sql_store.db.begin() as conn:
        cfg = sql_store.add_model(rec("in-txn"), conn=conn)
        assert sql_store.get_model(cfg.key, conn=conn).name == "in-txn"
        assert sql_store.exists(cfg.key, conn=conn)
        sql_store.update_model(cfg.key, {"description": "d"}, conn=conn)
    assert sql_store.get_model(cfg.key).description == "d"

    class Boom(Exception):
        pass

    with pytest.raises(Boom), sql_store.db.begin() as conn:
        other = sql_store.add_model(rec("rolled-back"), conn=conn)
        sql_store.del_model(cfg.key, conn=conn)
        raise Boom
    assert not sql_store.exists(other.key)
    assert sql_store.exists(cfg.key)


def test_duplicate_inside_caller_transaction(sql_store: ModelRecordServiceSQL) -> None:
    cfg = sql_store.add_model(rec("a"))
    with pytest.raises(DuplicateModelException), sql_store.db.begin() as conn:
        sql_store.add_model(rec("b", path=cfg.path), conn=conn)


def test_readers_do_not_wait_for_an_open_write_transaction(sql_store: ModelRecordServiceSQL) -> None:
    cfg = sql_store.add_model(rec("a"))
    results: list[object] = []
    with sql_store.db.begin() as conn:
        sql_store.add_model(rec("uncommitted"), conn=conn)  # holds SQLite's write lock

        def read() -> None:
            results.append(sql_store.get_model(cfg.key).name)
            results.append(sorted(m.name for m in sql_store.all_models()))
            results.append(sql_store.count_models())

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "a read blocked behind the writer"
    assert results == ["a", ["a"], 1]


def test_from_db_file_and_from_url_pick_the_backend(tmp_path: Path, pg_url: str) -> None:
    s1 = ModelRecordServiceBase.from_db_file(tmp_path / "a.sqlite")
    s2 = ModelRecordServiceBase.from_db_file(pg_url)
    s3 = ModelRecordServiceSQL.from_url(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert isinstance(s1, ModelRecordServiceSQL) and s1.db.is_sqlite
        assert isinstance(s2, ModelRecordServiceSQL) and s2.db.dialect == "postgresql"
        assert s3.db.is_sqlite and (tmp_path / "b.db").exists()
        assert s1.schema_version() == s2.schema_version() == s3.schema_version() == SCHEMA_VERSION
        assert s1.version() == s2.version() == s3.version() == "3.2"
    finally:
        for s in (s1, s2, s3):
            s.close()


def test_shared_database_is_not_closed_by_the_store(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "shared.db")
    store = ModelRecordServiceSQL(db)
    store.add_model(rec("a"))
    store.close()
    assert db.version("records") == SCHEMA_VERSION
    again = ModelRecordServiceSQL(db)
    assert len(again.all_models()) == 1
    again.close()
    db.close()


def test_sqlite_key_prefix_lookup_is_an_index_range(sql_store: ModelRecordServiceSQL) -> None:
    sql_store.add_models([rec(f"m{i}") for i in range(300)])
    plan = sql_store.explain(key_prefix="abcdef")
    assert any(line.startswith("SEARCH models USING INDEX") and "key>" in line for line in plan), plan
    assert not any(line.startswith("SCAN") for line in plan), plan


def test_postgres_key_prefix_lookup_can_use_an_index(pg_url: str) -> None:
    store = ModelRecordServiceSQL.from_url(pg_url)
    try:
        store.add_models([rec(f"m{i}") for i in range(20)])
        with store.db.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(store.explain(key_prefix="abcdef", conn=conn))
        assert "Index" in plan and "Seq Scan on models" not in plan, plan
    finally:
        store.close()


def test_key_prefix_upper_bound() -> None:
    assert key_prefix_upper_bound("abc") == "abd"
    assert key_prefix_upper_bound("a\U0010ffff") == "b"
    assert key_prefix_upper_bound("\U0010ffff") is None
    assert key_prefix_upper_bound("") is None
    assert key_prefix_upper_bound("x\ud7ff") == "x\ue000"  # never a surrogate


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_v1_database_tags_are_folded_by_the_migration(tmp_path: Path, backend: str, request) -> None:  # type: ignore[no-untyped-def]
    """A database written before tags were case-insensitive: its tag index is folded on open."""
    target = str(tmp_path / "v1.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    db = Database.open(target)
    db.migrate(COMPONENT, MIGRATIONS[:1])  # the v1 schema, filled the way v1 code filled it
    cfg = parse_config(rec("old", tags=["Portrait", "portrait", "Été"]))
    with db.begin() as conn:
        conn.execute(models.insert(), _row_of(cfg))
        conn.execute(model_bases.insert(), _bases_rows(cfg))
        conn.execute(model_tags.insert(), [{"key": cfg.key, "tag": t} for t in cfg.tags])
    store = ModelRecordServiceSQL(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        with db.connect() as conn:
            rows = sorted(conn.execute(sa.select(model_tags.c.tag)).scalars())
        assert rows == ["portrait", "été"]
        assert [m.key for m in store.search_by_tag("PORTRAIT")] == [cfg.key]
        assert [m.key for m in store.search_by_tag("ÉTÉ")] == [cfg.key]
    finally:
        store.close()
        db.close()
