"""Tiny-model factories: faithful model files and folders of every kind, written without torch.

Right key names, right shapes on the keys that decide what a model is, a tiny complete architecture
elsewhere: every model a writer makes loads exactly (``tests/load/test_factory_models.py`` loads one
of each; the few identification-only headers are documented in ``files.py``).
``write_sd_pipeline_family`` makes pipelines that share byte-identical components (for dedup tests).
The Hugging Face folders of ``_hf_models`` (BLIP, full CLIP, safety checker) are the exception: they
are written by transformers' own ``save_pretrained`` of a seeded tiny model, so they need torch.
"""

from __future__ import annotations

from modeldepot.testing.factories._codeformer import TINY_CODEFORMER, codeformer_shapes, write_codeformer
from modeldepot.testing.factories._datasets import write_captioned_images
from modeldepot.testing.factories._face import GFPGAN_RELEASE_CHANNELS, gfpgan_shapes, write_gfpgan
from modeldepot.testing.factories._folders import (
    write_diffusers_clip_text,
    write_diffusers_clip_vision,
    write_diffusers_controlnet,
    write_diffusers_lora,
    write_diffusers_pipeline,
    write_diffusers_t2i_adapter,
    write_diffusers_t5,
    write_diffusers_vae,
    write_onnx_pipeline,
    write_scheduler,
    write_sd_pipeline_family,
    write_tokenizer,
)
from modeldepot.testing.factories._hf_models import (
    write_blip_folder,
    write_clip_model_folder,
    write_safety_checker_folder,
)
from modeldepot.testing.factories._lora_tiny import DEFAULT_LORA_TARGETS, LORA_STYLES, tiny_lora_for
from modeldepot.testing.factories._writers import (
    BAD_SAFETENSORS_KINDS,
    write_bad_safetensors,
    write_json,
    write_malicious_pickle,
    write_safetensors,
    write_text,
    write_torch_pickle,
    write_weights,
)
from modeldepot.testing.factories.files import (
    write_clip_text_encoder,
    write_clip_vision,
    write_controlnet,
    write_embedding_folder,
    write_esrgan,
    write_flux_checkpoint,
    write_flux_lora,
    write_ip_adapter,
    write_ip_adapter_folder,
    write_lora,
    write_sd1_checkpoint,
    write_sd2_checkpoint,
    write_sd3_checkpoint,
    write_sdxl_checkpoint,
    write_sdxl_lora,
    write_sdxl_refiner_checkpoint,
    write_t2i_adapter,
    write_t5_encoder,
    write_textual_inversion,
    write_vae,
)

__all__ = [
    "BAD_SAFETENSORS_KINDS",
    "DEFAULT_LORA_TARGETS",
    "GFPGAN_RELEASE_CHANNELS",
    "LORA_STYLES",
    "TINY_CODEFORMER",
    "codeformer_shapes",
    "gfpgan_shapes",
    "tiny_lora_for",
    "write_bad_safetensors",
    "write_blip_folder",
    "write_captioned_images",
    "write_clip_model_folder",
    "write_clip_text_encoder",
    "write_clip_vision",
    "write_codeformer",
    "write_controlnet",
    "write_diffusers_clip_text",
    "write_diffusers_clip_vision",
    "write_diffusers_controlnet",
    "write_diffusers_lora",
    "write_diffusers_pipeline",
    "write_diffusers_t2i_adapter",
    "write_diffusers_t5",
    "write_diffusers_vae",
    "write_embedding_folder",
    "write_esrgan",
    "write_flux_checkpoint",
    "write_flux_lora",
    "write_gfpgan",
    "write_ip_adapter",
    "write_ip_adapter_folder",
    "write_json",
    "write_lora",
    "write_malicious_pickle",
    "write_onnx_pipeline",
    "write_safetensors",
    "write_safety_checker_folder",
    "write_scheduler",
    "write_sd1_checkpoint",
    "write_sd2_checkpoint",
    "write_sd3_checkpoint",
    "write_sd_pipeline_family",
    "write_sdxl_checkpoint",
    "write_sdxl_lora",
    "write_sdxl_refiner_checkpoint",
    "write_t2i_adapter",
    "write_t5_encoder",
    "write_text",
    "write_textual_inversion",
    "write_tokenizer",
    "write_torch_pickle",
    "write_vae",
    "write_weights",
]
