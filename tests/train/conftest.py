"""Training tests run tiny networks: one torch thread each, a depot per test module, and the tiny SD-1
pipeline installed in it."""

from __future__ import annotations

from typing import Any

import pytest
from tests._torch_fixtures import _one_thread, depot

__all__ = ["_one_thread", "base", "depot"]


@pytest.fixture(scope="module")
def base(depot: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The key of the factories' tiny SD-1 pipeline, installed as an sd-1 main model."""
    pytest.importorskip("diffusers")
    from modeldepot.testing.factories import torch_models as F

    folder = F.tiny_sd_pipeline(tmp_path_factory.mktemp("base") / "tiny-sd")
    key: str = depot.install.install_path(folder, {"name": "tiny-sd", "base": "sd-1"})
    return key
