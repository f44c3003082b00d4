"""Every model the demo publishes and the factories write loads exactly (issue 13).

The demo's models are installed from its fake hub the way a user does, the factory files are
registered in place; each is then loaded through the manager, every submodel of every pipeline.
"""

from __future__ import annotations

import json
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
    if config.type.value == "main" and Path(config.path).is_dir():
        index = json.loads((Path(config.path) / "model_index.json").read_text())
        parts = sorted(k for k, v in index.items() if isinstance(v, list) and v[0] is not None)
    elif config.type.value == "main":
        parts = list(CHECKPOINT_PARTS[config.base.value])
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


#: name -> (writer in ``factories.__all__``, file or folder name, keyword arguments)
Case = tuple[str, str, dict[str, Any]]
FACTORY_MODELS: dict[str, Case] = {
    "sd1-pipeline": ("write_diffusers_pipeline", "sd1", {"base": "sd-1"}),
    "sd1-inpaint-fp16": ("write_diffusers_pipeline", "sd1i", {"base": "sd-1", "variant": "inpaint", "fp16": True}),
    "sd2-pipeline": ("write_diffusers_pipeline", "sd2", {"base": "sd-2"}),
    "sd2-depth": ("write_diffusers_pipeline", "sd2d", {"base": "sd-2", "variant": "depth"}),
    "sdxl-pipeline": ("write_diffusers_pipeline", "sdxl", {"base": "sdxl"}),
    "sdxl-refiner-pipeline": ("write_diffusers_pipeline", "refiner", {"base": "sdxl-refiner"}),
    "flux-dev-pipeline": ("write_diffusers_pipeline", "flux", {"base": "flux"}),
    "flux-schnell-pipeline": ("write_diffusers_pipeline", "schnell", {"base": "flux", "variant": "schnell"}),
    "flux-fill-pipeline": ("write_diffusers_pipeline", "fill", {"base": "flux", "variant": "dev_fill"}),
    "sd3-pipeline": ("write_diffusers_pipeline", "sd3", {"base": "sd-3", "fp16": True}),
    "pipeline-family": ("write_sd_pipeline_family", "family", {"n": 2}),
    "diffusers-t5": ("write_diffusers_t5", "t5", {}),
    "diffusers-clip-vision-h": ("write_diffusers_clip_vision", "image_encoder", {}),
    "diffusers-vae": ("write_diffusers_vae", "vae-folder", {}),
    "diffusers-clip-l": ("write_diffusers_clip_text", "clip-l", {"variant": "L"}),
    "diffusers-clip-g": ("write_diffusers_clip_text", "clip-g", {"variant": "G"}),
    "diffusers-controlnet-sd1": ("write_diffusers_controlnet", "cn", {"base": "sd-1"}),
    "diffusers-controlnet-sdxl": ("write_diffusers_controlnet", "cn-xl", {"base": "sdxl"}),
    "diffusers-t2i-sd1": ("write_diffusers_t2i_adapter", "t2i-folder", {}),
    "diffusers-t2i-sdxl": ("write_diffusers_t2i_adapter", "t2i-folder-xl", {"base": "sdxl"}),
    "diffusers-lora": ("write_diffusers_lora", "lora-folder", {}),
    # single-file all-in-one checkpoints: every submodel
    "sd1-checkpoint": ("write_sd1_checkpoint", "sd1.safetensors", {"with_metadata": True}),
    "sd1-inpaint-ckpt": ("write_sd1_checkpoint", "sd1-inpainting.ckpt", {"inpaint": True}),
    "sd2-checkpoint": ("write_sd2_checkpoint", "sd2.safetensors", {}),
    "sd2-depth-checkpoint": ("write_sd2_checkpoint", "sd2-depth.safetensors", {"variant": "depth"}),
    "sdxl-checkpoint": ("write_sdxl_checkpoint", "sdxl.safetensors", {"v_pred": True, "merged_lora": True}),
    "sdxl-inpaint-checkpoint": ("write_sdxl_checkpoint", "sdxl-inpaint.safetensors", {"inpaint": True, "edm": True}),
    "sdxl-refiner-checkpoint": ("write_sdxl_refiner_checkpoint", "refiner.safetensors", {}),
    "sd3-checkpoint": ("write_sd3_checkpoint", "sd3.safetensors", {}),
    "flux-dev-checkpoint": ("write_flux_checkpoint", "flux1-dev.safetensors", {}),
    "flux-schnell-comfy": (
        "write_flux_checkpoint",
        "flux1-schnell.safetensors",
        {"variant": "schnell", "prefix": "model.diffusion_model."},
    ),
    "flux-fill-checkpoint": ("write_flux_checkpoint", "flux1-fill.safetensors", {"variant": "dev_fill"}),
    # single-file components
    "vae-sd1": ("write_vae", "vae-ft-mse.safetensors", {}),
    "vae-sdxl": ("write_vae", "sdxl_vae.safetensors", {"base": "sdxl", "with_metadata": True}),
    "vae-flux": ("write_vae", "ae.safetensors", {"base": "flux"}),
    "controlnet-ldm-sd1": ("write_controlnet", "control_sd15.safetensors", {}),
    "controlnet-ldm-sd2": ("write_controlnet", "control_sd21.safetensors", {"base": "sd-2"}),
    "controlnet-ldm-sdxl": ("write_controlnet", "control_xl.safetensors", {"base": "sdxl"}),
    "controlnet-diffusers-sd1": ("write_controlnet", "cn-d.safetensors", {"style": "diffusers"}),
    "controlnet-diffusers-sdxl": ("write_controlnet", "cn-dxl.safetensors", {"base": "sdxl", "style": "diffusers"}),
    "t5-file": ("write_t5_encoder", "t5xxl.safetensors", {}),
    "clip-l-file": ("write_clip_text_encoder", "clip_l.safetensors", {"variant": "L"}),
    "clip-g-file": ("write_clip_text_encoder", "clip_g.safetensors", {"variant": "G"}),
    "esrgan-old-x4": ("write_esrgan", "old.pth", {"layout": "old", "scale": 4}),
    "esrgan-old-x2": ("write_esrgan", "old2.safetensors", {"layout": "old", "scale": 2}),
    "esrgan-new-x4": ("write_esrgan", "new.pth", {"layout": "new", "scale": 4}),
    "esrgan-new-x2": ("write_esrgan", "new2.safetensors", {"layout": "new", "scale": 2}),
    "esrgan-bsrgan": ("write_esrgan", "bsrgan.safetensors", {"layout": "bsrgan"}),
    "gfpgan": ("write_gfpgan", "gfpgan.pth", {}),
    "codeformer": ("write_codeformer", "codeformer.pth", {}),
    "blip-captioner": ("write_blip_folder", "blip", {}),
    "clip-model": ("write_clip_model_folder", "clip-model", {}),
    "safety-checker": ("write_safety_checker_folder", "safety-checker", {}),
    "t2i-sd1": ("write_t2i_adapter", "t2i.safetensors", {}),
    "t2i-sdxl": ("write_t2i_adapter", "t2i-xl.safetensors", {"base": "sdxl"}),
    "ip-adapter": ("write_ip_adapter", "ip-adapter_sd15.safetensors", {}),
    "ip-adapter-folder": ("write_ip_adapter_folder", "ip-adapter-folder", {}),
    # state-dict models: a LoRA / embedding loads as its tensors
    "lora-kohya": ("write_lora", "lora.safetensors", {"with_metadata": True}),
    "lora-sdxl": ("write_sdxl_lora", "xl-lora.safetensors", {}),
    "lora-flux": ("write_flux_lora", "flux-lora.safetensors", {}),
    "ti-pt": ("write_textual_inversion", "ti.pt", {}),
    "ti-sdxl": ("write_textual_inversion", "ti-xl.safetensors", {"base": "sdxl"}),
    "ti-folder": ("write_embedding_folder", "ti-folder", {}),
    "clip-vision-l": ("write_clip_vision", "clip_vision_l.safetensors", {"variant": "L"}),
    "clip-vision-h": ("write_clip_vision", "clip_vision_h.safetensors", {}),
    "clip-vision-g": ("write_clip_vision", "clip_vision_g.safetensors", {"variant": "G"}),
}

