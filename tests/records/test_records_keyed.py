"""The seed doc's call forms on every store: ``add_model(key, config)``, ``version() -> str``,
``get_model_by_attr``."""

from __future__ import annotations

import pytest
from _records_helpers import rec

from modeldepot.configs import LoRALyCORISConfig
from modeldepot.errors import DuplicateModelException, InvalidModelConfigException
from modeldepot.records import ModelRecordServiceBase
from modeldepot.taxonomy import BaseModelType


def lora(**kw: object) -> LoRALyCORISConfig:
    fields: dict[str, object] = {"name": "l", "base": BaseModelType.StableDiffusion1, "path": "/m/l.safetensors"}
    return LoRALyCORISConfig(**(fields | kw))


def test_key_first_with_a_dict(store: ModelRecordServiceBase) -> None:
    added = store.add_model("key1", rec("a"))
    assert added.key == "key1" and store.get_model("key1").name == "a"
    with pytest.raises(DuplicateModelException):
        store.add_model("key1", rec("b"))


def test_key_first_with_a_record_made_in_code(store: ModelRecordServiceBase) -> None:
    config = lora()  # carries a random key of its own
    added = store.add_model("key2", config)
    assert added.key == "key2" and store.get_model("key2").path == "/m/l.safetensors"
    assert config.key != "key2", "the caller's object is not changed"
    assert store.add_model("key3", lora(key="key3", path="/m/l3.safetensors")).key == "key3"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("key4", {**rec("a"), "key": "other"}), "key"),
        (("key4", lora(key="other")), "key"),
        (("", rec("a")), "key"),
        ((42, rec("a")), "key"),
        (("key4",), "config"),
    ],
)
def test_bad_key_first_calls_name_the_problem(store: ModelRecordServiceBase, args: tuple, field: str) -> None:
    with pytest.raises(InvalidModelConfigException) as err:
        store.add_model(*args)
    assert err.value.field == field
    assert store.all_models() == []


def test_key_first_with_a_bad_config_names_the_field(store: ModelRecordServiceBase) -> None:
    with pytest.raises(InvalidModelConfigException) as err:
        store.add_model("key5", rec("a", base="sd-9"))
    assert err.value.field == "base"
    with pytest.raises(InvalidModelConfigException):
        store.add_model("key5", ["not", "a", "config"])


def test_version_is_a_string_and_schema_version_an_int(store: ModelRecordServiceBase) -> None:
    assert store.version() == "3.2"
    assert isinstance(store.schema_version(), int) and store.schema_version() >= 1


def test_get_model_by_attr_is_search_by_attr(store: ModelRecordServiceBase) -> None:
    store.add_model(rec("a"))
    store.add_model(rec("b", base="sdxl"))
    assert [m.name for m in store.get_model_by_attr(base_model="sdxl")] == ["b"]
    assert store.get_model_by_attr(model_name="a", model_type="lora") == store.search_by_attr(name="a", type="lora")


def test_keyword_forms(store: ModelRecordServiceBase) -> None:
    assert store.add_model(key="kw", config=rec("a")).key == "kw"
    cfg = lora()
    assert store.add_model(config=cfg).key == cfg.key
    with pytest.raises(InvalidModelConfigException):
        store.add_model()
