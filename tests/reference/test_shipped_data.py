"""The model references shipped in ``modeldepot/reference/data``: well-formed, in the real format.

Only the stdlib ``json`` module is used, so these checks hold whatever the reader class accepts:
they pin the data, not the code.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import PurePosixPath
from typing import Any

import pytest

#: One reference per Nataili service, named after the manager's ``models_db_name``.
SHIPPED = (
    "stable_diffusion",
    "diffusers",
    "clip",
    "blip",
    "esrgan",
    "gfpgan",
    "codeformer",
    "safety_checker",
    "controlnet",
)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
# Nataili's download extensions that stand in for ``file_url``.
_URL_ALTERNATIVES = ("file_content", "manual", "symlink")


def _data_dir() -> Any:
    # Through importlib.resources so the check is on what the installed package carries.
    return importlib.resources.files("modeldepot").joinpath("reference", "data")


def _load(db: str) -> Any:
    text = _data_dir().joinpath(f"{db}.json").read_text(encoding="utf-8")
    return json.loads(text)


def _entries(db: str) -> list[tuple[str, dict[str, Any]]]:
    data = _load(db)
    assert isinstance(data, dict), f"{db}.json is not an object keyed by model name"
    return list(data.items())


def _is_config(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def _relpath(download: dict[str, Any]) -> str:
    folder = download.get("file_path") or ""
    return str(PurePosixPath(folder) / download["file_name"]) if folder else download["file_name"]


def test_every_reference_is_shipped_and_nothing_else() -> None:
    names = {p.name for p in _data_dir().iterdir() if p.name.endswith(".json")}
    assert names == {f"{db}.json" for db in SHIPPED}


@pytest.mark.parametrize("db", SHIPPED)
def test_entries_have_the_nataili_shape(db: str) -> None:
    entries = _entries(db)
    assert entries, f"{db}.json is empty"
    for key, entry in entries:
        assert isinstance(entry, dict), key
        assert entry["name"] == key
        assert isinstance(entry["type"], str) and entry["type"], key
        assert entry["available"] is False, key
        config = entry["config"]
        assert isinstance(config["files"], list) and config["files"], key
        assert isinstance(config["download"], list) and config["download"], key


@pytest.mark.parametrize("db", SHIPPED)
def test_files_have_relative_paths_and_well_formed_hashes(db: str) -> None:
    for key, entry in _entries(db):
        for record in entry["config"]["files"]:
            path = record["path"]
            assert isinstance(path, str) and path, key
            assert not PurePosixPath(path).is_absolute() and ".." not in PurePosixPath(path).parts, path
            if "sha256sum" in record:
                # Either case: the AI Horde reference keeps Civitai's uppercase hex as published.
                assert _HEX64.fullmatch(record["sha256sum"]), (key, record)
            if "md5sum" in record:
                assert _HEX32.fullmatch(record["md5sum"]), (key, record)
            if _is_config(path):
                assert "sha256sum" not in record and "md5sum" not in record, (key, path)


@pytest.mark.parametrize("db", SHIPPED)
def test_download_entries_say_how_to_get_the_file(db: str) -> None:
    for key, entry in _entries(db):
        for download in entry["config"]["download"]:
            assert isinstance(download["file_name"], str) and download["file_name"], key
            assert "/" not in download["file_name"], (key, download)
            folder = download.get("file_path", "")
            assert isinstance(folder, str) and not folder.startswith("/") and ".." not in folder.split("/")
            if "file_url" in download:
                assert download["file_url"].startswith("https://"), (key, download)
            else:
                assert any(k in download for k in _URL_ALTERNATIVES), (key, download)


@pytest.mark.parametrize("db", SHIPPED)
def test_every_needed_file_has_a_download(db: str) -> None:
    for key, entry in _entries(db):
        targets = [_relpath(d) for d in entry["config"]["download"]]
        for record in entry["config"]["files"]:
            path = record["path"]
            if _is_config(path):
                continue  # shipped with the package, never downloaded
            folder = path.rstrip("/") + "/"
            # A file is downloaded to its own path; a folder entry (open_clip's HF cache) is filled.
            assert path in targets or any(t.startswith(folder) for t in targets), (key, path)


def test_stable_diffusion_keeps_the_legacy_fields() -> None:
    entries = dict(_entries("stable_diffusion"))
    for key, entry in entries.items():
        for field in ("baseline", "inpainting", "version", "nsfw", "download_all", "size_on_disk_bytes"):
            assert field in entry, (key, field)
        assert isinstance(entry["inpainting"], bool) and isinstance(entry["nsfw"], bool)
        assert isinstance(entry["size_on_disk_bytes"], int) and entry["size_on_disk_bytes"] > 0
    assert {"stable_diffusion", "stable_diffusion_2.1", "SDXL 1.0"} <= entries.keys()
    assert {e["baseline"] for e in entries.values()} == {
        "stable diffusion 1",
        "stable diffusion 2",
        "stable_diffusion_xl",
    }
    assert any(e["inpainting"] for e in entries.values())
    assert any(e.get("style") == "anime" for e in entries.values())
    # The real data is mixed-case; the shipped copy must not have been normalised.
    hashes = [f["sha256sum"] for e in entries.values() for f in e["config"]["files"] if "sha256sum" in f]
    assert any(h.isupper() for h in hashes) and any(h.islower() for h in hashes)
    # A yaml config entry stays in files[] with no matching download, as in Nataili.
    sd15 = entries["stable_diffusion"]["config"]
    assert [f["path"] for f in sd15["files"]] == ["model_1_5.ckpt", "v1-inference.yaml"]
    assert len(sd15["download"]) == 1


def test_clip_covers_each_loader_type() -> None:
    types = {entry["type"] for _, entry in _entries("clip")}
    assert {"clip", "open_clip", "coca"} <= types
    for key, entry in _entries("clip"):
        if entry["type"] == "open_clip":
            assert entry["pretrained_name"], key
            kinds = [
                next(k for k in ("file_url", "file_content", "symlink") if k in d) for d in entry["config"]["download"]
            ]
            assert kinds == ["file_content", "file_url", "symlink"], key


def test_diffusers_entries_list_every_pipeline_file() -> None:
    entries = dict(_entries("diffusers"))
    assert set(entries) == {"Stable Diffusion 2 Depth", "stable_diffusion_inpainting"}
    for key, entry in entries.items():
        assert entry["type"] == "diffusers" and entry["hf_path"], key
        files = entry["config"]["files"]
        downloads = entry["config"]["download"]
        assert [f["path"] for f in files] == [_relpath(d) for d in downloads], key
        subfolders = {PurePosixPath(f["path"]).parts[1] for f in files if len(PurePosixPath(f["path"]).parts) > 2}
        assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= subfolders, key
        assert any(PurePosixPath(f["path"]).name == "model_index.json" for f in files), key
        for download in downloads:
            assert download["file_url"].startswith(f"https://huggingface.co/{entry['hf_path']}/resolve/"), key
    assert "depth_estimator" in {
        PurePosixPath(f["path"]).parts[1] for f in entries["Stable Diffusion 2 Depth"]["config"]["files"]
    }
