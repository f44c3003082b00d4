from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def mm(tmp_path: Path, hub: FakeHub) -> Iterator[ModelManager]:
    """A manager whose Hugging Face and Civitai endpoints are the local fakehub."""
    with ModelManager.open(
        home=tmp_path / "depot",
        hf_endpoint=hub.url,
        civitai_endpoint=hub.url,
        allow_private_urls=True,
        link_modes=["hardlink", "copy"],
    ) as m:
        yield m
