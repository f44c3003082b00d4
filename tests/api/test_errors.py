"""Bad input always gets a 4xx with a JSON body ``{"error": ..., "detail": ...}``, never a 500."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager

JSON = {"Content-Type": "application/json"}

BAD_BODIES: dict[str, bytes] = {
    "malformed": b'{"name": "x",',
    "not utf-8": b'{"name": "\xff\xfe"}',
    "wrong type": b'{"name": 5, "tags": "not-a-list"}',
    "a list, not an object": b'["name"]',
    "infinite number": b'{"name": 1e999999}',
    "NaN": b'{"name": NaN}',
    "a number too long to parse": b'{"name": ' + b"9" * 5000 + b"}",
    "deeply nested": b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested objects": b'{"tags": [' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}",
    "NUL in text": b'{"name": "a\\u0000b"}',
}


@pytest.fixture
def strict(mm: ModelManager) -> TestClient:
    # A 500 must reach the test as a response, not as a re-raised exception.
    return TestClient(create_app(mm, allowed_roots=[mm.config.home]), raise_server_exceptions=False)


@pytest.fixture
def key(mm: ModelManager, model_files: dict[str, Path]) -> str:
    return mm.install.register_path(model_files["lora"])


def _assert_client_error(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), (what, r.text[:300])
    body = r.json()
    assert isinstance(body, dict) and body.get("error") and body.get("detail"), (what, body)


@pytest.mark.parametrize("what", sorted(BAD_BODIES))
def test_bad_json_bodies_get_a_4xx_json_answer(strict: TestClient, key: str, what: str) -> None:
    body = BAD_BODIES[what]
    for method, path in (
        ("PATCH", f"/api/v2/models/i/{key}"),
        ("POST", "/api/v2/models/identify"),
        ("POST", "/api/v2/models/install?source=org/repo"),
    ):
        r = strict.request(method, path, content=body, headers=JSON)
        _assert_client_error(r, f"{what}: {method} {path}")
    assert strict.get(f"/api/v2/models/i/{key}").json()["name"] == "tiny-lora"  # nothing changed


def test_body_parse_errors_say_what_is_wrong(strict: TestClient, key: str) -> None:
    deep = strict.patch(f"/api/v2/models/i/{key}", content=BAD_BODIES["deeply nested"], headers=JSON).json()
    assert deep == {"error": "Bad Request", "detail": "the JSON body nests too deeply"}
    long = strict.patch(f"/api/v2/models/i/{key}", content=BAD_BODIES["a number too long to parse"], headers=JSON)
    assert "too many digits" in long.json()["detail"]
    inf = strict.patch(f"/api/v2/models/i/{key}", content=BAD_BODIES["infinite number"], headers=JSON)
    assert inf.status_code == 422 and inf.json()["detail"][0]["loc"] == ["body", "name"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/models/install/99999999999999999999999999999"),
        ("GET", "/api/v2/models/install/not-a-number"),
        ("GET", "/api/v2/models/?offset=99999999999999999999999999"),
        ("GET", "/api/v2/models/?limit=1e5"),
        ("GET", "/api/v2/models/?base=not-a-base"),
        ("POST", "/api/v2/storage/gc?dry_run=maybe"),
        ("GET", "/api/v2/no-such-route"),
        ("PUT", "/api/v2/models/"),
    ],
)
def test_bad_urls_get_a_4xx_json_answer(strict: TestClient, method: str, path: str) -> None:
    _assert_client_error(strict.request(method, path), f"{method} {path}")


def test_a_bucket_that_fails_is_a_bad_gateway_not_the_clients_fault() -> None:
    from modeldepot.api.errors import error_body, status_for
    from modeldepot.errors import FleetError

    exc = FleetError("cannot reach the S3 endpoint http://minio.lan:9000", url="s3://models/fleet")
    assert status_for(exc) == 502
    assert error_body(exc) == {"error": "FleetError", "detail": str(exc)}
