"""Civitai routes: metadata shapes, hashes, by-hash lookup, download redirect and tokens."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import blake3
import httpx
import pytest

from modeldepot.errors import ConfigurationError
from modeldepot.testing.fakehub import FakeHub

HEADER = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
SAFETENSORS = struct.pack("<Q", len(HEADER)) + HEADER + os.urandom(16)
BIG = os.urandom(2 * 1024 * 1024 + 10)
PRUNED = os.urandom(5000)
TOKEN = "civitai-secret"


def _model() -> dict[str, Any]:
    return {
        "id": 4201,
        "name": "Tiny LoRA",
        "type": "LORA",
        "nsfw": False,
        "tags": ["style"],
        "creator": {"username": "maker"},
        "modelVersions": [
            {
                "id": 130072,
                "name": "v1.0",
                "baseModel": "SD 1.5",
                "trainedWords": ["tinystyle"],
                "images": [{"url": "https://example.invalid/1.png"}],
                "files": [
                    {
                        "name": "tiny_lora.safetensors",
                        "type": "Model",
                        "primary": True,
                        "data": SAFETENSORS,
                        "metadata": {"format": "SafeTensor", "size": "full", "fp": "fp16"},
                    },
                    {
                        "name": "tiny_pruned.ckpt",
                        "type": "Pruned Model",
                        "data": PRUNED,
                        "metadata": {"format": "PickleTensor", "size": "pruned", "fp": "fp16"},
                    },
                ],
            },
            {
                "id": 130073,
                "name": "v2.0 (members)",
                "baseModel": "SDXL 1.0",
                "gated_token": TOKEN,
                "files": [{"name": "big.safetensors", "type": "Model", "primary": True, "data": BIG}],
            },
        ],
    }


# One keep-alive client for the module: a fresh httpx.get() per call costs an SSL context each time.
HTTP = httpx.Client(timeout=60)


def teardown_module() -> None:
    HTTP.close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_civitai_model(_model())
        yield h


def test_model(hub: FakeHub) -> None:
    m = HTTP.get(f"{hub.url}/api/v1/models/4201").json()
    assert (m["id"], m["name"], m["type"], m["nsfw"], m["tags"]) == (4201, "Tiny LoRA", "LORA", False, ["style"])
    assert m["creator"]["username"] == "maker"
    assert [v["id"] for v in m["modelVersions"]] == [130072, 130073]
    assert "gated_token" not in json.dumps(m) and TOKEN not in json.dumps(m)
    assert HTTP.get(f"{hub.url}/api/v1/models/999").status_code == 404
    assert HTTP.get(f"{hub.url}/api/v1/models/abc").status_code == 404
    listing = HTTP.get(f"{hub.url}/api/v1/models", params={"ids": "4201"}).json()
    assert [i["id"] for i in listing["items"]] == [4201]


def test_model_version_shape_and_hashes(hub: FakeHub) -> None:
    v = HTTP.get(f"{hub.url}/api/v1/model-versions/130072").json()
    assert v["id"] == 130072 and v["modelId"] == 4201
    assert v["model"] == {"name": "Tiny LoRA", "type": "LORA", "nsfw": False, "poi": False}
    assert v["baseModel"] == "SD 1.5" and v["trainedWords"] == ["tinystyle"]
    assert v["images"][0]["url"] == "https://example.invalid/1.png"
    assert v["downloadUrl"] == f"{hub.url}/api/download/models/130072"
    primary, pruned = v["files"]
    assert primary["primary"] is True and pruned["primary"] is False
    assert primary["sizeKB"] == pytest.approx(len(SAFETENSORS) / 1024)
    assert primary["metadata"] == {"format": "SafeTensor", "size": "full", "fp": "fp16"}
    sha = hashlib.sha256(SAFETENSORS).hexdigest().upper()
    assert primary["hashes"] == {
        "SHA256": sha,
        "AutoV2": sha[:10],
        "AutoV3": hashlib.sha256(SAFETENSORS[8 + len(HEADER) :]).hexdigest().upper(),
        "BLAKE3": blake3.blake3(SAFETENSORS).hexdigest().upper(),
        "CRC32": f"{zlib.crc32(SAFETENSORS):08X}",
    }
    assert "AutoV3" not in pruned["hashes"]  # not a safetensors file
    assert urlsplit(pruned["downloadUrl"]).query == "type=Pruned+Model&format=PickleTensor&size=pruned&fp=fp16"
    assert HTTP.get(f"{hub.url}/api/v1/model-versions/1").status_code == 404


def test_autov1_only_for_files_of_2_mib(hub: FakeHub) -> None:
    v = HTTP.get(f"{hub.url}/api/v1/model-versions/130073").json()
    hashes = v["files"][0]["hashes"]
    assert hashes["AutoV1"] == hashlib.sha256(BIG[0x100000:0x110000]).hexdigest()[:8].upper()
    assert "AutoV3" not in hashes  # the random bytes are not a valid safetensors header


def test_by_hash_any_hash_any_case(hub: FakeHub) -> None:
    v = HTTP.get(f"{hub.url}/api/v1/model-versions/130072").json()
    for value in v["files"][0]["hashes"].values():
        for h in (value, value.lower()):
            r = HTTP.get(f"{hub.url}/api/v1/model-versions/by-hash/{h}")
            assert r.status_code == 200 and r.json()["id"] == 130072
    pruned_sha = hashlib.sha256(PRUNED).hexdigest()
    assert HTTP.get(f"{hub.url}/api/v1/model-versions/by-hash/{pruned_sha}").json()["id"] == 130072
    r = HTTP.get(f"{hub.url}/api/v1/model-versions/by-hash/{'0' * 64}")
    assert r.status_code == 404 and "error" in r.json()


def test_download_redirects_to_signed_url_with_disposition(hub: FakeHub) -> None:
    r = HTTP.get(f"{hub.url}/api/download/models/130072")
    assert r.status_code == 307
    location = r.headers["location"]
    parts = urlsplit(location)
    assert parts.path.startswith("/civitai-cdn/") and parts.path.endswith("/tiny_lora.safetensors")
    assert "X-Amz-Signature=" in parts.query
    f = HTTP.get(location)
    assert f.status_code == 200 and f.content == SAFETENSORS
    assert f.headers["content-disposition"] == 'attachment; filename="tiny_lora.safetensors"'
    ranged = HTTP.get(location, headers={"Range": "bytes=0-7"})
    assert (ranged.status_code, ranged.content) == (206, SAFETENSORS[:8])
    assert HTTP.get(location.replace("X-Amz-Signature=", "X-Amz-Signature=f")).status_code == 403


def test_download_file_selection(hub: FakeHub) -> None:
    base = f"{hub.url}/api/download/models/130072"
    r = HTTP.get(base, params={"type": "Pruned Model", "format": "PickleTensor"}, follow_redirects=True)
    assert r.content == PRUNED
    assert 'filename="tiny_pruned.ckpt"' in r.headers["content-disposition"]
    r = HTTP.get(base, params={"format": "SafeTensor"}, follow_redirects=True)
    assert r.content == SAFETENSORS
    assert HTTP.get(base, params={"format": "GGUF"}).status_code == 404
    assert HTTP.get(f"{hub.url}/api/download/models/5").status_code == 404


def test_gated_version_needs_token(hub: FakeHub) -> None:
    url = f"{hub.url}/api/download/models/130073"
    r = HTTP.get(url)
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    assert HTTP.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = HTTP.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 307
    r = HTTP.get(url, params={"token": TOKEN}, follow_redirects=True)
    assert r.content == BIG
    assert TOKEN not in json.dumps([tuple(x) for x in hub.stats.requests])
    # metadata of a gated version stays public
    assert HTTP.get(f"{hub.url}/api/v1/model-versions/130073").status_code == 200


def test_invalid_models() -> None:
    with FakeHub() as hub:
        with pytest.raises(ConfigurationError):
            hub.add_civitai_model({"name": "no id"})
        with pytest.raises(ConfigurationError):
            hub.add_civitai_model({"id": 1, "modelVersions": [{"id": 2, "files": [{"name": "x"}]}]})
