"""Fuzzing identify and register_path with malformed model files (issue 13).

Every hostile case (see ``hostile_files``) must end in a ``ModelDepotError`` whose one-line
message names the file or folder at fault, quickly, and register / install must write nothing:
no record, no blob, no materialised model.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from modeldepot.errors import ModelDepotError
from modeldepot.identify import Identification, identify
from modeldepot.manager import ModelManager

from .hostile_files import HostileCase, hostile_cases, odd_config_folders

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_n = itertools.count()


def _fresh(base: Path) -> Path:
    root = base / f"case{next(_n)}"
    root.mkdir(parents=True)
    return root


def assert_clear_error(exc: BaseException, root: Path) -> None:
    assert isinstance(exc, ModelDepotError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert message and "\n" not in message and len(message) < 1000, message
    assert str(root) in message, f"the message does not name the file: {message}"


def _identify_error(case: HostileCase, root: Path) -> ModelDepotError:
    target = case.write(root)
    try:
        identify(target)
    except ModelDepotError as exc:
        assert_clear_error(exc, root)
        return exc
    raise AssertionError(f"{case.kind}: identify accepted a malformed file")


@pytest.mark.timeout(120)
@FUZZ
@given(case=hostile_cases)
def test_identify_refuses_hostile_files_clearly(tmp_path: Path, case: HostileCase) -> None:
    _identify_error(case, _fresh(tmp_path))


@pytest.mark.timeout(120)
@FUZZ
@given(case=odd_config_folders())
def test_identify_answers_odd_configs_or_refuses_clearly(tmp_path: Path, case: HostileCase) -> None:
    root = _fresh(tmp_path)
    target = case.write(root)
    try:
        result = identify(target)
    except ModelDepotError as exc:
        assert_clear_error(exc, root)
        return
    assert isinstance(result, Identification)
    json.dumps(result.to_dict())  # what the API and the records store


@pytest.fixture
def depot(tmp_path: Path) -> Iterator[ModelManager]:
    with ModelManager.open(home=tmp_path / "depot", link_modes=["hardlink", "copy"]) as mm:
        assert mm.storage is not None  # the blob store makes its folders when first used
        yield mm


def _written(mm: ModelManager) -> tuple[int, set[str]]:
    """Records, plus every file and folder under the store's blobs/ and models/ folders."""
    home = Path(mm.config.home)
    files = {
        str(p) for folder in (home / "blobs", Path(mm.config.models_path)) if folder.exists() for p in folder.rglob("*")
    }
    return len(mm.store.all_models()), files


@pytest.mark.timeout(180)
@FUZZ
@given(case=hostile_cases)
def test_register_and_install_write_nothing(tmp_path: Path, depot: ModelManager, case: HostileCase) -> None:
    root = _fresh(tmp_path / "inputs")
    target = case.write(root)
    before = _written(depot)
    for register in (depot.install.register_path, depot.install.install_path):
        with pytest.raises(ModelDepotError) as info:
            register(target)
        assert_clear_error(info.value, root)
        assert _written(depot) == before, f"{register.__name__} wrote something for {case.kind}"
