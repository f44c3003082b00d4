"""Model record stores: one validated record per model, in SQL (SQLite / PostgreSQL) or a YAML file.

``ModelRecordServiceBase.from_db_file(path)`` picks the store: ``.yaml``/``.yml`` -> YAML file,
a ``postgresql://`` URL -> PostgreSQL, anything else -> SQLite.
"""

from __future__ import annotations

from modeldepot.records.base import ModelRecordServiceBase, RecordFilter
from modeldepot.records.file import ModelRecordServiceFile
from modeldepot.records.sql import ModelRecordServiceSQL

__all__ = ["ModelRecordServiceBase", "ModelRecordServiceFile", "ModelRecordServiceSQL", "RecordFilter"]
