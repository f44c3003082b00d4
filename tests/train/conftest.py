"""Training tests run tiny networks: one torch thread each (xdist already runs two workers on two cores)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A depot in a fresh home, shared by one test module's tests."""
    from modeldepot import ModelManager

    mm = ModelManager.open(home=tmp_path_factory.mktemp("train") / "home")
    yield mm
    mm.close()