#: Writers whose output is not a model, with the reason; every other public writer needs a case above.
NOT_MODELS = {
    "write_bad_safetensors": "deliberately malformed files (the hostile-input tests)",
    "write_malicious_pickle": "a pickle that runs code: refused, never loaded",
    "write_json": "a JSON document (configs, metadata)",
    "write_text": "a text file",
    "write_scheduler": "a scheduler config folder: no weights (loaded as a pipeline part above)",
    "write_tokenizer": "a tokenizer folder: no weights (loaded as a pipeline part above)",
    "write_safetensors": "the generic writer of given tensor shapes, not a model by itself",
    "write_weights": "the generic writer of given tensor shapes, not a model by itself",
    "write_torch_pickle": "the generic pickle writer of a given tree, not a model by itself",
    "write_onnx_pipeline": "an ONNX export for identification only (placeholder .onnx bytes; no ONNX loader)",
    "write_captioned_images": "training data (images and caption files), not a model",
}
#: Submodels of the single-file main checkpoints (they have no model_index.json).
CHECKPOINT_PARTS = {
    "sd-1": ["unet", "vae", "text_encoder", "tokenizer", "scheduler"],
    "sd-2": ["unet", "vae", "text_encoder", "tokenizer", "scheduler"],
    "sdxl": ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"],
    "sdxl-refiner": ["unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"],
    "sd-3": ["transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"],
    "flux": ["transformer"],
}


