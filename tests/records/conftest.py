"""Record-store fixtures: every suite test runs on SQLite, a YAML file and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modeldepot.records import ModelRecordServiceBase

OpenStore = Callable[[], ModelRecordServiceBase]


@pytest.fixture(params=["sqlite", "yaml", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, a YAML file, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "records.db")
    if request.param == "yaml":
        return str(tmp_path / "records.yaml")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def open_store(location: str) -> Iterator[OpenStore]:
    """Open (or re-open) the store at ``location``; everything opened is closed at teardown."""
    opened: list[ModelRecordServiceBase] = []

    def _open() -> ModelRecordServiceBase:
        store = ModelRecordServiceBase.from_db_file(location)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> ModelRecordServiceBase:
    return open_store()
