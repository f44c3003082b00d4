"""The free-text index's life: the v3/v4 migrations of an older database, and the fallback to the
LIKE scan where the engine cannot have the index (then building it once the engine can)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from _records_helpers import rec

from modeldepot._db import Database
from modeldepot.configs import parse_config
from modeldepot.records import ModelRecordServiceSQL, RecordFilter, _schema
from modeldepot.records._schema import COMPONENT, FTS_TABLE, MIGRATIONS, SCHEMA_VERSION, model_bases, models
from modeldepot.records.sql import _bases_rows, _row_of


def _fts_objects(store: ModelRecordServiceSQL) -> set[str]:
    with store.db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'models_fts%'").all()
    return {r[0] for r in rows}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_v2_database_gets_tag_copies_and_the_text_index(tmp_path: Path, backend: str, request) -> None:  # type: ignore[no-untyped-def]
    target = str(tmp_path / "v2.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    db = Database.open(target)
    db.migrate(COMPONENT, MIGRATIONS[:2])  # the v2 schema, filled the way v2 code filled it
    cfgs = [
        parse_config(rec("old-one", tags=["Portrait", "style"], description="Searchable Words")),
        parse_config(rec("old-two", "vae", "checkpoint", tags=["style"], compatible_bases=["sd-2"])),
    ]
    tags = sa.table("model_tags", sa.column("key"), sa.column("tag"))
    with db.begin() as conn:
        for cfg in cfgs:
            conn.execute(models.insert(), _row_of(cfg))
            conn.execute(model_bases.insert(), _bases_rows(cfg))
            conn.execute(tags.insert(), [{"key": cfg.key, "tag": t.casefold()} for t in cfg.tags])
    store = ModelRecordServiceSQL(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        with db.connect() as conn:
            rows = conn.exec_driver_sql("SELECT tag, base, type, name FROM model_tags ORDER BY tag, name").all()
        assert [tuple(r) for r in rows] == [
            ("portrait", "sd-1", "lora", "old-one"),
            ("style", "sd-1", "lora", "old-one"),
            ("style", "sd-1", "vae", "old-two"),
        ]
        assert [m.name for m in store.search_models(tag="STYLE")] == ["old-one", "old-two"]
        assert [m.name for m in store.search_models(tag="style", base="sd-2")] == ["old-two"]
        assert [m.name for m in store.search_models(q="searchable")] == ["old-one"]  # rows from before v4
        assert store.count_models(q="words") == 1
        if backend == "sqlite":
            assert FTS_TABLE in _fts_objects(store)
            assert "models_fts VIRTUAL TABLE" in "\n".join(store.explain(store_filter("searchable"), limit=50))
        else:
            with db.connect() as conn:
                found = conn.exec_driver_sql(f"SELECT 1 FROM pg_indexes WHERE indexname = '{_schema.TRGM_INDEX}'")
                assert found.first() is not None
    finally:
        store.close()
        db.close()


def store_filter(q: str) -> RecordFilter:
    return RecordFilter.build(q=q)


def test_sqlite_without_fts5_trigram_scans_then_builds_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "records.db"
    real = _schema.sqlite_has_fts5_trigram
    monkeypatch.setattr(_schema, "sqlite_has_fts5_trigram", lambda conn: False)
    with caplog.at_level(logging.INFO, logger="modeldepot.records"):
        store = ModelRecordServiceSQL.from_db_file(path)
    try:
        assert any("lacks FTS5" in r.getMessage() for r in caplog.records)
        assert _fts_objects(store) == set()
        store.add_model(rec("first", description="alpha words"))
        assert [m.name for m in store.search_models(q="alpha")] == ["first"]
        assert store.count_models(q="words") == 1
        assert store.explain(store_filter("alpha"), limit=50) == ["SCAN models USING INDEX ix_models_base_type_name"]
    finally:
        store.close()
    monkeypatch.setattr(_schema, "sqlite_has_fts5_trigram", real)
    store = ModelRecordServiceSQL.from_db_file(path)  # an engine with FTS5: the index is built
    try:
        assert FTS_TABLE in _fts_objects(store)
        assert [m.name for m in store.search_models(q="alpha")] == ["first"]
        assert "models_fts VIRTUAL TABLE" in "\n".join(store.explain(store_filter("alpha"), limit=50))
    finally:
        store.close()


def test_sqlite_engine_losing_fts5_drops_the_triggers_and_rebuilds_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database with the index opened by a SQLite without FTS5 (another Python): writes must
    not fail on the triggers, and the index must not be stale when FTS5 is back."""
    path = tmp_path / "records.db"
    store = ModelRecordServiceSQL.from_db_file(path)
    kept = store.add_model(rec("kept", description="before words"))
    gone = store.add_model(rec("gone", description="doomed words"))
    store.close()
    real = _schema.sqlite_has_fts5_trigram
    monkeypatch.setattr(_schema, "sqlite_has_fts5_trigram", lambda conn: False)
    store = ModelRecordServiceSQL.from_db_file(path)
    try:
        assert _fts_objects(store) & {f"{FTS_TABLE}_ai", f"{FTS_TABLE}_ad", f"{FTS_TABLE}_au"} == set()
        store.add_model(rec("later", description="after words"))
        store.update_model(kept.key, {"description": "changed words"})
        store.del_model(gone.key)
        assert [m.name for m in store.search_models(q="after")] == ["later"]
    finally:
        store.close()
    monkeypatch.setattr(_schema, "sqlite_has_fts5_trigram", real)
    store = ModelRecordServiceSQL.from_db_file(path)
    try:
        assert "models_fts VIRTUAL TABLE" in "\n".join(store.explain(store_filter("after"), limit=50))
        assert [m.name for m in store.search_models(q="after")] == ["later"]
        assert [m.name for m in store.search_models(q="changed")] == ["kept"]
        assert store.search_models(q="before") == []
        assert store.search_models(q="doomed") == []
        assert store.count_models(q="words") == 2
    finally:
        store.close()


