"""InvokeAI compatibility: the record-store examples of document 002 ("Model Manager V2"),
written as a user coming from InvokeAI would write them.

Doc names mapped to this project: ``invokeai.app.services.model_records`` is
``modeldepot.records``; ``InvokeAIAppConfig`` is ``modeldepot.DepotConfig`` (``db_url`` for the
database, ``models_dir`` for the models folder).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.configs import (
    AnyModelConfig,
    MainCheckpointConfig,
    ModelConfigBase,
    ONNXSD2Config,
    TextualInversionFileConfig,
)
from modeldepot.records import (
    BaseModelType,
    DuplicateModelException,
    InvalidModelConfigException,
    ModelFormat,
    ModelRecordServiceBase,
    ModelRecordServiceFile,
    ModelRecordServiceSQL,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
    UnknownModelException,
)

KEY = "f13dd932c0c35c22dcb8d6cda4203764"
CKPT = "/tmp/models/ckpts/v1-5-pruned-emaonly.safetensors"

lock = threading.Lock()  # stands in for ``from invokeai.app.services.thread import lock``


def v15(**kw: object) -> dict[str, object]:
    """The doc's example model as a dict of its documented field names."""
    return {
        "name": "v1-5-pruned-emaonly",
        "model_type": "main",
        "model_format": "checkpoint",
        "base_model": "sd-1",
        "path": CKPT,
        "config": "configs/stable-diffusion/v1-inference.yaml",
        "hash": "blake3:1234",
        "description": "Stable Diffusion 1.5",
        "source": "runwayml/stable-diffusion-v1-5",
        **kw,
    }


