"""The web page in a real headless Chromium (Debian's package, driven by Playwright for Python).

Install from fakehub through the page, watch the progress reach 100 %, see the model listed, edit
its name and tags, delete it with the confirmation. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _api_helpers import LiveServer, Sources

from modeldepot.testing.fakehub import FakeHub

CHROMIUM = os.environ.get("MODELDEPOT_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPING browser test: no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="SKIPPING browser test: pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_install_edit_delete_through_the_page(
    browser: Any, live: LiveServer, hub: FakeHub, sources: Sources, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    hub.faults("/cdn/*", speed_limit_bps=2_500_000)  # slow enough to see progress in flight
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/")
    page.get_by_text("No models yet").wait_for()

    page.fill("#source", sources.pipeline)
    page.click("#install-btn")
    page.locator("[data-testid=job][data-status=downloading]").wait_for(timeout=20_000)
    page.locator("[data-testid=job-part]").first.wait_for()
    page.screenshot(path=str(shots / "desktop-installing.png"))
    done = page.locator("[data-testid=job][data-status=completed]")
    done.wait_for(timeout=30_000)
    assert done.locator("[data-testid=job-pct]").inner_text() == "100 %"
    row = page.locator("[data-testid=model-row]", has_text="tiny-sd")
    row.wait_for()
    assert "main" in row.inner_text() and "sd-1" in row.inner_text()
    page.wait_for_function("document.querySelector('[data-testid=storage]').textContent.includes('on disk')")
    page.screenshot(path=str(shots / "desktop-installed.png"), full_page=True)

    row.click()
    dialog = page.locator("#detail")
    dialog.wait_for()
    page.locator("[data-testid=file-row]").first.wait_for()
    assert page.locator("[data-testid=file-row]").count() >= 5
    assert "/models/" in dialog.inner_text()
    page.screenshot(path=str(shots / "desktop-detail.png"))
    page.fill("#d-name", "Renamed SD")
    page.fill("#d-tags", "alpha, beta")
    page.click("#d-save")
    renamed = page.locator("[data-testid=model-row]", has_text="Renamed SD")
    renamed.wait_for()
    assert "alpha" in renamed.inner_text() and "beta" in renamed.inner_text()
    model = httpx.get(f"{live.url}/api/v2/models/").json()["models"][0]
    assert model["name"] == "Renamed SD" and model["tags"] == ["alpha", "beta"]

    page.fill("#q", "nothing-matches")
    page.get_by_text("No model matches these filters.").wait_for()
    page.fill("#q", "renamed")
    renamed.wait_for()

    renamed.click()
    page.click("#d-delete")
    confirm = page.locator("#d-confirm")
    confirm.wait_for()
    assert "Delete" in confirm.inner_text()
    page.screenshot(path=str(shots / "desktop-confirm.png"))
    page.click("#d-confirm-yes")
    renamed.wait_for(state="detached")
    assert httpx.get(f"{live.url}/api/v2/models/").json()["total"] == 0

    narrow = browser.new_page(viewport={"width": 420, "height": 900})
    narrow.goto(live.url + "/")
    narrow.locator("[data-testid=job]").first.wait_for()
    narrow.screenshot(path=str(shots / "narrow.png"), full_page=True)
    overflow = narrow.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 420, f"the page scrolls sideways at 420 px ({overflow} px wide)"
    narrow.close()
    page.close()
    assert errors == []
    print(f"screenshots in {shots}")
