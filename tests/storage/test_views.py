"""A1111 / ComfyUI views: symlinks only, refresh removes only our stale links, user files safe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _storage_helpers import write

import modeldepot.storage as storage
from modeldepot.configs import parse_config
from modeldepot.storage import build_view, scan_tree, view_folder_for


def _cfg(path: Path, type: str, format: str, base: str = "sd-1", **extra: Any) -> Any:
    return parse_config({"name": path.stem, "path": str(path), "type": type, "format": format, "base": base, **extra})


@pytest.fixture
def models(tmp_path: Path) -> list[Any]:
    m = tmp_path / "models"
    ckpt = write(m / "a" / "dream.safetensors", b"ckpt")
    lora = write(m / "b" / "style.safetensors", b"lora")
    vae = write(m / "c" / "vae.safetensors", b"vae")
    diff = m / "d" / "pipe"
    write(diff / "model_index.json", b"{}")
    return [
        _cfg(ckpt, "main", "checkpoint"),
        _cfg(lora, "lora", "lycoris"),
        _cfg(vae, "vae", "checkpoint"),
        _cfg(diff, "main", "diffusers"),
    ]


def test_comfyui_view(models: list[Any], tmp_path: Path) -> None:
    dest = tmp_path / "comfy"
    report = build_view("comfyui", dest, models)
    assert len(report.created) == 4 and report.skipped == []
    links = {p.relative_to(dest).as_posix(): p for p in report.created}
    assert set(links) == {
        "models/checkpoints/dream.safetensors",
        "models/loras/style.safetensors",
        "models/vae/vae.safetensors",
        "models/diffusers/pipe",
    }
    assert all(p.is_symlink() for p in links.values())  # never copies
    assert (dest / "models/checkpoints/dream.safetensors").read_bytes() == b"ckpt"


def test_a1111_view_skips_diffusers(models: list[Any], tmp_path: Path) -> None:
    report = build_view("a1111", tmp_path / "sd", models)
    rels = {p.relative_to(tmp_path / "sd").as_posix() for p in report.created}
    assert rels == {
        "models/Stable-diffusion/dream.safetensors",
        "models/Lora/style.safetensors",
        "models/VAE/vae.safetensors",
    }
    assert len(report.skipped) == 1 and "diffusers" in report.skipped[0][1]


def test_refresh_removes_only_stale_links_of_ours(models: list[Any], tmp_path: Path) -> None:
    dest = tmp_path / "comfy"
    build_view("comfyui", dest, models)
    user_file = write(dest / "models" / "loras" / "mine.safetensors", b"user")
    user_link = dest / "models" / "loras" / "other.safetensors"
    user_link.symlink_to(user_file)
    report = build_view("comfyui", dest, models[:2])
    assert {p.name for p in report.removed} == {"vae.safetensors", "pipe"}
    assert len(report.kept) == 2 and report.created == []
    assert user_file.read_bytes() == b"user" and user_link.is_symlink()


def test_refuses_to_overwrite_user_file(models: list[Any], tmp_path: Path) -> None:
    dest = tmp_path / "comfy"
    mine = write(dest / "models" / "checkpoints" / "dream.safetensors", b"my own")
    report = build_view("comfyui", dest, models[:1])
    assert report.created == [] and "real file" in report.skipped[0][1]
    assert mine.read_bytes() == b"my own" and not mine.is_symlink()


def test_name_collisions_get_key_suffix(tmp_path: Path) -> None:
    a = write(tmp_path / "x" / "same.safetensors", b"1")
    b = write(tmp_path / "y" / "same.safetensors", b"2")
    report = build_view("comfyui", tmp_path / "v", [_cfg(a, "lora", "lycoris"), _cfg(b, "lora", "lycoris")])
    assert len(report.created) == 2
    assert {os.readlink(p) for p in report.created} == {str(a), str(b)}


def test_folder_mapping() -> None:
    assert view_folder_for("comfyui", "spandrel_image_to_image", "checkpoint") == "models/upscale_models"
    assert view_folder_for("a1111", "spandrel_image_to_image", "checkpoint") == "models/ESRGAN"
    assert view_folder_for("comfyui", "t5_encoder", "t5_encoder") == "models/text_encoders"
    assert view_folder_for("comfyui", "ip_adapter", "checkpoint") == "models/ipadapter"
    assert view_folder_for("a1111", "embedding", "embedding_file") == "embeddings"
    assert view_folder_for("comfyui", "embedding", "embedding_file") == "models/embeddings"
    assert view_folder_for("a1111", "controlnet", "checkpoint") == "models/ControlNet"
    assert view_folder_for("comfyui", "clip_vision", "diffusers") == "models/clip_vision"


def test_scan_tree(tmp_path: Path) -> None:
    root = tmp_path / "ComfyUI"
    write(root / "models" / "checkpoints" / "sub" / "a.safetensors", b"a")
    write(root / "models" / "loras" / "b.pt", b"b")
    write(root / "models" / "loras" / "notes.txt", b"n")
    write(root / "models" / "diffusers" / "pipe" / "model_index.json", b"{}")
    write(root / "models" / "diffusers" / "pipe" / "unet" / "config.json", b"{}")
    found = {(e.path.relative_to(root).as_posix(), e.type_hint) for e in scan_tree(root / "models")}
    assert found == {
        ("models/checkpoints/sub/a.safetensors", "main"),
        ("models/loras/b.pt", "lora"),
        ("models/diffusers/pipe", "main"),
    }


def test_public_api() -> None:
    for name in storage.__all__:
        assert hasattr(storage, name), name
    assert {"ContentStore", "NormalizedStore", "build_view"} <= set(storage.__all__)
