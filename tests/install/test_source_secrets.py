"""A token or signature in a source URL is used for the download and stored nowhere.

The fakehub's Civitai download route accepts ``?token=`` (like Civitai) and 401s without it, so a
completed install proves the server got the real URL; the depot's files, database rows, records,
jobs and events must not hold the token.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.events import EventRecorder
from modeldepot.install._jobs import ModelInstallJob
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

TOKEN = "civ_SECRET_token_5b1e07"
VERSION = 501


def publish_gated(hub: FakeHub, tmp_path: Path) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "gated.safetensors")
    hub.add_civitai_model(
        {
            "id": 50,
            "name": "Gated LoRA",
            "type": "LORA",
            "modelVersions": [
                {
                    "id": VERSION,
                    "name": "v1",
                    "baseModel": "SDXL 1.0",
                    "gated_token": TOKEN,
                    "files": [{"name": "gated.safetensors", "type": "Model", "primary": True, "data": lora}],
                }
            ],
        }
    )


def no_secret_on_disk(home: Path, secret: str) -> None:
    for f in home.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def db_sources(db_file: str) -> list[str]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT source FROM install_jobs UNION ALL SELECT source FROM models").fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def plain_mm(tmp_path: Path, hub: FakeHub) -> Iterator[ModelManager]:
    """A manager for which the hub is just some web server (its Civitai endpoint is elsewhere)."""
    with ModelManager.open(home=tmp_path / "plain", allow_private_urls=True, link_modes=["hardlink", "copy"]) as m:
        yield m


def test_plain_url_token_reaches_the_server_but_is_never_stored(
    plain_mm: ModelManager, hub: FakeHub, tmp_path: Path
) -> None:
    publish_gated(hub, tmp_path)
    base = f"{hub.url}/api/download/models/{VERSION}"
    # Without the token the server refuses: the gate is real.
    refused = plain_mm.install.wait_for_job(plain_mm.install.heuristic_import(f"{base}?type=Model"), timeout=60)
    assert refused.errored and "401" in (refused.error or ""), refused.error

    rec = EventRecorder(plain_mm.events)
    # Percent-encoded, the name is still "token" to the server, and still a secret to us.
    for spelled in ("token", "%74oken"):
        source = f"{base}?type=Model&{spelled}={TOKEN}"
        job = plain_mm.install.wait_for_job(plain_mm.install.heuristic_import(source), timeout=60)
        assert job.complete and job.outcome == "installed", job.error  # downloaded, not found installed
        assert job._source_obj.url == source  # the real URL is kept in memory, for the download
        assert job.source == f"{base}?type=Model"  # other parameters kept
        assert job.config_out is not None and job.config_out.source == f"{base}?type=Model"
        assert TOKEN not in json.dumps(job.to_public()) and TOKEN not in repr(job)
        assert TOKEN not in plain_mm.store.get_model(job.config_out.key).model_dump_json()
        plain_mm.install.delete(job.config_out.key)  # so the next spelling downloads again
    assert not any(p.startswith("/api/download") for p in hub.stats.authorized_paths)  # it went in the query
    assert rec.events and all(TOKEN not in json.dumps(e.payload, default=str) for e in rec.events)
    sources = db_sources(plain_mm.config.db_url)
    assert f"{base}?type=Model" in sources and not any(TOKEN in s for s in sources)
    no_secret_on_disk(plain_mm.config.home, TOKEN)


def test_civitai_url_token_is_used_as_the_access_token(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    publish_gated(hub, tmp_path)
    job = mm.install.heuristic_import(f"{hub.url}/api/download/models/{VERSION}?token={TOKEN}")
    mm.install.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    assert job.source == f"civitai:{VERSION}"
    assert job.config_out is not None and job.config_out.source == f"civitai:{VERSION}"
    assert not any(TOKEN in s for s in db_sources(mm.config.db_url))
    no_secret_on_disk(mm.config.home, TOKEN)


def test_sources_given_directly_are_stripped_too(mm: ModelManager, tmp_path: Path) -> None:
    vae = factories.write_vae(tmp_path / "vae.safetensors")
    key = mm.install.install_path(vae, source="https://cdn.example/vae.safetensors?rev=2&X-Amz-Signature=abc123")
    assert mm.store.get_model(key).source == "https://cdn.example/vae.safetensors?rev=2"
    job = ModelInstallJob(id=1, source="https://h.example/m.safetensors?api_key=abc123", source_type="url")
    assert job.source == "https://h.example/m.safetensors"
