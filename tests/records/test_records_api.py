"""The package's public surface."""

from __future__ import annotations

import inspect

import modeldepot.records as records
from modeldepot.records import ModelRecordServiceBase, ModelRecordServiceFile, ModelRecordServiceSQL

CONTRACT = [
    "add_model",
    "update_model",
    "del_model",
    "rename_model",
    "get_model",
    "exists",
    "search_by_attr",
    "search_by_name",
    "search_by_path",
    "search_by_hash",
    "search_by_tag",
    "all_models",
    "model_info_by_name",
    "version",
    "schema_version",
    "get_model_by_attr",
    "open",
    "from_db_file",
    "search_models",
    "count_models",
    "search_by_key_prefix",
    "resolve",
]


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(records.__all__) == sorted(
        [
            "BaseModelType",
            "DuplicateModelException",
            "InvalidModelConfigException",
            "ModelFormat",
            "ModelRecordServiceBase",
            "ModelRecordServiceFile",
            "ModelRecordServiceSQL",
            "ModelType",
            "ModelVariantType",
            "RecordFilter",
            "SchedulerPredictionType",
            "UnknownModelException",
            "resolve_model_path",
        ]
    )
    for name in records.__all__:
        assert getattr(records, name) is not None


def test_every_store_implements_the_contract() -> None:
    for cls in (ModelRecordServiceSQL, ModelRecordServiceFile):
        assert not inspect.isabstract(cls)
        for name in CONTRACT:
            assert callable(getattr(cls, name)), (cls, name)
    assert callable(ModelRecordServiceSQL.from_url)
    assert callable(ModelRecordServiceSQL.from_connection)


def test_sql_mutators_accept_a_connection() -> None:
    for name in ("add_model", "add_models", "update_model", "del_model", "get_model"):
        assert "conn" in inspect.signature(getattr(ModelRecordServiceSQL, name)).parameters, name


def test_search_by_attr_accepts_invokeai_keywords(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ModelRecordServiceBase.from_db_file(tmp_path / "r.db")
    try:
        assert store.search_by_attr(model_name=None, base_model=None, model_type=None, model_format=None) == []
    finally:
        store.close()
