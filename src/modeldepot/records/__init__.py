"""Model record stores: one validated record per model, in SQL (SQLite / PostgreSQL) or a YAML file.

``ModelRecordServiceBase.from_db_file(path)`` picks the store: ``.yaml``/``.yml`` -> YAML file,
a ``postgresql://`` URL -> PostgreSQL, anything else -> SQLite.
``ModelRecordServiceSQL.from_connection(conn, lock)`` keeps records in a caller's open SQLite
connection, and ``ModelRecordServiceBase.open(config, conn, lock)`` picks from the settings.
Given ``models_dir``, a store keeps paths under it relative and hands them out absolute;
``resolve_model_path`` does the same for a raw relative path.

The enums and exceptions a record-store user needs are re-exported here, as the seed doc has
them importable from the record-service module.
"""

from __future__ import annotations

from modeldepot.errors import DuplicateModelException, InvalidModelConfigException, UnknownModelException
from modeldepot.records._paths import resolve_model_path
from modeldepot.records.base import ModelRecordServiceBase, RecordFilter
from modeldepot.records.file import ModelRecordServiceFile
from modeldepot.records.sql import ModelRecordServiceSQL
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType, ModelVariantType, SchedulerPredictionType

__all__ = [
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