def _write(case: Case, root: Path) -> Path:
    writer, name, kwargs = case
    out = getattr(F, writer)(root / name, **kwargs)
    return out[0] if isinstance(out, list) else out  # a pipeline family: its first member


def test_every_public_writer_is_loaded_or_listed_as_no_model() -> None:
    writers = {n for n in F.__all__ if n.startswith("write_")}
    loaded = {w for w, _, _ in FACTORY_MODELS.values()}
    assert not loaded & set(NOT_MODELS)
    assert writers == loaded | set(NOT_MODELS), "a new writer needs a load case (or a reason it makes no model)"


@pytest.mark.slow  # ~25 s of loads in all; CI's slow run keeps every factory model loading
@pytest.mark.parametrize("name", sorted(FACTORY_MODELS))
def test_factory_model_registers_and_loads(tmp_path: Path, name: str) -> None:
    path = _write(FACTORY_MODELS[name], tmp_path / "src")
    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(path))
        loaded = _load_everything(mm, config)
    assert loaded and all(m is not None for m in loaded.values())
    if config.type.value == "main" and config.format.value == "checkpoint":
        assert sorted(p for p in loaded if p) == sorted(CHECKPOINT_PARTS[config.base.value])


def test_all_in_one_checkpoint_runs(tmp_path: Path) -> None:
    """The tiny SDXL checkpoint is a working model: its parts fit together in a denoising step."""
    with ModelManager.open(home=tmp_path / "home") as mm:
        path = F.write_sdxl_checkpoint(tmp_path / "xl.safetensors", seed=3)
        config = mm.store.get_model(mm.install.register_path(path))
        unet, vae = (mm.load.load_model(config, p).model for p in ("unet", "vae"))
        te1, te2 = (mm.load.load_model(config, p).model for p in ("text_encoder", "text_encoder_2"))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        hidden = torch.cat([te1(ids).last_hidden_state, te2(ids).last_hidden_state], dim=-1)
        pooled = te2(ids).text_embeds
        added = {"text_embeds": pooled, "time_ids": torch.zeros(1, 6)}
        sample = unet(torch.zeros(1, 4, 8, 8), 10, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
        image = vae.decode(sample).sample
    assert hidden.shape[-1] == 2048 and sample.shape == (1, 4, 8, 8) and image.shape == (1, 3, 16, 16)


def test_t2i_adapter_file_runs(tmp_path: Path) -> None:
    from modeldepot.testing.factories.files import T2I_CHANNELS

    with ModelManager.open(home=tmp_path / "home") as mm:
        config = mm.store.get_model(mm.install.register_path(F.write_t2i_adapter(tmp_path / "t2i.safetensors")))
        adapter = mm.load_model_by_config(config).model
    with torch.no_grad():
        features = adapter(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == list(T2I_CHANNELS)
