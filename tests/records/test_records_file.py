"""YAML store specifics: bad files are refused and never overwritten; other writers are never lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _records_helpers import rec

from modeldepot.errors import DatabaseError
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceFile


@pytest.fixture
def yaml_path(tmp_path: Path) -> Path:
    return tmp_path / "models.yaml"


@pytest.fixture
def yaml_store(yaml_path: Path) -> Iterator[ModelRecordServiceFile]:
    store = ModelRecordServiceFile(yaml_path)
    yield store
    store.close()


def _refused(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match=match) as info:
        ModelRecordServiceBase.from_db_file(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_new_file_carries_the_marker(yaml_store: ModelRecordServiceFile, yaml_path: Path) -> None:
    doc = yaml.safe_load(yaml_path.read_text())
    assert doc["__metadata__"] == {"format": "modeldepot-records", "version": 1}
    assert doc["models"] == {}
    assert yaml_store.schema_version() == 1 and yaml_store.version() == "3.2"


def test_file_layout_is_readable_and_round_trips(yaml_store: ModelRecordServiceFile, yaml_path: Path) -> None:
    cfg = yaml_store.add_model(rec("a", compatible_bases=["sd-2", "sdxl"], tags=["x"]))
    doc = yaml.safe_load(yaml_path.read_text())
    body = doc["models"][cfg.key]
    assert body["name"] == "a" and body["type"] == "lora" and "key" not in body
    assert body["compatible_bases"] == ["sd-1", "sd-2", "sdxl"]
    assert ModelRecordServiceFile(yaml_path).get_model(cfg.key) == cfg
    assert list(yaml_path.parent.glob("*.tmp")) == []


def test_garbage_yaml_is_refused(yaml_path: Path) -> None:
    yaml_path.write_text("models: [unclosed\n  - : : :\n\t{")
    _refused(yaml_path, "not valid YAML")


def test_binary_file_with_yaml_suffix_is_refused(yaml_path: Path) -> None:
    with sqlite3.connect(yaml_path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    _refused(yaml_path, "record file")


@pytest.mark.parametrize(
    "text",
    [
        # InvokeAI 3's models.yaml: another schema entirely
        "__metadata__:\n  version: 3.0.0\nsd-1/main/stable-diffusion-v1-5:\n  path: sd-1/main/sd15\n",
        "just a string\n",
        "- a\n- list\n",
        "models: {}\n",
    ],
)
def test_foreign_yaml_is_refused(yaml_path: Path, text: str) -> None:
    yaml_path.write_text(text)
    _refused(yaml_path, "not a modeldepot record file")


def test_newer_schema_is_refused(yaml_path: Path) -> None:
    yaml_path.write_text("__metadata__: {format: modeldepot-records, version: 7}\nmodels: {}\n")
    _refused(yaml_path, "newer")


@pytest.mark.parametrize(
    ("models", "match"),
    [
        ("{k1: {name: a, type: lora, format: lycoris, base: sd-9, path: /a}}", "k1.*base"),
        ("{k1: {name: a, type: lora, format: lycoris, base: sd-1}}", "k1.*path"),
        ("{k1: [1, 2]}", "k1.*mapping"),
        ("[1, 2]", "mapping"),
        (
            "{k1: {name: a, type: lora, format: lycoris, base: sd-1, path: /a},"
            " k2: {name: b, type: lora, format: lycoris, base: sd-1, path: /a}}",
            "share the path",
        ),
        ("{k1: {key: k2, name: a, type: lora, format: lycoris, base: sd-1, path: /a}}", "different 'key'"),
    ],
)
def test_invalid_records_are_refused_naming_the_problem(yaml_path: Path, models: str, match: str) -> None:
    yaml_path.write_text(f"__metadata__: {{format: modeldepot-records, version: 1}}\nmodels: {models}\n")
    _refused(yaml_path, match)


def test_file_edited_into_nonsense_after_open_is_never_overwritten(
    yaml_store: ModelRecordServiceFile, yaml_path: Path
) -> None:
    yaml_store.add_model(rec("a"))
    yaml_path.write_text("models: {{{{ broken by hand\n")
    with pytest.raises(DatabaseError, match="not valid YAML"):
        yaml_store.all_models()
    with pytest.raises(DatabaseError, match="not valid YAML"):
        yaml_store.add_model(rec("b"))
    assert yaml_path.read_text() == "models: {{{{ broken by hand\n"


def test_hand_edit_is_picked_up(yaml_store: ModelRecordServiceFile, yaml_path: Path) -> None:
    cfg = yaml_store.add_model(rec("a"))
    doc = yaml.safe_load(yaml_path.read_text())
    doc["models"][cfg.key]["description"] = "edited by hand"
    doc["models"]["handmade"] = {"name": "h", "type": "vae", "format": "checkpoint", "base": "sdxl", "path": "/h"}
    yaml_path.write_text(yaml.safe_dump(doc))
    assert yaml_store.get_model(cfg.key).description == "edited by hand"
    assert yaml_store.get_model("handmade").name == "h"
    yaml_store.add_model(rec("b"))
    assert {m.name for m in ModelRecordServiceFile(yaml_path).all_models()} == {"a", "b", "h"}


def test_empty_file_is_initialised(yaml_path: Path) -> None:
    yaml_path.write_text("")
    store = ModelRecordServiceFile(yaml_path)
    assert store.all_models() == []
    assert "modeldepot-records" in yaml_path.read_text()


def test_deleted_file_reads_as_empty_and_is_recreated(yaml_store: ModelRecordServiceFile, yaml_path: Path) -> None:
    yaml_store.add_model(rec("a"))
    yaml_path.unlink()
    assert yaml_store.all_models() == []
    yaml_store.add_model(rec("b"))
    assert [m.name for m in ModelRecordServiceFile(yaml_path).all_models()] == ["b"]


def test_folder_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models.yaml"
    folder.mkdir()
    with pytest.raises(DatabaseError, match="folder"):
        ModelRecordServiceBase.from_db_file(folder)


def test_yml_suffix_picks_the_file_store(tmp_path: Path) -> None:
    store = ModelRecordServiceBase.from_db_file(tmp_path / "Models.YML")
    assert isinstance(store, ModelRecordServiceFile)


def test_lock_held_by_another_writer_times_out_cleanly(
    yaml_store: ModelRecordServiceFile, yaml_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    other = FileLock(str(yaml_path) + ".lock")
    monkeypatch.setattr(yaml_store._lock, "timeout", 0.2)
    with other:
        with pytest.raises(DatabaseError, match="locked by another process"):
            yaml_store.add_model(rec("a"))
        assert yaml_store.all_models() == []  # reads never need the lock
    yaml_store.add_model(rec("a"))
    assert [m.name for m in yaml_store.all_models()] == ["a"]
