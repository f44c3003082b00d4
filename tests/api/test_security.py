"""Security: bind rule, API key on every route (constant time), Host/Origin checks, private URLs,
paths inside allowed roots, destinations inside the models folder, no domain HTTPException."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _api_helpers import install, wait_job
from fastapi.testclient import TestClient

from modeldepot.api import _security
from modeldepot.api.app import create_app
from modeldepot.api.serve import serve
from modeldepot.errors import NotAllowedError
from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub

KEY = "s3cret-key-for-tests"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_bind_needs_no_key(host: str) -> None:
    _security.check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_other_binds_need_a_key(host: str) -> None:
    with pytest.raises(NotAllowedError, match="API key"):
        _security.check_bind(host, None)
    _security.check_bind(host, "k")


def test_serve_refuses_public_bind_without_key_before_binding(tmp_path: Path) -> None:
    with pytest.raises(NotAllowedError, match=r"0\.0\.0\.0"):
        serve("0.0.0.0", 0, home=tmp_path / "depot")


@pytest.fixture
def keyed(tmp_path: Path, hub: FakeHub) -> Iterator[TestClient]:
    with (
        ModelManager.open(home=tmp_path / "keyed", api_key=KEY, hf_endpoint=hub.url, allow_private_urls=True) as m,
        TestClient(create_app(m)) as c,
    ):
        yield c


def _routes(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    out = [("GET", "/"), ("GET", "/docs"), ("GET", "/openapi.json")]
    for path, ops in spec["paths"].items():
        concrete = path.replace("{key}", "k").replace("{job_id}", "1")
        out.extend((m.upper(), concrete) for m in ops if m != "parameters")
    return out


def test_every_route_requires_the_key(keyed: TestClient) -> None:
    routes = _routes(keyed)
    assert len(routes) >= 20
    for method, path in routes:
        if path == "/api/v2/events":
            continue  # a stream: checked below without opening it
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
            r = keyed.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["error"] == "Unauthorized"
        r = keyed.request(method, path, headers={"X-API-Key": KEY})
        assert r.status_code != 401, (method, path)
    assert keyed.get("/api/v2/events").status_code == 401


def test_key_accepted_as_bearer_cookie_and_page_query(keyed: TestClient) -> None:
    assert keyed.get("/api/v2/models/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.post("/api/v2/storage/gc", params={"api_key": KEY}).status_code == 401  # query only on GET
    r = keyed.get("/", params={"api_key": KEY})
    assert r.status_code == 200 and "modeldepot" in r.text
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    # The cookie the page got now authenticates fetch() and EventSource calls.
    assert keyed.get("/api/v2/models/").status_code == 200
    keyed.cookies.clear()
    assert keyed.get("/api/v2/models/").status_code == 401


def test_key_is_compared_in_constant_time(keyed: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = _security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_security.hmac, "compare_digest", spy)
    keyed.get("/api/v2/models/", headers={"X-API-Key": "x"})
    keyed.get("/api/v2/models/", headers={"X-API-Key": "a much longer wrong key than the real one"})
    # Fixed-length digests are compared, so neither the length nor a prefix of the key leaks.
    assert len(calls) >= 2 and all(len(a) == len(b) == 32 for a, b in calls)


def test_no_key_configured_means_open_on_loopback(client: TestClient) -> None:
    assert client.get("/api/v2/models/").status_code == 200


def test_foreign_host_and_cross_origin_writes_refused(mm: ModelManager) -> None:
    app = create_app(mm, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:9090") as c:
        assert c.get("/api/v2/models/").status_code == 200
        r = c.get("/api/v2/models/", headers={"Host": "evil.example:9090"})
        assert r.status_code == 403  # DNS rebinding
        r = c.post("/api/v2/storage/gc", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403  # a page elsewhere cannot drive the API
        assert c.post("/api/v2/storage/gc", headers={"Origin": "http://127.0.0.1:9090"}).status_code == 200
        # Another port on the same machine is another origin.
        assert c.post("/api/v2/storage/gc", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 403


def test_private_sources_refused_unless_allowed(tmp_path: Path, hub: FakeHub, model_files: dict[str, Path]) -> None:
    with (
        FakeHub(host="127.0.0.2") as other,
        ModelManager.open(home=tmp_path / "strict") as m,
        TestClient(create_app(m)) as c,
    ):
        url = other.add_file("files/lora.safetensors", model_files["lora"])
        for source in (url, "http://localhost:1/x.safetensors", "http://[::1]:1/x.safetensors"):
            r = c.post("/api/v2/models/install", params={"source": source})
            assert r.status_code == 403, (source, r.text)
            assert r.json()["error"] == "BlockedAddressError" and "refused: private address" in r.json()["detail"]
        assert c.get("/api/v2/models/install").json() == []
        assert other.stats.max_concurrent_connections == 0
    # The fixture's manager allows them (as the demo does).
    url = hub.add_file("files/lora.safetensors", model_files["lora"])
    with ModelManager.open(home=tmp_path / "lax", allow_private_urls=True) as m, TestClient(create_app(m)) as c:
        job = c.post("/api/v2/models/install", params={"source": url}).json()
        assert wait_job(c.get, job["id"])["status"] == "completed"


def test_server_paths_only_inside_allowed_roots(client: TestClient, mm: ModelManager, tmp_path: Path,
                                                 model_files: dict[str, Path]) -> None:  # fmt: skip
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(model_files["lora"], outside / "x.safetensors")
    link = mm.config.home / "sneaky"
    link.symlink_to(outside)
    for path in (
        str(outside / "x.safetensors"),
        str(mm.config.home / ".." / "outside" / "x.safetensors"),
        str(link / "x.safetensors"),
        "/etc/passwd",
        "bad\x00path",
    ):
        r = client.post("/api/v2/models/identify", json={"path": path})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "NotAllowedError"
    r = client.get("/api/v2/models/scan_folder", params={"scan_path": str(outside)})
    assert r.status_code == 403
    r = client.get("/api/v2/models/scan_folder", params={"scan_path": "/"})
    assert r.status_code == 403
    r = client.post("/api/v2/models/install", params={"source": str(outside / "x.safetensors"), "inplace": "true"})
    assert r.status_code == 403
    assert mm.store.all_models() == []


def test_allowed_roots_extend_what_may_be_read(mm: ModelManager, tmp_path: Path, model_files: dict[str, Path]) -> None:
    extra = tmp_path / "a1111"
    extra.mkdir()
    shutil.copy(model_files["lora"], extra / "x.safetensors")
    with TestClient(create_app(mm, allowed_roots=[extra])) as c:
        assert c.post("/api/v2/models/identify", json={"path": str(extra / "x.safetensors")}).status_code == 200
        key = install(c, str(extra / "x.safetensors"), inplace="true")["config_out"]["key"]
        assert c.get(f"/api/v2/models/i/{key}").json()["path"] == str(extra / "x.safetensors")


def test_destination_stays_inside_models_folder(client: TestClient, mm: ModelManager, tmp_path: Path) -> None:
    r = client.post(
        "/api/v2/models/install",
        params={"source": "org/tiny-lora::tiny-lora.safetensors"},
        json={"name": "../../../../escaped"},
    )
    assert r.status_code in (201, 400, 422), r.text
    if r.status_code == 201:
        job = wait_job(client.get, r.json()["id"])
        if job["status"] == "completed":
            path = Path(job["config_out"]["path"]).resolve()
            assert path.is_relative_to(mm.config.models_path.resolve()), path
    assert not list(tmp_path.rglob("escaped*")) or all(
        p.resolve().is_relative_to(mm.config.models_path.resolve()) for p in tmp_path.rglob("escaped*")
    )


def test_routes_never_build_http_exceptions_for_domain_errors() -> None:
    api = Path(_security.__file__).parent
    for source in api.rglob("*.py"):
        text = source.read_text()
        assert "HTTPException(" not in text and "import HTTPException" not in text, source
