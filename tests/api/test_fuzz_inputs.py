"""Fuzzing the REST API with malformed model files on the server's disk (issue 13).

``POST /api/v2/models/identify`` must answer a 4xx with a JSON body naming the file; installing
the same path (``POST /api/v2/models/install``, in place or copied) must end its job in an error
naming the file, with nothing written: no record, no blob, no materialised model.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from modeldepot import errors
from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager


def _load_hostile_files() -> ModuleType:
    """The strategies shared with tests/identify (this folder is not on that one's import path)."""
    if "hostile_files" in sys.modules:
        return sys.modules["hostile_files"]
    path = Path(__file__).resolve().parent.parent / "identify" / "hostile_files.py"
    spec = importlib.util.spec_from_file_location("hostile_files", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile_files"] = module
    spec.loader.exec_module(module)
    return module


hostile = _load_hostile_files()
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_n = itertools.count()


class Depot:
    def __init__(self, mm: ModelManager, client: TestClient) -> None:
        self.mm = mm
        self.client = client
        self.inputs = Path(mm.config.home) / "fuzz-inputs"  # inside the roots the API may read

    def fresh(self) -> Path:
        root = self.inputs / f"case{next(_n)}"
        root.mkdir(parents=True)
        return root

    def written(self) -> tuple[int, set[str]]:
        home = Path(self.mm.config.home)
        files = {
            str(p)
            for folder in (home / "blobs", Path(self.mm.config.models_path))
            if folder.exists()
            for p in folder.rglob("*")
        }
        return len(self.mm.store.all_models()), files


@pytest.fixture
def depot(tmp_path: Path) -> Iterator[Depot]:
    with ModelManager.open(home=tmp_path / "depot", link_modes=["hardlink", "copy"]) as mm:
        assert mm.storage is not None  # the blob store makes its folders when first used
        with TestClient(create_app(mm)) as client:
            yield Depot(mm, client)


def _is_domain_error(name: object) -> bool:
    cls = getattr(errors, str(name), None)
    return isinstance(cls, type) and issubclass(cls, errors.ModelDepotError)


@pytest.mark.timeout(180)
@FUZZ
@given(case=hostile.hostile_cases)
def test_identify_endpoint_answers_4xx_naming_the_file(depot: Depot, case: object) -> None:
    root = depot.fresh()
    target = case.write(root)  # type: ignore[attr-defined]
    before = depot.written()
    r = depot.client.post("/api/v2/models/identify", json={"path": str(target)})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert _is_domain_error(body.get("error")), body
    assert str(root) in body["detail"] and "\n" not in body["detail"], body
    assert depot.written() == before


@pytest.mark.timeout(180)
@settings(FUZZ, max_examples=25)
@given(case=hostile.hostile_cases)
def test_install_endpoint_job_fails_naming_the_file(depot: Depot, case: object) -> None:
    root = depot.fresh()
    target = case.write(root)  # type: ignore[attr-defined]
    before = depot.written()
    for inplace in ("true", "false"):
        r = depot.client.post("/api/v2/models/install", params={"source": str(target), "inplace": inplace})
        assert r.status_code == 201, r.text[:500]
        job = depot.mm.install.wait_for_job(depot.mm.install.get_job_by_id(r.json()["id"]), timeout=60)
        public = depot.client.get(f"/api/v2/models/install/{job.id}").json()
        assert public["status"] == "error", public
        assert _is_domain_error(public["error_type"]), public
        assert str(root) in public["error"] and "\n" not in public["error"], public
        assert depot.written() == before
