"""/api/v2/storage: du (what dedup saved), verify, gc (dry run by default)."""

from __future__ import annotations

import os
from pathlib import Path

from _api_helpers import install
from fastapi.testclient import TestClient

from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub


def test_du_reports_dedup_savings(client: TestClient, hub: FakeHub, model_files: dict[str, Path]) -> None:
    # A second pipeline repo sharing every file but the unet's weights with the first one.
    pipe = model_files["pipeline"]
    files: dict[str, bytes | Path] = {p.relative_to(pipe).as_posix(): p for p in pipe.rglob("*") if p.is_file()}
    unet = next(k for k in files if k.startswith("unet/") and k.endswith(".safetensors"))
    data = bytearray(Path(files[unet]).read_bytes())
    data[-1] ^= 0xFF  # different unet bytes, same header
    files[unet] = bytes(data)
    hub.add_hf_repo("org/tiny-sd-finetune", files)
    a = install(client, "org/tiny-sd")["config_out"]
    b = install(client, "org/tiny-sd-finetune")["config_out"]
    assert a["key"] != b["key"]
    # The same bytes under another name are recognised, not stored twice.
    lora = model_files["lora"]
    hub.add_hf_repo("org/lora-copy", {"copy.safetensors": lora, "README.md": b"# the same weights"})
    c = install(client, "org/tiny-lora::tiny-lora.safetensors")["config_out"]
    assert install(client, "org/lora-copy")["config_out"]["key"] == c["key"]
    du = client.get("/api/v2/storage/du").json()
    shared = sum(Path(p).stat().st_size for k, p in files.items() if k != unet and isinstance(p, Path))
    assert du["saved_bytes"] >= shared > 0
    assert du["logical_bytes"] - du["physical_bytes"] == du["saved_bytes"]
    assert du["per_model"][a["key"]]["name"] == a["name"]


def test_verify_and_gc(client: TestClient, mm: ModelManager) -> None:
    key = install(client, "org/tiny-lora::tiny-lora.safetensors")["config_out"]["key"]
    r = client.post("/api/v2/storage/verify")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["blobs_checked"] >= 1
    assert client.post("/api/v2/storage/verify", params={"key": key}).json()["ok"] is True
    assert client.post("/api/v2/storage/verify", params={"key": "nope"}).status_code == 404

    blob = Path(client.get(f"/api/v2/models/i/{key}/files").json()["files"][0]["blob"])
    client.delete(f"/api/v2/models/i/{key}")
    old = blob.stat().st_mtime - 7200
    os.utime(blob, (old, old))  # past gc's grace period
    r = client.post("/api/v2/storage/gc")
    assert r.status_code == 200
    assert r.json()["dry_run"] is True
    assert any(blob.name in d or d in blob.name for d in r.json()["removed"]), r.json()
    assert blob.exists(), "a dry run removed a blob"
    r = client.post("/api/v2/storage/gc", params={"dry_run": "false"})
    assert r.json()["dry_run"] is False and r.json()["bytes_freed"] > 0
    assert not blob.exists()
