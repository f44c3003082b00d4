"""du, verify, gc, view and scan from the command line."""

from __future__ import annotations

import os
from pathlib import Path

from modeldepot.testing import factories


def test_install_du_verify_gc_view(home: Path, tmp_path: Path, run, monkeypatch) -> None:
    monkeypatch.setenv("MODELDEPOT_LINK_MODES", "hardlink,copy")  # the in-place edit below relies on it
    pipes = factories.write_sd_pipeline_family(tmp_path / "src", n=2)
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    r = run("install", str(pipes[0]), str(pipes[1]), str(lora), "--json")
    assert r.code == 0, r.err
    jobs = r.json()
    assert [j["status"] for j in jobs] == ["completed"] * 3
    du = run("du", "--json").json()
    assert du["saved_bytes"] > 0 and du["physical_bytes"] < du["logical_bytes"]
    assert run("verify").code == 0
    # A user replaces a materialised file: verify finds it, --repair re-links it from the blob.
    lora_path = Path(jobs[2]["config_out"]["path"])
    original = lora_path.read_bytes()
    lora_path.unlink()
    lora_path.write_bytes(b"not the model")
    bad = run("verify")
    assert bad.code == 1 and "problems" in bad.out and "damaged file" in bad.out
    assert run("verify", "--repair").code == 0
    assert lora_path.read_bytes() == original
    assert run("verify").code == 0
    # Editing a hardlinked file in place (after forcing it writable) corrupts the shared blob:
    # verify names it and the affected model, and says no good copy exists (exit 1).
    os.chmod(lora_path, 0o644)
    with lora_path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    bad = run("verify", "--repair")
    assert bad.code == 1 and "corrupt blob" in bad.out
    assert run("gc", "--dry-run", "--json").json()["removed"] == []
    view = tmp_path / "comfy"
    assert run("view", "comfyui", str(view)).code == 0
    links = [p for p in view.rglob("*") if p.is_symlink()]
    assert len(links) == 3 and all(p.resolve().exists() for p in links)
    assert (view / "models" / "loras").is_dir()


def test_scan_registers_in_place(home: Path, tmp_path: Path, run) -> None:
    root = tmp_path / "ComfyUI" / "models"
    a = factories.write_sd1_checkpoint(root / "checkpoints" / "a.safetensors")
    factories.write_vae(root / "vae" / "v.safetensors")
    r = run("scan", str(root), "--json")
    assert r.code == 0, r.err
    assert sorted(e["status"] for e in r.json()) == ["registered", "registered"]
    listed = run("list", "--json").json()
    assert {m["path"] for m in listed} >= {str(a.resolve())}
    assert all(m["inplace"] for m in listed)
