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


def test_du_counts_models_registered_in_place(
    mm: ModelManager, client: TestClient, model_files: dict[str, Path], tmp_path: Path
) -> None:
    """In-place models add their files to the logical and the physical totals (the page's header)."""
    outside = tmp_path / "a1111"
    outside.mkdir()
    data = bytearray(model_files["lora"].read_bytes())
    data[-1] ^= 0xFF  # other weights than the LoRA installed into the store below
    lora = outside / "mine.safetensors"
    lora.write_bytes(bytes(data))
    store_only = client.get("/api/v2/storage/du").json()
    assert store_only["logical_bytes"] == store_only["physical_bytes"] == 0

    stored = install(client, "org/tiny-lora::tiny-lora.safetensors")["config_out"]
    inplace_key = mm.install.register_path(outside / "mine.safetensors")
    vae_key = mm.install.register_path(model_files["vae"])  # another in-place model, elsewhere
    in_place = lora.stat().st_size + model_files["vae"].stat().st_size

    du = client.get("/api/v2/storage/du").json()
    assert du["store_logical_bytes"] == stored["file_size"] == du["store_physical_bytes"]
    assert du["logical_bytes"] == stored["file_size"] + in_place
    assert du["physical_bytes"] == du["store_physical_bytes"] + in_place
    assert du["logical_bytes"] - du["physical_bytes"] == du["saved_bytes"] == 0
    assert du["inplace_bytes"] == in_place and du["inplace_models"] == 2 and du["models"] == 3
    assert du["per_model"][inplace_key] == {
        "logical": lora.stat().st_size,
        "unique_bytes": lora.stat().st_size,
        "name": "mine",
        "inplace": True,
    }
    assert du["per_model"][vae_key]["inplace"] is True
    assert du["per_model"][stored["key"]]["inplace"] is False


def test_du_counts_records_without_a_manifest(mm: ModelManager, client: TestClient, tmp_path: Path) -> None:
    """A record added straight to the store (no manifest) is counted from its files, not left out."""
    weights = tmp_path / "elsewhere.safetensors"
    weights.write_bytes(b"\0" * 1234)
    config = mm.store.add_model(
        {"name": "hand-made", "type": "lora", "format": "lycoris", "base": "sd-1", "path": str(weights)}
    )
    gone = mm.store.add_model(
        {"name": "gone", "type": "lora", "format": "lycoris", "base": "sd-1", "path": str(tmp_path / "nope")}
    )
    du = client.get("/api/v2/storage/du").json()
    assert du["per_model"][config.key]["logical"] == 1234
    assert du["per_model"][gone.key]["logical"] == 0
    assert du["logical_bytes"] == du["physical_bytes"] == 1234


def test_verify_repair_refetches_a_corrupt_blob_from_the_source(client: TestClient, mm: ModelManager) -> None:
    key = install(client, "org/tiny-lora::tiny-lora.safetensors")["config_out"]["key"]
    for entry in mm.storage.manifest(key).entries:  # the only copy of these bytes goes bad
        blob = mm.storage.blobs.path_for(entry.digest)
        blob.chmod(0o644)
        with blob.open("r+b") as f:
            f.seek(-1, os.SEEK_END)
            f.write(b"\xff")
    damaged = client.post("/api/v2/storage/verify").json()
    assert damaged["ok"] is False and damaged["healthy"] is False
    repaired = client.post("/api/v2/storage/verify", params={"repair": "true"}).json()
    assert repaired["healthy"] is True and repaired["remaining"] == [], repaired
    assert client.post("/api/v2/storage/verify").json()["ok"] is True
