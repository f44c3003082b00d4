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
    # verify names it and the affected model; with no good copy and the source gone, --repair
    # cannot heal it and exits 1 saying what is still damaged.
    os.chmod(lora_path, 0o644)
    with lora_path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    lora.rename(lora.with_suffix(".away"))
    bad = run("verify", "--repair")
    assert bad.code == 1 and "corrupt blob" in bad.out and "still damaged after repair" in bad.out
    # With the recorded source back, --repair reads the bytes again from it and heals the model.
    lora.with_suffix(".away").rename(lora)
    healed = run("verify", "--repair")
    assert healed.code == 0, healed.out + healed.err
    assert "re-read from" in healed.out
    assert lora_path.read_bytes() == original
    assert run("verify").code == 0
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


def test_scan_twice_reports_a_copy_as_known_not_registered(home: Path, tmp_path: Path, run) -> None:
    root = tmp_path / "models"
    original = factories.write_sdxl_lora(root / "loras" / "style.safetensors")
    (root / "backup").mkdir()
    (root / "backup" / "style.safetensors").write_bytes(original.read_bytes())
    (root / "notes").mkdir()
    (root / "notes" / "config.json").write_text("{}")  # looks like a model folder, holds no weights
    first = {Path(e["path"]).relative_to(root).as_posix(): e for e in run("scan", str(root), "--json").json()}
    assert [e["status"] for e in first.values()].count("registered") == 1
    assert first["notes"]["status"] == "skipped" and "not a model" in first["notes"]["detail"]
    second = run("scan", str(root))
    assert second.code == 0
    assert "registered  " not in second.out  # nothing claims a registration on the second run
    assert "0 registered, 2 already known" in " ".join(second.out.split())
    assert len(run("list", "--json").json()) == 1


def test_verify_accepts_a_model_name(home: Path, tmp_path: Path, run) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    assert run("install", str(lora)).code == 0
    r = run("verify", "style")
    assert r.code == 0, r.err
    assert "all good" in r.out
    missing = run("verify", "nope")
    assert missing.code == 1 and "nope" in missing.err


def test_verify_repair_exits_1_while_anything_is_still_corrupt(home: Path, tmp_path: Path, run, monkeypatch) -> None:
    monkeypatch.setenv("MODELDEPOT_LINK_MODES", "hardlink,copy")
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    vae = factories.write_vae(tmp_path / "vae.safetensors")
    jobs = run("install", str(lora), str(vae), "--json").json()
    lora_path, vae_path = (Path(j["config_out"]["path"]) for j in jobs)
    # One problem --repair can fix (a replaced file whose blob is good) ...
    lora_path.unlink()
    lora_path.write_bytes(b"not the model")
    # ... and one it cannot: a corrupt blob with no good copy and no source left.
    os.chmod(vae_path, 0o644)
    with vae_path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    vae.unlink()
    r = run("verify", "--repair")
    assert r.code == 1
    assert "repaired" in r.out and "still damaged after repair" in r.out
    assert run("verify").code == 1


def test_reinstall_heals_a_corrupt_blob(home: Path, tmp_path: Path, run, monkeypatch) -> None:
    monkeypatch.setenv("MODELDEPOT_LINK_MODES", "hardlink,copy")
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    path = Path(run("install", str(lora), "--json").json()[0]["config_out"]["path"])
    os.chmod(path, 0o644)
    with path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    assert run("verify").code == 1
    again = run("install", str(lora))
    assert again.code == 0
    text = " ".join(again.out.split())
    assert text.startswith("already installed as style") and "repaired" in text
    assert run("verify").code == 0
    assert path.read_bytes() == lora.read_bytes()


def test_du_export_and_views_with_split_single_files(home: Path, tmp_path: Path, run, monkeypatch) -> None:
    """du says what split_single_files would save; with it on, export rebuilds the file and the
    A1111 view skips the split model, saying why."""
    base = factories.write_sd1_checkpoint(tmp_path / "base.safetensors", seed=1)
    same_vae = tmp_path / "copy.safetensors"
    # A second checkpoint: same tensors, other metadata (another file, the very same parts).
    raw = base.read_bytes()
    same_vae.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one unet byte differs (the last tensor)
    assert run("install", str(base), str(same_vae)).code == 0
    du = run("du")
    assert du.code == 0 and "split_single_files would save" in du.out, du.out
    monkeypatch.setenv("MODELDEPOT_SPLIT_SINGLE_FILES", "true")
    split = factories.write_sd1_checkpoint(tmp_path / "split-me.safetensors", seed=9)
    assert run("install", str(split)).code == 0
    out = run("export", "split-me", str(tmp_path / "out"))
    assert out.code == 0, out.err
    assert (tmp_path / "out" / "split-me.safetensors").read_bytes() == split.read_bytes()
    assert run("export", "split-me", str(tmp_path / "out")).code == 1  # never overwrites
    view = run("view", "a1111", str(tmp_path / "a1111"))
    assert view.code == 0 and "split_single_files" in view.out, view.out
