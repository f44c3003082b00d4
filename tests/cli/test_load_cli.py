"""`modeldepot load` and the manager's load_model_by_* on a really installed tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_install_then_load_by_key_attr_and_cli(home: Path, tmp_path: Path, run) -> None:
    from modeldepot import ModelManager
    from modeldepot.testing.factories import torch_models

    pipe = torch_models.tiny_sd_pipeline(tmp_path / "tiny-pipe")
    with ModelManager.open() as mm:
        key = mm.install.install_path(pipe, {"name": "tiny"})
        config = mm.store.get_model(key)
        unet = mm.load_model_by_key(key, "unet")
        again = mm.load_model_by_attr("tiny", config.base, config.type, "unet")
        assert again.model is unet.model  # served from the cache, not loaded twice
        with unet as model:
            assert sum(p.numel() for p in model.parameters()) > 0
        assert mm.load.cache.stats().hits >= 1
    r = run("load", key, "--submodel", "vae", "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert "AutoencoderKL" in info["class"] and info["parameters"] > 0 and info["submodel"] == "vae"
    r = run("load", key)  # a pipeline needs a submodel: a clear one-line error
    assert r.code == 1 and "submodel" in r.err.lower()
