"""The model reference (documents 000/001): JSON of the models each service knows.

``ModelReference.load(source=None, service=None)`` reads the copy shipped in ``data/`` (one file
per service, in the Nataili / AI Horde legacy format), a file, or a URL; it is a mapping of
``key -> ReferenceEntry``. Managers (``modeldepot.managers``) download, validate and load entries.
"""

from modeldepot.reference._reference import MAX_REFERENCE_BYTES, SERVICE_DB, ModelReference, shipped_path
from modeldepot.reference._schema import DownloadRecord, EntryConfig, FileRecord, ReferenceEntry, parse_entry

__all__ = [
    "MAX_REFERENCE_BYTES",
    "SERVICE_DB",
    "DownloadRecord",
    "EntryConfig",
    "FileRecord",
    "ModelReference",
    "ReferenceEntry",
    "parse_entry",
    "shipped_path",
]
