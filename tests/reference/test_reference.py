"""ModelReference: the schema, errors that name key and field, and where a reference comes from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.errors import InvalidReferenceError, UnknownModelException
from modeldepot.manager import ModelManager
from modeldepot.reference import SERVICE_DB, ModelReference, ReferenceEntry
from modeldepot.testing.fakehub import FakeHub

GOOD: dict[str, Any] = {
    "Deliberate": {
        "name": "Deliberate",
        "baseline": "stable diffusion 1",
        "type": "ckpt",
        "inpainting": False,
        "description": "a model",
        "version": 2,
        "style": "realistic",
        "nsfw": True,
        "download_all": False,
        "tags": ["anime"],
        "trigger": ["x"],
        "homepage": "https://civitai.com/models/4823",
        "size_on_disk_bytes": 2132856622,
        "requirements": {"clip_skip": 2},
        "showcases": [],
        "min_bridge_version": 12,
        "config": {
            "files": [
                {"path": "Deliberate.ckpt", "md5sum": "A" * 32, "sha256sum": "AbC" + "d" * 61},
                {"path": "v1-inference.yaml"},
            ],
            "download": [{"file_name": "Deliberate.ckpt", "file_path": "", "file_url": "https://x.org/d.ckpt"}],
            "embedded_component_hashes": {"vae": "y"},
        },
        "available": True,
    }
}


def _with(change: dict[str, Any]) -> dict[str, Any]:
    entry = json.loads(json.dumps(GOOD["Deliberate"]))
    for dotted, value in change.items():
        node: Any = entry
        *path, last = dotted.split(".")
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return {"Deliberate": entry}


_DELETE = object()


def test_legacy_fields_are_read_and_unknown_ones_kept() -> None:
    ref = ModelReference.from_json(json.dumps(GOOD), origin="test")
    e = ref["Deliberate"]
    assert isinstance(e, ReferenceEntry)
    assert (e.baseline, e.nsfw, e.version, e.size_on_disk_bytes) == ("stable diffusion 1", True, "2", 2132856622)
    assert e.requirements == {"clip_skip": 2} and e.trigger == ["x"] and e.tags == ["anime"]
    assert [f.path for f in e.files] == ["Deliberate.ckpt"]  # the shipped .yaml config is not a file to fetch
    assert e.files[0].expected == ("sha256", "abc" + "d" * 61)  # any case in, compared lowercase
    dumped = ref.to_json()["Deliberate"]
    assert dumped["min_bridge_version"] == 12 and dumped["config"]["embedded_component_hashes"] == {"vae": "y"}
    assert dumped["available"] is False  # computed, never carried over


def test_md5_is_used_when_there_is_no_sha256() -> None:
    ref = ModelReference.from_json(_with({"config.files.0.sha256sum": _DELETE}), origin="t")
    assert ref["Deliberate"].files[0].expected == ("md5", "a" * 32)
    fixme = ModelReference.from_json(
        _with({"config.files.0.sha256sum": "FIXME", "config.files.0.md5sum": _DELETE}), origin="t"
    )
    assert fixme["Deliberate"].files[0].expected is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": _DELETE}, "type"),
        ({"config.files.0.sha256sum": "abc"}, "config.files.0.sha256sum"),
        ({"config.files.0.md5sum": "z" * 32}, "config.files.0.md5sum"),
        ({"config.files.0.path": "/etc/passwd"}, "config.files.0.path"),
        ({"config.files.0.path": "../../x.ckpt"}, "config.files.0.path"),
        ({"config.download.0.file_name": "../x"}, "config.download.0.file_name"),
        ({"config.download.0.file_path": "C:\\models"}, "config.download.0.file_path"),
        ({"config.download.0.file_url": "file:///etc/passwd"}, "config.download.0.file_url"),
        ({"config.download.0.file_url": _DELETE}, "config.download.0"),
        ({"size_on_disk_bytes": -1}, "size_on_disk_bytes"),
        ({"nsfw": "maybe"}, "nsfw"),
    ],
)
def test_a_bad_entry_names_key_and_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        ModelReference.from_json(json.dumps(_with(change)), origin="bad.json")
    assert info.value.key == "Deliberate" and info.value.field == field
    assert "'Deliberate'" in str(info.value) and repr(field) in str(info.value) and "bad.json" in str(info.value)


@pytest.mark.parametrize("text", ["[]", "not json", '{"a": 1}', '{"a": {"name": "a", "type": "x"}}', "[" * 100_000])
def test_not_a_reference(text: str, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(InvalidReferenceError, match=r"r\.json"):
        ModelReference.load(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidReferenceError, match="cannot read"):
        ModelReference.load(tmp_path / "nope.json")


def test_shipped_references_per_service_and_merged() -> None:
    merged = ModelReference.load()
    total = 0
    for service in SERVICE_DB:
        ref = ModelReference.load(service=service)
        assert ref.service == service and len(ref) > 0
        total += len(ref)
        for key in ref:
            assert service in merged.services_of(key)
    assert len(merged) <= total and "RealESRGAN_x4plus" in merged
    assert merged.service_of("RealESRGAN_x4plus") == "esrgan"
    assert merged.services_of("stable_diffusion_inpainting") == ["compvis", "diffusers"]
    with pytest.raises(UnknownModelException, match="no model 'nope'"):
        merged["nope"]
    with pytest.raises(UnknownModelException, match="no shipped reference for service 'nope'"):
        ModelReference.load(service="nope")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def depot(tmp_path: Path) -> Iterator[ModelManager]:
    with ModelManager.open(home=tmp_path / "depot", allow_private_urls=True) as m:
        yield m


def test_url_is_fetched_through_the_download_layer(hub: FakeHub, depot: ModelManager, tmp_path: Path) -> None:
    url = hub.add_file("ref/esrgan.json", json.dumps(GOOD).encode())
    ref = ModelReference.load(url, service="esrgan", downloads=depot.downloads, cache_dir=tmp_path / "refs")
    assert list(ref) == ["Deliberate"] and ref.origin == url and ref.warnings == []
    assert len(hub.stats.requests_for("/ref/esrgan.json", "GET")) == 1


def test_offline_falls_back_to_last_good_then_shipped(hub: FakeHub, depot: ModelManager, tmp_path: Path) -> None:
    url = hub.add_file("ref/esrgan.json", json.dumps(GOOD).encode())
    cache = tmp_path / "refs"
    ModelReference.load(url, service="esrgan", downloads=depot.downloads, cache_dir=cache)
    # A bad answer never replaces the good copy.
    hub.add_file("ref/esrgan.json", b"<html>rate limited</html>")
    ref = ModelReference.load(url, service="esrgan", downloads=depot.downloads, cache_dir=cache)
    assert list(ref) == ["Deliberate"] and "last good copy" in ref.warnings[0] and "not valid JSON" in ref.warnings[0]
    # Server gone, no cached copy for this URL: the shipped copy, with a warning.
    gone = hub.url_for("ref/missing.json")
    ref = ModelReference.load(gone, service="esrgan", downloads=depot.downloads, cache_dir=cache)
    assert "RealESRGAN_x4plus" in ref and "shipped" in ref.warnings[0]
    # Without a service there is nothing to fall back to.
    with pytest.raises(Exception, match=r"404|not found|Not Found"):
        ModelReference.load(gone, downloads=depot.downloads)
