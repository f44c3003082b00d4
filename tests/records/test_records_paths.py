"""Relative record paths (seed doc: "If relative, it is taken to be relative to the models_dir"),
on every store (SQLite, YAML, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from _records_helpers import rec

from modeldepot._compose import open_services
from modeldepot.config import DepotConfig
from modeldepot.errors import DuplicateModelException
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceSQL, resolve_model_path
from modeldepot.records._schema import models

Open = Callable[..., ModelRecordServiceBase]


@pytest.fixture
def open_at(location: str) -> Iterator[Open]:
    """Open the store at ``location`` told a models folder (or none)."""
    opened: list[ModelRecordServiceBase] = []

    def _open(models_dir: Path | None = None) -> ModelRecordServiceBase:
        store = ModelRecordServiceBase.from_db_file(location, models_dir=models_dir)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def raw_paths(store: ModelRecordServiceBase, location: str) -> dict[str, str]:
    """key -> the path as written to the database or file (not as the store hands it out)."""
    if isinstance(store, ModelRecordServiceSQL):
        with store.db.connect() as c:
            rows = c.execute(sa.select(models.c.key, models.c.path, models.c.config)).all()
        for _key, path, config in rows:
            assert f'"path":"{path}"' in config, "the indexed column and the record JSON agree"
        return {key: path for key, path, _ in rows}
    doc = yaml.safe_load(Path(location).read_text())
    return {key: data["path"] for key, data in doc["models"].items()}


def test_path_under_models_dir_is_stored_relative_and_read_absolute(
    open_at: Open, location: str, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    store = open_at(models_dir)
    full = str(models_dir / "sd-1" / "lora" / "a.safetensors")
    added = store.add_model(rec("a", path=full))
    assert added.path == full
    assert raw_paths(store, location) == {added.key: "sd-1/lora/a.safetensors"}
    assert store.get_model(added.key).path == full
    assert [m.path for m in store.all_models()] == [full]
    assert [m.path for m in store.search_by_attr(name="a")] == [full]
    assert [m.path for m in store.search_by_key_prefix(added.key[:8])] == [full]
    assert [m.key for m in store.search_by_path(full)] == [added.key]
    assert [m.key for m in store.search_by_path("sd-1/lora/a.safetensors")] == [added.key]


def test_relative_path_given_by_a_user_is_relative_to_models_dir(open_at: Open, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    store = open_at(models_dir)
    added = store.add_model(rec("foo", type="main", format="checkpoint", path="sd-1/main/foo.safetensors"))
    assert added.path == str(models_dir / "sd-1" / "main" / "foo.safetensors")
    assert store.get_model(added.key).path == added.path
    assert resolve_model_path("sd-1/main/foo.safetensors", store.models_dir) == Path(added.path)
    with pytest.raises(DuplicateModelException):
        store.add_model(rec("foo-again", type="main", format="checkpoint", path=added.path))


def test_paths_outside_models_dir_are_kept_as_given(open_at: Open, location: str, tmp_path: Path) -> None:
    store = open_at(tmp_path / "models")
    outside = str(tmp_path / "elsewhere" / "b.safetensors")
    added = store.add_model(rec("b", path=outside))
    assert raw_paths(store, location)[added.key] == outside == store.get_model(added.key).path
    escaping = store.add_model(rec("c", path="../elsewhere/c.safetensors"))
    assert escaping.path == str(tmp_path / "elsewhere" / "c.safetensors")


def test_without_models_dir_paths_are_kept_as_given(open_at: Open) -> None:
    store = open_at(None)
    assert store.models_dir is None
    added = store.add_model(rec("rel", path="sd-1/lora/rel.safetensors"))
    assert store.get_model(added.key).path == "sd-1/lora/rel.safetensors"


def test_a_moved_models_folder_needs_no_rewrite(open_at: Open, tmp_path: Path) -> None:
    first = open_at(tmp_path / "old" / "models")
    key = first.add_model(rec("a", path=str(tmp_path / "old" / "models" / "sd-1" / "a.safetensors"))).key
    first.close()
    moved = open_at(tmp_path / "new" / "models")
    assert moved.get_model(key).path == str(tmp_path / "new" / "models" / "sd-1" / "a.safetensors")


def test_absolute_rows_of_an_older_store_keep_working(open_at: Open, location: str, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    full = str(models_dir / "sd-1" / "lora" / "old.safetensors")
    legacy = open_at(None)  # writes paths as given: absolute
    key = legacy.add_model(rec("old", path=full)).key
    legacy.close()
    store = open_at(models_dir)
    assert raw_paths(store, location)[key] == full
    assert store.get_model(key).path == full
    assert [m.key for m in store.search_by_path(full)] == [key]
    assert [m.key for m in store.search_by_path("sd-1/lora/old.safetensors")] == [key]
    with pytest.raises(DuplicateModelException, match=str(full)):
        store.add_model(rec("old-again", path=full))  # the unique index alone would miss it
    with pytest.raises(DuplicateModelException):
        store.add_models([rec("old-batch", path="sd-1/lora/old.safetensors")])
    updated = store.update_model(key, {"description": "touched"})
    assert updated.path == full
    assert raw_paths(store, location)[key] == "sd-1/lora/old.safetensors"  # rewritten on update


def test_update_moving_a_record_stores_the_new_path_relative(open_at: Open, location: str, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    store = open_at(models_dir)
    key = store.add_model(rec("a", path=str(tmp_path / "in-place" / "a.safetensors"))).key
    moved = store.update_model(key, {"path": "sd-1/lora/a.safetensors"})
    assert moved.path == str(models_dir / "sd-1" / "lora" / "a.safetensors")
    assert raw_paths(store, location)[key] == "sd-1/lora/a.safetensors"
    whole = store.get_model(key)
    whole.description = "whole record back, absolute path"
    assert store.update_model(key, whole).path == moved.path
    assert raw_paths(store, location)[key] == "sd-1/lora/a.safetensors"


def test_resolve_model_path() -> None:
    assert resolve_model_path("sd-1/x.safetensors", "/home/m") == Path("/home/m/sd-1/x.safetensors")
    assert resolve_model_path("/abs/x.safetensors", "/home/m") == Path("/abs/x.safetensors")
    assert resolve_model_path("sd-1/x.safetensors", None) == Path("sd-1/x.safetensors")


@pytest.mark.parametrize("db", ["modeldepot.db", "records.yaml"])
def test_a_home_store_is_told_its_models_folder(tmp_path: Path, db: str) -> None:
    config = DepotConfig(home=tmp_path / "home", db=db)
    services = open_services(config)
    try:
        assert services.store.models_dir == config.models_path
    finally:
        services.close()
