"""Every model the demo publishes and the factories write loads exactly (issue 13).

The demo's models are installed from its fake hub the way a user does, the factory files are
registered in place; each is then loaded through the manager, every submodel of every pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from modeldepot import ModelManager  # noqa: E402
from modeldepot.configs import ModelConfigBase  # noqa: E402
from modeldepot.testing import factories as F  # noqa: E402

pytestmark = pytest.mark.torch


def _load_everything(mm: ModelManager, config: ModelConfigBase) -> dict[str | None, Any]:
    """Load the model, or each submodel of a pipeline; a torch module must have no meta weights."""
    parts: list[str | None] = [None]
    if config.type.value == "main":
        index = json.loads((Path(config.path) / "model_index.json").read_text())
        parts = sorted(k for k, v in index.items() if isinstance(v, list) and v[0] is not None)
    loaded: dict[str | None, Any] = {}
    for part in parts:
        model = mm.load.load_model(config, part).model
        if isinstance(model, torch.nn.Module):
            assert not any(t.is_meta for t in (*model.parameters(), *model.buffers())), (config.name, part)
        loaded[part] = model
    return loaded


def test_every_demo_model_loads(tmp_path: Path) -> None:
    from modeldepot.api.demo import start_demo

    demo = start_demo(tmp_path / "home", speed_limit_bps=1_000_000_000)
    try:
        with ModelManager(demo.config) as mm:
            configs = []
            for source in demo.sources:
                job = mm.install.wait_for_job(mm.install.heuristic_import(source.source), timeout=120)
                assert job.config_out is not None, (source.source, job.error)
                configs.append(job.config_out)
            loaded = {c.name: _load_everything(mm, c) for c in configs}
    finally:
        demo.close()
    pipeline = next(v for v in loaded.values() if "unet" in v)
    # The report of issue 13: the demo VAE is tiny and complete, not 83 M random parameters.
    assert sum(p.numel() for p in pipeline["vae"].parameters()) < 2_000_000
    assert set(pipeline) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    ids = pipeline["tokenizer"]("a photo of a cat", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipeline["text_encoder"](ids).last_hidden_state
        sample = pipeline["unet"](torch.zeros(1, 4, 8, 8), 10, encoder_hidden_states=hidden).sample
    assert sample.shape == (1, 4, 8, 8)
    kinds = {type(m).__name__ for parts in loaded.values() for m in parts.values()}
    assert {"AutoencoderKL", "RRDBNet", "dict"} <= kinds  # the SDXL VAE, the upscaler, the LoRA


FACTORY_MODELS: dict[str, Callable[[Path], Path]] = {
    "sd1-pipeline": lambda d: F.write_diffusers_pipeline(d / "sd1", "sd-1"),
    "sd1-inpaint-fp16": lambda d: F.write_diffusers_pipeline(d / "sd1i", "sd-1", variant="inpaint", fp16=True),
    "sd2-pipeline": lambda d: F.write_diffusers_pipeline(d / "sd2", "sd-2"),
    "sd2-depth": lambda d: F.write_diffusers_pipeline(d / "sd2d", "sd-2", variant="depth"),
    "sdxl-pipeline": lambda d: F.write_diffusers_pipeline(d / "sdxl", "sdxl"),
    "sdxl-refiner-pipeline": lambda d: F.write_diffusers_pipeline(d / "refiner", "sdxl-refiner"),
    "flux-dev-pipeline": lambda d: F.write_diffusers_pipeline(d / "flux", "flux"),
    "flux-schnell-pipeline": lambda d: F.write_diffusers_pipeline(d / "schnell", "flux", variant="schnell"),
    "flux-fill-pipeline": lambda d: F.write_diffusers_pipeline(d / "fill", "flux", variant="dev_fill"),
    "sd3-pipeline": lambda d: F.write_diffusers_pipeline(d / "sd3", "sd-3", fp16=True),
    "diffusers-t5": lambda d: F.write_diffusers_t5(d / "t5"),
    "diffusers-clip-vision-h": lambda d: F.write_diffusers_clip_vision(d / "image_encoder"),
    "diffusers-vae": lambda d: F.write_diffusers_vae(d / "vae-folder"),
    "diffusers-clip-l": lambda d: F.write_diffusers_clip_text(d / "clip-l", variant="L"),
    "diffusers-clip-g": lambda d: F.write_diffusers_clip_text(d / "clip-g", variant="G"),
    "vae-sd1": lambda d: F.write_vae(d / "vae-ft-mse.safetensors"),
    "vae-sdxl": lambda d: F.write_vae(d / "sdxl_vae.safetensors", base="sdxl", with_metadata=True),
    "vae-flux": lambda d: F.write_vae(d / "ae.safetensors", base="flux"),
    "esrgan-old-x4": lambda d: F.write_esrgan(d / "old.pth", layout="old", scale=4),
    "esrgan-old-x2": lambda d: F.write_esrgan(d / "old2.safetensors", layout="old", scale=2),
    "esrgan-new-x4": lambda d: F.write_esrgan(d / "new.pth", layout="new", scale=4),
    "esrgan-new-x2": lambda d: F.write_esrgan(d / "new2.safetensors", layout="new", scale=2),
    "esrgan-bsrgan": lambda d: F.write_esrgan(d / "bsrgan.safetensors", layout="bsrgan"),
    "clip-l-file": lambda d: F.write_clip_text_encoder(d / "clip_l.safetensors", variant="L"),
    "clip-g-file": lambda d: F.write_clip_text_encoder(d / "clip_g.safetensors", variant="G"),
    "diffusers-controlnet-sd1": lambda d: F.write_diffusers_controlnet(d / "cn", base="sd-1"),
    "diffusers-controlnet-sdxl": lambda d: F.write_diffusers_controlnet(d / "cn-xl", base="sdxl"),
    "diffusers-t2i-sd1": lambda d: F.write_diffusers_t2i_adapter(d / "t2i-folder"),
    "diffusers-t2i-sdxl": lambda d: F.write_diffusers_t2i_adapter(d / "t2i-folder-xl", base="sdxl"),
    "t2i-sd1": lambda d: F.write_t2i_adapter(d / "t2i.safetensors"),
    "t2i-sdxl": lambda d: F.write_t2i_adapter(d / "t2i-xl.safetensors", base="sdxl"),
    "lora-kohya": lambda d: F.write_lora(d / "lora.safetensors", with_metadata=True),
    "lora-sdxl": lambda d: F.write_sdxl_lora(d / "xl-lora.safetensors"),
    "ti-pt": lambda d: F.write_textual_inversion(d / "ti.pt"),
    "ti-sdxl": lambda d: F.write_textual_inversion(d / "ti-xl.safetensors", base="sdxl"),
    "ip-adapter": lambda d: F.write_ip_adapter(d / "ip-adapter_sd15.safetensors"),
}


@pytest.mark.parametrize("name", sorted(FACTORY_MODELS))
def test_factory_model_registers_and_loads(tmp_path: Path, name: str) -> None:
    path = FACTORY_MODELS[name](tmp_path / "src")
    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(path))
        loaded = _load_everything(mm, config)
    assert loaded and all(m is not None for m in loaded.values())


def test_t2i_adapter_file_runs(tmp_path: Path) -> None:
    from modeldepot.testing.factories.files import T2I_CHANNELS

    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(F.write_t2i_adapter(tmp_path / "t2i.safetensors")))
        adapter = mm.load_model_by_config(config).model
    with torch.no_grad():
        features = adapter(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == list(T2I_CHANNELS)
