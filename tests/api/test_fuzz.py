"""No input makes a 500: schemathesis drives every operation of the app's own OpenAPI spec in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from modeldepot.api.app import create_app  # noqa: E402
from modeldepot.manager import ModelManager  # noqa: E402
from modeldepot.testing.fakehub import FakeHub  # noqa: E402

_state: dict[str, object] = {}


def _app() -> object:
    return _state["app"]


@pytest.fixture(scope="module", autouse=True)
def _fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home: Path = tmp_path_factory.mktemp("fuzz") / "depot"
    with (
        FakeHub() as hub,
        ModelManager.open(home=home, hf_endpoint=hub.url, civitai_endpoint=hub.url, allow_private_urls=True) as mm,
    ):
        for i in range(3):
            mm.store.add_model(
                {
                    "name": f"m{i}",
                    "type": "lora",
                    "format": "lycoris",
                    "base": "sd-1",
                    "path": f"/fake/m{i}.safetensors",
                }
            )
        _state["app"] = create_app(mm)
        _state["schema"] = schemathesis.openapi.from_asgi("/openapi.json", _state["app"])
        yield
        mm.install.wait_for_installs(timeout=30)


# The event stream never ends by design; it is tested with a real client in test_events.py.
schema = schemathesis.pytest.from_fixture("fuzz_schema").exclude(path="/api/v2/events")


@pytest.fixture
def fuzz_schema() -> object:
    return _state["schema"]


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
