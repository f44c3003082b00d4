"""/api/v2/models record routes: listing, filters, paging, lookups, PATCH, DELETE, reidentify, files, scan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _api_helpers import Sources, install
from fastapi.testclient import TestClient

from modeldepot.manager import ModelManager


def _rec(name: str, type: str = "lora", format: str = "lycoris", base: str = "sd-1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type, "format": format, "base": base, "path": f"/fake/{base}/{type}/{name}", **extra}


@pytest.fixture
def records(mm: ModelManager) -> list[str]:
    keys = []
    for i in range(7):
        keys.append(mm.store.add_model(_rec(f"lora-{i}", tags=["style"] if i % 2 else ["char"], hash=f"h{i}")).key)
    keys.append(
        mm.store.add_model(_rec("xl-vae", type="vae", format="checkpoint", base="sdxl", description="Sharp")).key
    )
    keys.append(mm.store.add_model(_rec("sd-main", type="main", format="diffusers", source="org/thing")).key)
    return keys


def test_list_paging_reports_total(client: TestClient, records: list[str]) -> None:
    r = client.get("/api/v2/models/", params={"offset": 2, "limit": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 9 and body["offset"] == 2 and body["limit"] == 3
    assert len(body["models"]) == 3
    everything = client.get("/api/v2/models/").json()
    assert [m["key"] for m in everything["models"]][2:5] == [m["key"] for m in body["models"]]
    assert "source_api_response" not in body["models"][0]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"type": "vae"}, ["xl-vae"]),
        ({"base": "sdxl"}, ["xl-vae"]),
        ({"format": "diffusers"}, ["sd-main"]),
        ({"name": "lora-3"}, ["lora-3"]),
        ({"q": "SHARP"}, ["xl-vae"]),
        ({"q": "org/thing"}, ["sd-main"]),
        ({"tag": "style", "type": "lora"}, ["lora-1", "lora-3", "lora-5"]),
    ],
)
def test_list_filters(client: TestClient, records: list[str], params: dict[str, str], names: list[str]) -> None:
    body = client.get("/api/v2/models/", params=params).json()
    assert sorted(m["name"] for m in body["models"]) == names
    assert body["total"] == len(names)


def test_filtered_page_total_counts_all_matches(client: TestClient, records: list[str]) -> None:
    body = client.get("/api/v2/models/", params={"type": "lora", "limit": 2}).json()
    assert body["total"] == 7 and len(body["models"]) == 2 and body["total_exact"] is True


def test_counting_stops_past_the_limit_and_says_so(
    client: TestClient, records: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldepot.api.routers import models

    monkeypatch.setattr(models, "COUNT_LIMIT", 5)
    body = client.get("/api/v2/models/", params={"type": "lora", "limit": 2}).json()
    assert body["total"] == 5 and body["total_exact"] is False  # "more than 5" (7 match)
    assert len(body["models"]) == 2
    body = client.get("/api/v2/models/", params={"q": "lora-", "limit": 2}).json()  # the free-text count too
    assert body["total"] == 5 and body["total_exact"] is False
    body = client.get("/api/v2/models/", params={"base": "sdxl"}).json()
    assert body["total"] == 1 and body["total_exact"] is True


def test_bad_filter_values_are_422(client: TestClient) -> None:
    for params in ({"base": "sd-9"}, {"type": "nope"}, {"offset": -1}, {"limit": 0}):
        r = client.get("/api/v2/models/", params=params)
        assert r.status_code == 422, params


def test_get_by_attrs_and_hash(client: TestClient, records: list[str]) -> None:
    r = client.get("/api/v2/models/get_by_attrs", params={"name": "xl-vae", "type": "vae", "base": "sdxl"})
    assert r.status_code == 200 and r.json()["key"] == records[7]
    r = client.get("/api/v2/models/get_by_attrs", params={"name": "xl-vae", "type": "vae", "base": "sd-1"})
    assert r.status_code == 404 and r.json()["error"] == "UnknownModelException"
    assert client.get("/api/v2/models/get_by_hash", params={"hash": "h4"}).json()["name"] == "lora-4"
    r = client.get("/api/v2/models/get_by_hash", params={"hash": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_get_by_attrs_ambiguous_is_409(client: TestClient, mm: ModelManager) -> None:
    mm.store.add_model(_rec("twin", path="/fake/a/twin.safetensors", base="sdxl", compatible_bases=["sd-1"]))
    mm.store.add_model(_rec("twin", path="/fake/b/twin.safetensors", base="sd-2", compatible_bases=["sd-1"]))
    r = client.get("/api/v2/models/get_by_attrs", params={"name": "twin", "type": "lora", "base": "sd-1"})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "DuplicateModelException" and "twin" in r.json()["detail"]


def test_get_one_and_unknown_key(client: TestClient, records: list[str]) -> None:
    r = client.get(f"/api/v2/models/i/{records[0]}")
    assert r.status_code == 200 and r.json()["name"] == "lora-0" and r.json()["files_present"] is False
    r = client.get("/api/v2/models/i/does-not-exist")
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "UnknownModelException" and "does-not-exist" in body["detail"]


def test_patch_changes_fields(client: TestClient, records: list[str]) -> None:
    key = records[0]
    r = client.patch(
        f"/api/v2/models/i/{key}",
        json={
            "name": "renamed",
            "description": "nice",
            "tags": ["a", "b", "a"],
            "base": "sdxl",
            "trigger_phrases": ["in the style of x"],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "renamed" and body["description"] == "nice" and body["base"] == "sdxl"
    assert body["tags"] == ["a", "b"] and body["trigger_phrases"] == ["in the style of x"]
    again = client.get(f"/api/v2/models/i/{key}").json()
    assert again["name"] == "renamed" and again["base"] == "sdxl"
    # Only what is sent changes.
    assert client.patch(f"/api/v2/models/i/{key}", json={"description": None}).json()["name"] == "renamed"


def test_patch_type_override(client: TestClient, records: list[str]) -> None:
    r = client.patch(f"/api/v2/models/i/{records[7]}", json={"type": "lora", "format": "lycoris"})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "lora"


def test_patch_rejects_bad_input(client: TestClient, records: list[str]) -> None:
    key = records[0]
    assert client.patch(f"/api/v2/models/i/{key}", json={"base": "sd-9"}).status_code == 422
    assert client.patch(f"/api/v2/models/i/{key}", json={"name": ""}).status_code == 422
    assert client.patch(f"/api/v2/models/i/{key}", json={"path": "/etc/passwd"}).status_code == 422
    assert client.patch(f"/api/v2/models/i/{key}", json={"tags": "notalist"}).status_code == 422
    assert client.patch("/api/v2/models/i/nope", json={"name": "x"}).status_code == 404


def test_install_then_files_reidentify_delete(client: TestClient, mm: ModelManager, sources: Sources) -> None:
    job = install(client, sources.lora)
    key = job["config_out"]["key"]
    model = client.get(f"/api/v2/models/i/{key}").json()
    assert model["type"] == "lora" and model["base"] == "sdxl" and model["files_present"] is True
    assert Path(model["path"]).is_relative_to(mm.config.models_path)

    files = client.get(f"/api/v2/models/i/{key}/files").json()
    assert files["inplace"] is False and files["link_mode"] in ("hardlink", "copy")
    assert len(files["files"]) == 1
    f = files["files"][0]
    assert Path(f["location"]).is_file() and Path(f["blob"]).is_file()
    assert Path(f["blob"]).is_relative_to(mm.config.blobs_dir)

    # A wrong user override is undone by re-identifying.
    assert client.patch(f"/api/v2/models/i/{key}", json={"base": "sd-1"}).json()["base"] == "sd-1"
    r = client.post(f"/api/v2/models/i/{key}/reidentify")
    assert r.status_code == 200, r.text
    assert r.json()["base"] == "sdxl"
    assert client.post("/api/v2/models/i/nope/reidentify").status_code == 404

    r = client.delete(f"/api/v2/models/i/{key}")
    assert r.status_code == 200 and r.json()["files_removed"] is True
    assert not Path(model["path"]).exists()
    assert client.get(f"/api/v2/models/i/{key}").status_code == 404
    assert client.delete(f"/api/v2/models/i/{key}").status_code == 404


def test_scan_folder_and_identify(client: TestClient, mm: ModelManager, model_files: dict[str, Path]) -> None:
    import shutil

    folder = mm.config.home / "incoming"
    folder.mkdir()
    shutil.copy(model_files["lora"], folder / "a-lora.safetensors")
    shutil.copy(model_files["vae"], folder / "a-vae.safetensors")
    r = client.get("/api/v2/models/scan_folder", params={"scan_path": str(folder)})
    assert r.status_code == 200, r.text
    assert sorted(Path(e["path"]).name for e in r.json()) == ["a-lora.safetensors", "a-vae.safetensors"]
    assert not any(e["is_installed"] for e in r.json())

    r = client.post("/api/v2/models/identify", json={"path": str(folder / "a-lora.safetensors")})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "lora" and r.json()["base"] == "sdxl"
    r = client.post("/api/v2/models/identify", json={"path": str(folder / "missing.safetensors")})
    assert r.status_code == 404
    r = client.get("/api/v2/models/scan_folder", params={"scan_path": str(folder / "nope")})
    assert r.status_code == 404


def test_inplace_delete_keeps_file_unless_unconditionally(
    client: TestClient, mm: ModelManager, model_files: dict[str, Path]
) -> None:
    import shutil

    user = mm.config.home / "mine"
    user.mkdir()
    for name in ("keep.safetensors", "drop.safetensors"):
        shutil.copy(model_files["lora"], user / name)
        if name == "drop.safetensors":
            # Different bytes, so the second file is not a duplicate of the first.
            with open(user / name, "ab") as fh:
                fh.write(b"\0" * 8)
    keep = install(client, str(user / "keep.safetensors"), inplace="true")["config_out"]
    assert keep["inplace"] is True and keep["path"] == str(user / "keep.safetensors")
    r = client.delete(f"/api/v2/models/i/{keep['key']}")
    assert r.status_code == 200 and r.json()["files_removed"] is False
    assert (user / "keep.safetensors").is_file()

    drop = install(client, str(user / "drop.safetensors"), inplace="true")["config_out"]
    r = client.delete(f"/api/v2/models/i/{drop['key']}", params={"unconditionally": "true"})
    assert r.status_code == 200 and r.json()["files_removed"] is True
    assert not (user / "drop.safetensors").exists()


def test_stats_and_empty_model_cache(client: TestClient) -> None:
    r = client.get("/api/v2/models/stats")
    assert r.status_code == 200 and {"hits", "misses", "entries", "ram_budget"} <= set(r.json())
    r = client.post("/api/v2/models/empty_model_cache")
    assert r.status_code == 200 and r.json()["dropped"] == 0


def test_lone_surrogates_in_json_are_422_not_500(client: TestClient, records: list[str]) -> None:
    # Valid JSON, invalid Unicode: must be refused cleanly, and the echoed error must still render.
    for method, path, body in (
        ("PATCH", f"/api/v2/models/i/{records[0]}", b'{"name": "\\ud800x"}'),
        ("PATCH", f"/api/v2/models/i/{records[0]}", b'{"tags": ["\\udfff"]}'),
        ("POST", "/api/v2/models/identify", b'{"path": "\\ud800"}'),
        ("POST", "/api/v2/models/install?source=org/x", b'{"name": "\\ud800"}'),
    ):
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"] == "RequestValidationError"
