"""Fixtures for the API tests: a fakehub with tiny models, a manager pointed at it, clients, a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import GATED_TOKEN, LiveServer, Sources
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modeldepot.api.app import create_app
from modeldepot.manager import ModelManager
from modeldepot.testing.factories import write_diffusers_pipeline, write_sdxl_lora, write_vae
from modeldepot.testing.fakehub import FakeHub

#: Debian's Chromium, which the browser tests (test_browser.py, test_reference_browser.py) drive.
CHROMIUM = os.environ.get("MODELDEPOT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-models")
    return {
        "pipeline": write_diffusers_pipeline(root / "tiny-sd"),
        "lora": write_sdxl_lora(root / "tiny-lora.safetensors"),
        "vae": write_vae(root / "vae.safetensors", base="sdxl", with_metadata=True),
    }


@pytest.fixture
def hub(model_files: dict[str, Path]) -> Iterator[FakeHub]:
    with FakeHub() as h:
        pipe = model_files["pipeline"]
        h.add_hf_repo("org/tiny-sd", {p.relative_to(pipe).as_posix(): p for p in pipe.rglob("*") if p.is_file()})
        h.add_hf_repo("org/tiny-lora", {"tiny-lora.safetensors": model_files["lora"]})
        h.add_hf_repo("org/gated-vae", {"vae.safetensors": model_files["vae"]}, gated_token=GATED_TOKEN)
        yield h


@pytest.fixture
def sources() -> Sources:
    return Sources()


@pytest.fixture
def mm(tmp_path: Path, hub: FakeHub) -> Iterator[ModelManager]:
    with ModelManager.open(
        home=tmp_path / "depot",
        hf_endpoint=hub.url,
        civitai_endpoint=hub.url,
        allow_private_urls=True,
        link_modes=["hardlink", "copy"],
    ) as m:
        yield m


@pytest.fixture
def app(mm: ModelManager) -> FastAPI:
    return create_app(mm)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def live(app: FastAPI) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium through Playwright; skipped (with the reason) where either is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPING browser test: no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="SKIPPING browser test: pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
