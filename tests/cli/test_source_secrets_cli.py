"""``modeldepot install URL?token=...``: the download gets the token; output, jobs and records do not."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

TOKEN = "civ_SECRET_token_c11e"
VERSION = 701


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    lora = factories.write_sdxl_lora(tmp_path / "gated.safetensors")
    with FakeHub() as h:
        version = {"id": VERSION, "name": "v1", "baseModel": "SDXL 1.0", "gated_token": TOKEN}
        file = {"name": "gated.safetensors", "type": "Model", "primary": True, "data": lora}
        h.add_civitai_model(
            {"id": 70, "name": "Gated", "type": "LORA", "modelVersions": [{**version, "files": [file]}]}
        )
        yield h


def test_install_url_with_token_prints_and_stores_no_token(
    hub: FakeHub, home: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Any]
) -> None:
    # The Civitai endpoint stays civitai.com: to this depot the hub's URL is a plain file URL.
    monkeypatch.setenv("MODELDEPOT_ALLOW_PRIVATE_URLS", "true")
    url = f"{hub.url}/api/download/models/{VERSION}"
    r = run("install", f"{url}?type=Model&token={TOKEN}", "--json")
    assert r.code == 0, r.err  # the hub 401s without the token
    [job] = r.json()
    assert job["source"] == f"{url}?type=Model" and job["status"] == "completed"
    jobs = run("jobs", "--json")
    listed = run("list", "--json")
    for out in (r, jobs, listed):
        assert TOKEN not in out.out and TOKEN not in out.err
    assert [row["source"] for row in jobs.json()] == [f"{url}?type=Model"]
    assert [m["source"] for m in listed.json()] == [f"{url}?type=Model"]
    with sqlite3.connect(home / "databases" / "modeldepot.db") as conn:
        stored = conn.execute("SELECT source FROM install_jobs UNION ALL SELECT source FROM models").fetchall()
    assert stored and not any(TOKEN in row[0] for row in stored)
    for f in home.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
