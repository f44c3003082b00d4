"""The web page in a real headless Chromium (Debian's package, driven by Playwright for Python).

Install from fakehub through the page, watch the progress reach 100 %, see the model listed, edit
its name and tags, delete it with the confirmation. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from _api_helpers import LiveServer, Sources
from fastapi import FastAPI

from modeldepot.manager import ModelManager
from modeldepot.testing.fakehub import FakeHub

#: Playwright waits (ms): generous for a loaded machine; each ends as soon as its condition holds.
WAIT_MS = 120_000
#: Where the page's install options live, as its messages name them.
OPTIONS = "(Install \u203a Options)"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_install_edit_delete_through_the_page(
    browser: Any, live: LiveServer, hub: FakeHub, sources: Sources, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    hub.faults("/cdn/*", speed_limit_bps=2_500_000)  # slow enough to see progress in flight
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/")
    page.get_by_text("No models yet").wait_for()

    page.fill("#source", sources.pipeline)
    page.click("#install-btn")
    page.locator("[data-testid=job][data-status=downloading]").wait_for()
    page.locator("[data-testid=job-part]").first.wait_for()
    page.screenshot(path=str(shots / "desktop-installing.png"))
    done = page.locator("[data-testid=job][data-status=completed]")
    done.wait_for()
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
    narrow.set_default_timeout(WAIT_MS)
    narrow.goto(live.url + "/")
    narrow.locator("[data-testid=job]").first.wait_for()
    narrow.screenshot(path=str(shots / "narrow.png"), full_page=True)
    overflow = narrow.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 420, f"the page scrolls sideways at 420 px ({overflow} px wide)"
    narrow.close()
    page.close()
    assert errors == []
    print(f"screenshots in {shots}")


def test_a_server_that_goes_away_shows_a_banner_until_it_is_back(browser: Any, app: FastAPI) -> None:
    first = LiveServer(app).start()
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(first.url + "/")
        page.get_by_text("No models yet").wait_for()
        offline = page.locator("[data-testid=offline]")
        assert not offline.is_visible()
    finally:
        first.stop()
    # The event stream ends with the server: the page notices without any user action.
    offline.wait_for(state="visible")
    assert offline.inner_text() == "Server unreachable — retrying…"
    page.fill("#source", "org/anything")
    page.click("#install-btn")
    page.wait_for_function("document.getElementById('install-error').textContent !== ''")
    assert "Failed to fetch" not in page.inner_text("body")
    assert page.inner_text("#install-error") == "Server unreachable — retrying…"

    again = LiveServer(app, port=first.port).start()
    try:
        offline.wait_for(state="hidden")
        page.get_by_text("No models yet").wait_for()
    finally:
        page.close()
        again.stop()
    assert errors == []


def test_errors_name_the_page_controls_not_cli_flags(
    browser: Any, live: LiveServer, sources: Sources, mm: ModelManager
) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(live.url + "/")
    page.get_by_text("No models yet").wait_for()
    page.fill("#source", sources.gated_vae)
    page.click("#install-btn")
    error = page.locator("[data-testid=job-error]")
    error.wait_for()
    text = error.inner_text()
    assert "needs a token" in text and f"“Access token” {OPTIONS}" in text, text
    assert "--token" not in text
    assert "`huggingface-cli login`" in text  # a command to run elsewhere stays as it is
    advice = {
        msg: page.evaluate("(m) => pageAdvice(m)", msg)
        for msg in (
            "a model named 'x' already exists: use --force to replace it, or --name to pick another",
            "pass a Civitai API token with --token, or set remote_api_tokens",
            "register it with --inplace",
            "run `modeldepot doctor --fix`",
        )
    }
    assert list(advice.values()) == [
        "a model named 'x' already exists: use “Delete…” on the existing model (open it) first to replace it,"
        f" or the “Name” field {OPTIONS} to pick another",
        f"pass a Civitai API token in “Access token” {OPTIONS}, or set remote_api_tokens",
        f"register it with the “Register a local path in place” option {OPTIONS}",
        "run `modeldepot doctor --fix`",
    ]
    # The "Name" the advice points at exists and is sent with the install.
    page.click("summary")
    page.fill("#install-name", "my own name")
    page.fill("#source", sources.lora)
    page.click("#install-btn")
    page.locator("[data-testid=model-row]", has_text="my own name").wait_for()
    page.close()


def test_the_header_counts_models_registered_in_place(
    browser: Any, live: LiveServer, mm: ModelManager, model_files: dict[str, Path]
) -> None:
    mm.install.register_path(model_files["lora"])
    in_place = model_files["lora"].stat().st_size
    du = httpx.get(f"{live.url}/api/v2/storage/du").json()
    assert du["logical_bytes"] == du["physical_bytes"] == in_place
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(live.url + "/")
    page.locator("[data-testid=inplace]").wait_for()
    shown = page.evaluate(f"size({in_place})")
    assert page.inner_text("[data-testid=logical]") == shown
    assert page.inner_text("[data-testid=physical]") == shown
    assert f"{shown} in place" in page.inner_text("[data-testid=storage]")
    assert page.inner_text("[data-testid=inplace]") == shown
    page.close()
