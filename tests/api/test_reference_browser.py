"""The page's Reference section in headless Chromium: Install a reference model, watch it finish.

Skipped (like ``test_browser.py``) where Chromium or Playwright is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import LiveServer

from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager
from modeldepot.testing.factories import write_esrgan
from modeldepot.testing.fakehub import FakeHub

WAIT_MS = 120_000
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def reference_server(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> Iterator[LiveServer]:
    data = write_esrgan(tmp_path / "up.pth", nf=8, gc=4, num_blocks=1).read_bytes()
    url = hub.add_file("plain/up.pth", data)
    ref = {
        "tiny_up": {
            "name": "Tiny upscaler",
            "type": "realesrgan",
            "size_on_disk_bytes": len(data),
            "config": {
                "files": [{"path": "tiny_up.pth", "sha256sum": hashlib.sha256(data).hexdigest()}],
                "download": [{"file_name": "tiny_up.pth", "file_url": url}],
            },
        }
    }
    (tmp_path / "esrgan.json").write_text(json.dumps(ref), encoding="utf-8")
    app = create_app(mm, references={"esrgan": tmp_path / "esrgan.json"}, nataili_cache_home=tmp_path / "nataili")
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def test_install_a_reference_model_from_the_page(browser: Any, reference_server: LiveServer, hub: FakeHub) -> None:
    hub.faults("/plain/*", speed_limit_bps=20_000)  # ~2 s: the progress bar shows while it runs
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(reference_server.url + "/")
    row = page.locator("[data-testid=ref-row][data-service=esrgan][data-key=tiny_up]")
    row.wait_for()
    assert row.get_attribute("data-available") == "false" and "no" in row.inner_text()
    page.select_option("#ref-service", "esrgan")
    page.wait_for_function("document.querySelectorAll('[data-testid=ref-row]').length === 1")
    row.locator("[data-testid=ref-install]").click()
    page.locator("[data-testid=ref-progress]").wait_for()
    page.locator("[data-testid=ref-row][data-key=tiny_up][data-available=true]").wait_for()
    assert "installed" in row.inner_text()
    page.locator("[data-testid=model-row]").first.wait_for()  # the depot record shows in the models list
    page.close()
    assert errors == []
