"""`modeldepot load` and the manager's load_model_by_* on a really installed tiny pipeline."""

from __future__ import annotations

import shutil
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


def _install(tmp_path: Path, path: Path, **fields: str) -> str:
    from modeldepot import ModelManager

    with ModelManager.open() as mm:
        return mm.install.register_path(path, fields or None)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    return lines[0]


def test_load_nonsense_submodel_lists_the_valid_ones(home: Path, tmp_path: Path, run) -> None:
    from modeldepot.testing.factories import write_diffusers_pipeline

    key = _install(tmp_path, write_diffusers_pipeline(tmp_path / "tiny-sd15", base="sd-1"))
    r = run("load", key, "--submodel", "nonsense")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "'nonsense' is not a submodel" in line
    assert "feature_extractor, scheduler, text_encoder, tokenizer, unet, vae" in line


def test_load_single_file_checkpoint_tokenizer(home: Path, tmp_path: Path, run) -> None:
    from modeldepot.testing.factories import torch_models

    ck = torch_models.tiny_sd1_checkpoint(tmp_path / "ck")
    _install(tmp_path, ck.path, name="tiny-ck", base="sd-1", config_path=str(ck.config_dir))
    r = run("load", "tiny-ck", "--submodel", "tokenizer", "--json")
    assert r.code == 0, r.err
    assert r.json()["class"].endswith("CLIPTokenizer")
    r = run("load", "tiny-ck", "--submodel", "text_encoder_2")
    assert r.code == 1 and "has no submodel 'text_encoder_2'" in _one_error_line(r.err)


def test_load_refused_tokenizer_is_one_line(home: Path, tmp_path: Path, run) -> None:
    from modeldepot.testing.factories import torch_models

    ck = torch_models.tiny_sd1_checkpoint(tmp_path / "ck")
    # A config folder whose tokenizer the tokenizers library refuses (a bare Exception): one line.
    broken = tmp_path / "broken-config"
    shutil.copytree(ck.config_dir, broken)
    (broken / "tokenizer" / "merges.txt").write_text("#version: 0.2\nq\u0100 zz</w>\n", encoding="utf-8")
    key = _install(tmp_path, ck.path, name="tiny-ck-2", base="sd-1", config_path=str(broken))
    r = run("load", key, "--submodel", "tokenizer")
    assert r.code == 1
    assert "cannot load model 'tiny-ck-2'" in _one_error_line(r.err)


def test_load_inexact_file_is_one_line_and_partial_opts_in(home: Path, tmp_path: Path, run) -> None:
    from safetensors.torch import load_file, save_file

    from modeldepot.testing.factories import torch_models

    vae = torch_models.tiny_vae(tmp_path / "vae")
    weights = vae / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["decoder.conv_out.bias"]
    save_file(sd, str(weights))
    key = _install(tmp_path, vae, name="holey-vae")
    r = run("load", key)
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "missing keys: decoder.conv_out.bias" in line and "partial" in line
    r = run("load", key, "--partial", "--json")
    assert r.code == 0, r.err
    assert r.json()["partial"] is True and r.json()["class"].endswith("AutoencoderKL")


def test_load_describes_nested_state_dicts_and_tokenizers(home: Path, tmp_path: Path, run) -> None:
    from modeldepot.testing.factories import write_diffusers_pipeline, write_ip_adapter

    key = _install(tmp_path, write_ip_adapter(tmp_path / "ip-adapter-plus_sd15.safetensors", plus=True))
    r = run("load", key, "--json")
    assert r.code == 0, r.err
    assert r.json()["class"] == "builtins.dict" and r.json()["parameters"] > 0  # {"image_proj": {...}, ...}
    key = _install(tmp_path, write_diffusers_pipeline(tmp_path / "tiny-sd15"))
    r = run("load", key, "--submodel", "tokenizer", "--json")
    assert r.code == 0, r.err
    assert r.json()["vocab_size"] == 514
