"""Fixtures of the load tests: settings in a fresh home, record builders, tiny real models (torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldepot.config import DepotConfig
from modeldepot.configs import ModelConfigBase, parse_config


@pytest.fixture
def depot_config(home: Path) -> DepotConfig:
    return DepotConfig(home=home)


def make_config(path: Path | str, **kw: Any) -> ModelConfigBase:
    data: dict[str, Any] = {"name": kw.pop("name", Path(path).name), "base": "sd-1", "path": str(path)}
    data.update(kw)
    return parse_config(data)


@pytest.fixture
def mkcfg() -> Any:
    """``mkcfg(path, type=..., format=..., base="sd-1", **fields)`` -> a validated record."""
    return make_config


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every tiny model, built once per session (about a second)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from modeldepot.testing.factories import torch_models as F

    d = tmp_path_factory.mktemp("tiny-models")
    ck = F.tiny_sd1_checkpoint(d / "ck")
    return {
        "pipeline": F.tiny_sd_pipeline(d / "pipe"),
        "pipeline_fp16": F.tiny_sd_pipeline(d / "pipe16", variant="fp16"),
        "checkpoint": ck,
        "vae": F.tiny_vae(d / "vae"),
        "vae_file": F.tiny_vae_checkpoint(d / "vae.safetensors"),
        "controlnet": F.tiny_controlnet(d / "controlnet"),
        "t2i": F.tiny_t2i_adapter(d / "t2i"),
        "ip_adapter": F.tiny_ip_adapter(d / "ip.safetensors"),
        "lora": F.tiny_lora(d / "lora.safetensors"),
        "loha_pt": F.tiny_lora(d / "loha.pt", kind="loha"),
        "ti_pt": F.tiny_textual_inversion(d / "ti.pt"),
        "ti_safetensors": F.tiny_textual_inversion(d / "ti.safetensors", fmt="safetensors"),
        "ti_folder": F.tiny_textual_inversion(d / "ti-folder", fmt="diffusers"),
        "clip": F.tiny_clip_embed(d / "clip"),
        "t5": F.tiny_t5_encoder(d / "t5"),
        "esrgan_old": F.tiny_esrgan(d / "esrgan-old.pth", layout="old", scale=4),
        "esrgan_new": F.tiny_esrgan(d / "esrgan-new.pth", layout="new", scale=2),
        "esrgan_basicsr": F.tiny_esrgan(d / "esrgan-basicsr.safetensors", layout="basicsr", scale=4),
        "dir": d,
    }
