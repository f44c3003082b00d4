"""Header-only identification: what a model file or folder is (type, format, base, variant...) and why.

``identify(path)`` reads safetensors headers, JSON configs and pickle key tables - never tensor
data - and returns an :class:`Identification` whose ``reasons`` say which keys, shapes or
metadata decided each field, and whose ``candidates`` keep every rule's verdict for ``explain``.
"""

from __future__ import annotations

from modeldepot.errors import IdentificationError, InvalidSafetensorsError, UnsafePickleError
from modeldepot.identify._core import FILE_RULES, WEIGHT_CONTENTS, apply_overrides, content_kind, identify, load_view
from modeldepot.identify._explain import explain
from modeldepot.identify._pickle import read_pickle_keys, read_pickle_table, scan_pickle
from modeldepot.identify._record import record_fields
from modeldepot.identify._result import Candidate, Identification
from modeldepot.identify.safetensors import (
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    read_safetensors_header,
)

__all__ = [
    "FILE_RULES",
    "MAX_HEADER_BYTES",
    "WEIGHT_CONTENTS",
    "Candidate",
    "Identification",
    "IdentificationError",
    "InvalidSafetensorsError",
    "SafetensorsHeader",
    "TensorInfo",
    "UnsafePickleError",
    "apply_overrides",
    "content_kind",
    "explain",
    "identify",
    "load_view",
    "read_pickle_keys",
    "read_pickle_table",
    "read_safetensors_header",
    "record_fields",
    "scan_pickle",
]
