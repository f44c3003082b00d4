"""Secrets stay out of the access log (however their names are spelled) and out of what the API
returns and stores, while the download still gets them."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from _api_helpers import LiveServer, wait_job

from modeldepot.api._security import RedactSecretsFilter, redact_secrets
from modeldepot.manager import ModelManager
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

SECRET = "k3y-SECRET-9f2"
TOKEN = "civ_SECRET_token_77aa"
VERSION = 601
#: Spellings a server decodes to api_key / access_token / token.
SPELLINGS = ("api%5Fkey", "%61pi_key", "API%5fKEY", "%61%70%69%5F%6B%65%79", "access%5Ftoken", "tok%65n", "Token")


def _access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", path, "1.1", 200), None,
    )  # fmt: skip


@pytest.mark.parametrize("name", SPELLINGS)
def test_access_log_filter_catches_percent_encoded_names(name: str) -> None:
    record = _access_record(f"/api/v2/models/?limit=5&{name}={SECRET}&q=x")
    assert RedactSecretsFilter().filter(record)
    line = record.getMessage()
    assert SECRET not in line
    assert f"{name}=***" in line and "limit=5" in line and "q=x" in line


def test_a_token_inside_an_encoded_source_url_is_redacted() -> None:
    source = f"https://cdn.example/m.safetensors?type=Model&token={TOKEN}&X-Amz-Signature=abc123"
    path = f"/api/v2/models/install?source={quote(source, safe='')}&inplace=false"
    shown = redact_secrets(path)
    assert TOKEN not in shown and "abc123" not in shown
    assert "cdn.example%2Fm.safetensors%3Ftype%3DModel" in shown and "inplace=false" in shown


def test_harmless_parameters_are_left_alone() -> None:
    path = "/api/v2/models/?base=sdxl&type=lora&source=org%2Frepo%3Afp16&limit=10"
    assert redact_secrets(path) == path


@pytest.fixture
def access_lines(live: LiveServer) -> Iterator[list[str]]:
    """The live server's access-log lines, as its handlers would print them (after the filter)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("uvicorn.access")
    level, handler = logger.level, Keep()
    logger.setLevel(logging.INFO)  # the live server logs at "warning"
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_live_access_log_and_api_never_show_the_secrets(
    live: LiveServer, access_lines: list[str], mm: ModelManager, hub: FakeHub, tmp_path: Path
) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "gated.safetensors")
    version = {"id": VERSION, "name": "v1", "baseModel": "SDXL 1.0", "gated_token": TOKEN}
    file = {"name": "gated.safetensors", "type": "Model", "primary": True, "data": lora}
    hub.add_civitai_model({"id": 60, "name": "Gated", "type": "LORA", "modelVersions": [{**version, "files": [file]}]})
    bodies: list[str] = []
    with httpx.Client(base_url=live.url) as c:
        for name in SPELLINGS:
            assert c.get(f"/api/v2/models/?{name}={SECRET}").status_code == 200
        # A Civitai download URL with its ?token=: the hub refuses the download without it.
        r = c.post(
            "/api/v2/models/install", params={"source": f"{hub.url}/api/download/models/{VERSION}?token={TOKEN}"}
        )
        assert r.status_code == 201, r.text
        job = wait_job(c.get, r.json()["id"])
        assert job["status"] == "completed", job  # so the token reached the hub
        assert job["source"] == f"civitai:{VERSION}"
        for path in ("/api/v2/models/install", f"/api/v2/models/install/{job['id']}", "/api/v2/models/"):
            bodies.append(c.get(path).text)
        bodies.append(r.text)
    assert len([line for line in access_lines if "/api/v2/models/?" in line]) == len(SPELLINGS)
    assert any("/api/v2/models/install?source=" in line for line in access_lines)
    for text in [*access_lines, *bodies]:
        assert SECRET not in text and TOKEN not in text, text
    with sqlite3.connect(mm.config.db_url) as conn:
        stored = conn.execute("SELECT source FROM install_jobs UNION ALL SELECT source FROM models").fetchall()
    assert stored and not any(TOKEN in row[0] for row in stored)