def test_postgres_without_pg_trgm_scans_and_says_so(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A role that may not create the extension gets an error from the CREATE EXTENSION; an
    # extension that does not exist fails the same way, inside the migration's transaction.
    real = _schema._PG_TRGM_DDL
    monkeypatch.setattr(_schema, "_PG_TRGM_DDL", ("CREATE EXTENSION IF NOT EXISTS modeldepot_no_such_extension",))
    with caplog.at_level(logging.WARNING, logger="modeldepot.records"):
        store = ModelRecordServiceSQL.from_url(pg_url)
    try:
        assert any("cannot set up pg_trgm" in r.getMessage() for r in caplog.records)
        assert store.schema_version() == SCHEMA_VERSION  # the migration itself went through
        store.add_model(rec("first", description="alpha words"))
        assert [m.name for m in store.search_models(q="alpha")] == ["first"]
    finally:
        store.close()
    monkeypatch.setattr(_schema, "_PG_TRGM_DDL", real)
    store = ModelRecordServiceSQL.from_url(pg_url)  # allowed now: the index appears at open
    try:
        with store.db.connect() as conn:
            found = conn.exec_driver_sql(f"SELECT 1 FROM pg_indexes WHERE indexname = '{_schema.TRGM_INDEX}'")
            assert found.first() is not None
        assert [m.name for m in store.search_models(q="alpha")] == ["first"]
    finally:
        store.close()


def test_postgres_trigram_index_serves_long_queries_only(pg_url: str) -> None:
    store = ModelRecordServiceSQL.from_url(pg_url)
    try:
        store.add_models([rec(f"m{i}", description=f"number {i}") for i in range(200)])
        with store.db.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny table: show what can serve
            conn.exec_driver_sql("SET LOCAL enable_indexscan = off")  # not the listing-order walk
            long = "\n".join(store.explain(store_filter("number 42"), conn=conn))
            # Two characters have no trigram: the index would hand back every row to recheck.
            short = "\n".join(store.explain(store_filter("42"), conn=conn))
        assert _schema.TRGM_INDEX in long, long
        assert _schema.TRGM_INDEX not in short, short
        assert [m.name for m in store.search_models(q="42")] == ["m142", "m42"]
    finally:
        store.close()


def test_sqlite_vacuum_keeps_the_index_in_step(tmp_path: Path) -> None:
    """The index addresses records by models' rowid, which VACUUM (run by a user with the sqlite3
    shell, say) must not renumber."""
    path = tmp_path / "records.db"
    store = ModelRecordServiceSQL.from_db_file(path)
    added = store.add_models([rec(f"m{i:03d}", description=f"text {i:03d}") for i in range(60)])
    for cfg in added[::3]:
        store.del_model(cfg.key)  # gaps in the rowids, which a renumbering would close
    store.close()
    raw = sqlite3.connect(path, isolation_level=None)
    before = dict(raw.execute("SELECT key, rowid FROM models").fetchall())
    raw.execute("VACUUM")
    after = dict(raw.execute("SELECT key, rowid FROM models").fetchall())
    raw.close()
    assert after == before
    store = ModelRecordServiceSQL.from_db_file(path)
    try:
        assert [m.name for m in store.search_models(q="text 058")] == ["m058"]
        assert store.search_models(q="text 057") == []  # deleted
        store.update_model(added[58].key, {"description": "moved on"})
        assert store.search_models(q="text 058") == []
        assert store.count_models(q="text 0") == 39
    finally:
        store.close()