@pytest.fixture(params=["from_connection", "sql_file", "yaml_file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelRecordServiceBase]:
    """The three ways "Creating a ModelRecordService" shows."""
    conn: sqlite3.Connection | None = None
    if request.param == "from_connection":
        conn = sqlite3.connect(str(tmp_path / "invokeai.db"), check_same_thread=False)
        s: ModelRecordServiceBase = ModelRecordServiceSQL.from_connection(conn, lock)
    elif request.param == "sql_file":
        s = ModelRecordServiceSQL.from_db_file(tmp_path / "sqlite_database.db")
    else:
        s = ModelRecordServiceFile.from_db_file(tmp_path / "database.yaml")
    yield s
    s.close()
    if conn is not None:
        conn.close()


def test_from_db_file_picks_by_extension(tmp_path: Path) -> None:
    sql = ModelRecordServiceBase.from_db_file(tmp_path / "a" / "file.db")
    yaml = ModelRecordServiceBase.from_db_file(tmp_path / "a" / "file.yaml")
    try:
        assert isinstance(sql, ModelRecordServiceSQL) and isinstance(yaml, ModelRecordServiceFile)
        assert (tmp_path / "a" / "file.db").exists() and (tmp_path / "a" / "file.yaml").exists()
    finally:
        sql.close()
        yaml.close()


def test_typical_startup_pattern(tmp_path: Path) -> None:
    config = DepotConfig(home=tmp_path / "invokeai")
    Path(config.db_url).parent.mkdir(parents=True, exist_ok=True)
    db_conn = sqlite3.connect(Path(config.db_url).as_posix(), check_same_thread=False)
    store = ModelRecordServiceBase.open(config, db_conn, lock)
    try:
        assert isinstance(store, ModelRecordServiceSQL)
        store.add_model(KEY, v15())
        assert db_conn.execute("SELECT key FROM models").fetchall() == [(KEY,)]
    finally:
        store.close()
        db_conn.close()
    reopened = ModelRecordServiceBase.open(config)  # no connection: opens config.db itself
    try:
        assert reopened.get_model(KEY).path == CKPT
    finally:
        reopened.close()


def test_add_model_key_and_dict_then_get_model(store: ModelRecordServiceBase) -> None:
    added = store.add_model(KEY, v15())
    assert isinstance(added, MainCheckpointConfig)  # picked by the discriminated union
    model_conf = store.get_model(KEY)
    assert model_conf.path == "/tmp/models/ckpts/v1-5-pruned-emaonly.safetensors"
    assert isinstance(model_conf, MainCheckpointConfig) and model_conf == added
    assert model_conf.config == "configs/stable-diffusion/v1-inference.yaml"
    assert (model_conf.model_type, model_conf.model_format, model_conf.base_model) == (
        ModelType.Main,
        ModelFormat.Checkpoint,
        BaseModelType.StableDiffusion1,
    )
    assert model_conf.variant == ModelVariantType.Normal and model_conf.vae is None


def test_add_model_key_and_config_object(store: ModelRecordServiceBase) -> None:
    config = TextualInversionFileConfig(
        name="pokemon", base=BaseModelType.StableDiffusion1, path="/tmp/pokemon.bin", hash="ABC123"
    )
    added = store.add_model("key2", config)
    assert isinstance(added, TextualInversionFileConfig) and added.key == "key2"
    assert store.get_model("key2").name == "pokemon"


def test_add_model_errors(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    with pytest.raises(DuplicateModelException):
        store.add_model(KEY, v15(path="/tmp/models/other.safetensors"))
    with pytest.raises(InvalidModelConfigException):
        store.add_model("key3", v15(base_model="sd-0", path="/tmp/x.safetensors"))


def test_get_model_and_exists(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    assert store.exists(KEY)
    assert not store.exists("0" * 32)
    with pytest.raises(UnknownModelException):
        store.get_model("0" * 32)


def test_search_by_path(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    assert [m.key for m in store.search_by_path(CKPT)] == [KEY]
    assert store.search_by_path("/tmp/models/ckpts/other.safetensors") == []


def test_search_by_name_and_all_models(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    store.add_model("lora1", {"name": "detail", "type": "lora", "format": "lycoris", "base": "sd-1", "path": "/l"})
    assert [m.key for m in store.search_by_name("v1-5-pruned-emaonly", BaseModelType.StableDiffusion1)] == [KEY]
    assert [m.key for m in store.search_by_name(type=ModelType.LoRA)] == ["lora1"]
    everything = store.search_by_name()
    assert {m.key for m in everything} == {KEY, "lora1"}
    assert store.all_models() == everything
    assert store.get_model_by_attr(model_type=ModelType.LoRA) == store.search_by_name(type=ModelType.LoRA)


def test_search_by_tag_and_filtering_all_models(store: ModelRecordServiceBase) -> None:
    store.add_model("a", v15(path="/a", name="a", tags=["sfw", "scenery"], license="allowCommercialUse=Sell"))
    store.add_model("b", v15(path="/b", name="b", tags=["sfw"]))
    configs = store.search_by_tag(["sfw", "scenery"])
    assert [c.key for c in configs] == ["a"]
    commercializable_models = [x for x in store.all_models() if x.license and "allowCommercialUse=Sell" in x.license]
    assert [m.key for m in commercializable_models] == ["a"]


def test_version(store: ModelRecordServiceBase) -> None:
    assert store.version() == "3.2"


def test_model_info_by_name(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    found = store.model_info_by_name("v1-5-pruned-emaonly", BaseModelType.StableDiffusion1, ModelType.Main)
    assert found.key == KEY
    store.add_model("foo", v15(name="my_model", path="/foo/my_model"))
    store.add_model("bar", v15(name="my_model", path="/bar/my_model"))
    with pytest.raises(DuplicateModelException):
        store.model_info_by_name("my_model", BaseModelType.StableDiffusion1, ModelType.Main)
    assert {m.key for m in store.search_by_name("my_model")} == {"foo", "bar"}


def test_update_model_sparse_dict_and_whole_config(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    updated = store.update_model(KEY, {"description": "updated", "config": "configs/other.yaml"})
    assert updated.description == "updated" and updated.config == "configs/other.yaml"
    whole = store.get_model(KEY)
    whole.name = "renamed"
    assert store.update_model(KEY, whole).name == "renamed"
    assert store.get_model(KEY).description == "updated"
    with pytest.raises(UnknownModelException):
        store.update_model("0" * 32, {"description": "x"})
    with pytest.raises(InvalidModelConfigException):
        store.update_model(KEY, {"variant": "not-a-variant"})


def test_del_model(store: ModelRecordServiceBase) -> None:
    store.add_model(KEY, v15())
    store.del_model(KEY)
    assert not store.exists(KEY)
    with pytest.raises(UnknownModelException):
        store.del_model(KEY)


def test_onnx_sd2_config(store: ModelRecordServiceBase) -> None:
    onnx = ONNXSD2Config(name="sd2-onnx", path="/tmp/models/sd2-onnx")
    assert onnx.prediction_type == SchedulerPredictionType.VPrediction and onnx.upcast_attention is True
    store.add_model("onnx1", onnx)
    got = store.get_model("onnx1")
    assert isinstance(got, ONNXSD2Config) and got.model_format == ModelFormat.ONNX


def test_relative_path_is_relative_to_models_dir(tmp_path: Path) -> None:
    config = DepotConfig(home=tmp_path / "invokeai")
    store = ModelRecordServiceBase.open(config)
    try:
        store.add_model(KEY, v15(path="sd-1/main/v1-5-pruned-emaonly.safetensors"))
        assert store.get_model(KEY).path == str(config.models_path / "sd-1/main/v1-5-pruned-emaonly.safetensors")
    finally:
        store.close()


def test_any_model_config_is_the_union_of_record_classes() -> None:
    from pydantic import TypeAdapter

    parsed = TypeAdapter(AnyModelConfig).validate_python(v15())
    assert isinstance(parsed, MainCheckpointConfig) and isinstance(parsed, ModelConfigBase)
