"""Fixtures of the packages whose tests run tiny torch networks (``tests/services``, ``tests/train``); each
package's conftest imports them, so they apply to that package only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    """One torch thread: xdist already runs two workers on the two cores, and extra intra-op threads there
    cost far more than they save (each parallel region waits for a descheduled thread)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A depot in a fresh home, shared by one test module's tests."""
    from modeldepot import ModelManager

    mm = ModelManager.open(home=tmp_path_factory.mktemp("depot") / "home")
    yield mm
    mm.close()
