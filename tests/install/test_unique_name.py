"""``unique_name``: the first free name of ``name``, ``name (2)``, ``name (3)``... per (base, type),
asked of the store as one index range instead of reading every record of that base and type."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from modeldepot.install._store import unique_name
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL
from modeldepot.taxonomy import BaseModelType, ModelType

SD1, SDXL = BaseModelType.StableDiffusion1, BaseModelType.StableDiffusionXL
LORA, VAE = ModelType.LoRA, ModelType.VAE


@pytest.fixture(params=["sqlite", "yaml", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelRecordServiceBase]:
    if request.param == "sqlite":
        location = str(tmp_path / "records.db")
    elif request.param == "yaml":
        location = str(tmp_path / "records.yaml")
    else:
        location = request.getfixturevalue("pg_url")
    s = ModelRecordServiceBase.from_db_file(location)
    yield s
    s.close()


def _rec(name: str, base: str = "sd-1", type: str = "lora", **extra: Any) -> dict[str, Any]:
    fmt = "lycoris" if type == "lora" else "checkpoint"
    return {"name": name, "base": base, "type": type, "format": fmt, "path": f"/m/{base}/{type}/{name}", **extra}


def _reference(names: set[str], name: str) -> str:
    """What unique_name answered before: the first free of name, name (2), name (3)..."""
    if name not in names:
        return name
    n = 2
    while f"{name} ({n})" in names:
        n += 1
    return f"{name} ({n})"


def test_first_free_numbered_name(store: ModelRecordServiceBase) -> None:
    assert unique_name(store, "model", SD1, LORA) == "model"
    store.add_models(
        [
            _rec("model"),
            _rec("model (2)"),
            _rec("model (4)"),
            _rec("model (3)", base="sdxl"),  # another base
            _rec("model (3)", type="vae"),  # another type
            _rec("model (3)x", base="sd-1"),  # not a numbered form
            _rec("model !"),
            _rec("model\t(3)"),
        ]
    )
    # Compatible with sd-1 but its own base is sd-2: not a name of sd-1 (as before).
    store.add_model(_rec("model (3)", base="sd-2", type="vae", compatible_bases=["sd-1"]))
    assert unique_name(store, "model", SD1, LORA) == "model (3)"
    assert unique_name(store, "model", SDXL, LORA) == "model"
    assert unique_name(store, "model (3)", SDXL, LORA) == "model (3) (2)"
    assert unique_name(store, "model", SD1, VAE) == "model"
    assert unique_name(store, "mod", SD1, LORA) == "mod"
    assert store.taken_names("model", SD1, LORA) == {"model", "model (2)", "model (4)", "model (3)x"}


def test_matches_the_old_answer_on_random_names(store: ModelRecordServiceBase) -> None:
    rnd = random.Random(11)
    stems = ["m", "m (", "m ((2)", "m)", "x", "Ünï", "Ünï (2)"]
    names = [f"{rnd.choice(stems)}{rnd.choice(['', ' (2)', ' (3)', ' (10)', ' (2) (2)', '!', ' '])}" for _ in range(60)]
    names = list(dict.fromkeys(names))
    store.add_models([_rec(n) for n in names])
    for probe in sorted(set(stems) | set(names)):
        assert unique_name(store, probe, SD1, LORA) == _reference(set(names), probe), probe


def test_sql_store_reads_one_index_range(tmp_path: Path) -> None:
    store = ModelRecordServiceSQL.from_db_file(tmp_path / "records.db")
    try:
        store.add_models([_rec(f"other-{i:03d}") for i in range(200)] + [_rec("model"), _rec("model (2)")])
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            statements.append((statement, parameters))

        event.listen(store._reader, "before_cursor_execute", capture)
        try:
            assert unique_name(store, "model", SD1, LORA) == "model (3)"
        finally:
            event.remove(store._reader, "before_cursor_execute", capture)
        assert len(statements) == 1, statements  # one query, not a listing plus probes
        sql, params = statements[0]
        assert "config" not in sql  # names only, no record is parsed
        with store._reader.connect() as conn:
            plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()]
        assert plan == [
            "SEARCH models USING COVERING INDEX ix_models_base_type_name (base=? AND type=? AND name>? AND name<?)"
        ]
    finally:
        store.close()


def test_rename_check_is_an_index_lookup(tmp_path: Path) -> None:
    store = ModelRecordServiceSQL.from_db_file(tmp_path / "records.db")
    try:
        keys = [m.key for m in store.add_models([_rec(f"n{i}") for i in range(50)])]
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            statements.append((statement, parameters))

        event.listen(store.db.engine, "before_cursor_execute", capture)
        try:
            store.rename_model(keys[0], "fresh")
        finally:
            event.remove(store.db.engine, "before_cursor_execute", capture)
        checks = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT") and "models.name =" in s]
        assert len(checks) == 1, statements
        with store.db.connect() as conn:
            plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + checks[0][0], checks[0][1]).all()]
        assert len(plan) == 1 and plan[0].startswith("SEARCH models USING COVERING INDEX ix_models_base_type_name"), (
            plan
        )
        assert "(base=? AND type=? AND name=?)" in plan[0], plan
    finally:
        store.close()
