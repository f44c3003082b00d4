"""Fixture: a ContentStore over a fresh home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage_helpers import make_store

from modeldepot.storage import ContentStore


@pytest.fixture
def store(home: Path) -> Iterator[ContentStore]:
    s, db = make_store(home)
    yield s
    db.close()
