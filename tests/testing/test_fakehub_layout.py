"""Serving a folder layout (``FakeHub(root)`` and ``serve(root)``, which backs ``modeldepot fakehub``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modeldepot.errors import ConfigurationError, UnsafePathError
from modeldepot.testing.fakehub import FakeHub

WEIGHTS = os.urandom(30_000)


# One keep-alive client for the module: a fresh httpx.get() per call costs an SSL context each time.
HTTP = httpx.Client(timeout=60)


def teardown_module() -> None:
    HTTP.close()


def _layout(root: Path) -> None:
    main = root / "hf" / "org" / "tiny" / "main"
    (main / "unet").mkdir(parents=True)
    (main / "unet" / "w.safetensors").write_bytes(WEIGHTS)
    (main / "model_index.json").write_text("{}")
    fp16 = root / "hf" / "org" / "tiny" / "fp16"
    fp16.mkdir()
    (fp16 / "model_index.json").write_text('{"fp16": true}')
    repo_meta = {"tags": ["diffusers"], "gated_token": "tok", "card_data": {"license": "mit"}}
    (root / "hf" / "org" / "tiny" / "repo.json").write_text(json.dumps(repo_meta))
    (root / "civitai" / "files").mkdir(parents=True)
    (root / "civitai" / "files" / "lora.safetensors").write_bytes(WEIGHTS[:5000])
    model = {
        "id": 7,
        "name": "L",
        "type": "LORA",
        "modelVersions": [{"id": 70, "files": [{"name": "lora.safetensors", "data": "lora.safetensors"}]}],
    }
    (root / "civitai" / "7.json").write_text(json.dumps(model))
    (root / "files" / "sub").mkdir(parents=True)
    (root / "files" / "sub" / "plain.bin").write_bytes(b"plain")


def test_root_layout(tmp_path: Path) -> None:
    _layout(tmp_path)
    with FakeHub(tmp_path) as hub:
        info = HTTP.get(f"{hub.url}/api/models/org/tiny").json()
        assert info["tags"] == ["diffusers"] and info["cardData"] == {"license": "mit"}
        assert info["gated"] == "manual"
        auth = {"Authorization": "Bearer tok"}
        r = HTTP.get(f"{hub.url}/org/tiny/resolve/main/unet/w.safetensors", headers=auth, follow_redirects=True)
        assert r.content == WEIGHTS
        r = HTTP.get(f"{hub.url}/org/tiny/resolve/fp16/model_index.json", headers=auth)
        assert r.json() == {"fp16": True}
        r = HTTP.get(f"{hub.url}/api/download/models/70", follow_redirects=True)
        assert r.content == WEIGHTS[:5000]
        assert HTTP.get(f"{hub.url}/files/sub/plain.bin").content == b"plain"


def test_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        FakeHub(tmp_path / "missing")
    (tmp_path / "hf" / "org" / "empty").mkdir(parents=True)
    with pytest.raises(ConfigurationError, match="no revision folder"):
        FakeHub(tmp_path)
    (tmp_path / "hf" / "org" / "empty" / "main").mkdir()
    (tmp_path / "hf" / "org" / "empty" / "main" / "a.txt").write_text("x")
    (tmp_path / "civitai").mkdir()
    bad = {"id": 1, "modelVersions": [{"id": 2, "files": [{"name": "x", "data": "../../etc/passwd"}]}]}
    (tmp_path / "civitai" / "1.json").write_text(json.dumps(bad))
    with pytest.raises(UnsafePathError):
        FakeHub(tmp_path)
    (tmp_path / "civitai" / "1.json").write_text("not json")
    with pytest.raises(ConfigurationError):
        FakeHub(tmp_path)


def test_serve_blocks_and_serves(tmp_path: Path) -> None:
    _layout(tmp_path)
    code = "import sys; from modeldepot.testing.fakehub import serve; serve(sys.argv[1], port=0)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "fakehub serving" in line, proc.stderr.read() if proc.stderr else ""
        url = line.split(" at ")[1].split()[0]
        assert HTTP.get(f"{url}/files/sub/plain.bin").content == b"plain"
    finally:
        proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
