"""A trained LoRA as the file other tools read: kohya's key layout, ``ss_*`` training metadata, ``modelspec.*``.

PEFT names a layer's factors ``<module path>.lora_A.weight`` / ``lora_B.weight``. kohya's sd-scripts (and so
A1111, ComfyUI, InvokeAI and Civitai) name them ``lora_unet_<module path with _>.lora_down.weight`` /
``.lora_up.weight`` with an ``.alpha`` scalar, ``lora_te_`` for the text encoder (``lora_te1_`` /
``lora_te2_`` for SDXL's two). The UNet keeps diffusers' module names, which every one of those loaders maps.
``sshs_model_hash`` and ``modelspec.hash_sha256`` are the SHA-256 of the tensor bytes after the header
(Civitai's AutoV3), so they do not depend on the metadata they are written into.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from modeldepot.train._parts import FAMILIES

#: part name -> kohya key prefix; SDXL's encoders are te1 / te2
_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
_SDXL_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def kohya_state_dict(
    parts: Mapping[str, Mapping[str, torch.Tensor]], alpha: float, *, sdxl: bool
) -> dict[str, torch.Tensor]:
    """``{part: PEFT state dict}`` -> one kohya-layout state dict (contiguous float32 copies, CPU)."""
    prefixes = _SDXL_PREFIXES if sdxl else _PREFIXES
    out: dict[str, torch.Tensor] = {}
    for part, state in parts.items():
        prefix = prefixes[part]
        for key, tensor in state.items():
            module, _, suffix = key.rpartition(".lora_")
            kind = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(suffix)
            if kind is None:
                raise ValueError(f"unexpected PEFT key {key!r}")
            if part != "unet" and not module.startswith("text_model."):
                # transformers 5 flattened CLIPTextModel (no ``text_model.`` level); files keep the classic names
                module = "text_model." + module
            name = prefix + module.replace(".", "_")
            out[f"{name}.{kind}"] = tensor.detach().to("cpu", torch.float32).contiguous()
            out.setdefault(f"{name}.alpha", torch.tensor(float(alpha)))
    return out


def tensor_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the bytes after the safetensors header (kohya's ``sshs_model_hash``, Civitai's AutoV3)."""
    data = safetensors_bytes(dict(tensors))
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header :]).hexdigest()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def training_metadata(
    *,
    title: str,
    family_key: str,
    base: Any,
    run: Mapping[str, Any],
    dataset: Any,
    tensors_hash: str,
) -> dict[str, str]:
    """kohya ``ss_*`` keys and ModelSpec 1.0 keys, all strings (the safetensors header holds only strings).

    ``run`` holds the run's facts: rank, alpha, steps, lr, text_encoder_lr, batch_size, resolution, seed,
    session_id, started_at, finished_at, mixed_precision, gradient_checkpointing, text_encoder, epochs,
    targets, source, plus an optional ``dreambooth`` dict. ``dataset`` is the ``CaptionedImageDataset``.
    """
    _, kohya_base, architecture = FAMILIES[family_key]
    res = int(run["resolution"])
    now = run["finished_at"]
    meta: dict[str, Any] = {
        "ss_session_id": run["session_id"],
        "ss_training_started_at": run["started_at"],
        "ss_training_finished_at": now,
        "ss_output_name": title,
        "ss_sd_model_name": base.name,
        "ss_sd_model_hash": base.hash or "",
        # kohya's field is a bare SHA-256; a record hashed with another algorithm has none to give
        "ss_new_sd_model_hash": base.hash.removeprefix("sha256:") if (base.hash or "").startswith("sha256:") else "",
        "ss_base_model_version": kohya_base,
        "ss_v2": str(family_key.startswith("sd-2")),
        "ss_network_module": "networks.lora",
        "ss_network_dim": run["rank"],
        "ss_network_alpha": run["alpha"],
        "ss_network_args": _json({"target_modules": list(run["targets"])}),
        "ss_network_train_unet_only": str(not run["text_encoder"]),
        "ss_network_train_text_encoder_only": "False",
        "ss_learning_rate": run["lr"],
        "ss_unet_lr": run["lr"],
        "ss_text_encoder_lr": run["text_encoder_lr"] if run["text_encoder"] else 0,
        "ss_lr_scheduler": "constant",
        "ss_optimizer": "torch.optim.AdamW",
        "ss_max_train_steps": run["steps"],
        "ss_steps": run["steps"],
        "ss_epoch": run["epochs"],
        "ss_num_epochs": run["epochs"],
        "ss_batch_size_per_device": run["batch_size"],
        "ss_total_batch_size": run["batch_size"],
        "ss_gradient_accumulation_steps": 1,
        "ss_resolution": f"({res}, {res})",
        "ss_enable_bucket": str(bool(dataset.bucketing)),
        "ss_bucket_info": _json(
            {"buckets": {f"{w}x{h}": n for (w, h), n in sorted(dataset.buckets.items())}, "mean_img_ar_error": 0}
        ),
        "ss_num_train_images": len(dataset),
        "ss_num_reg_images": run.get("num_reg_images", 0),
        "ss_dataset_dirs": _json(dataset.dataset_dirs()),
        "ss_tag_frequency": _json(dataset.tag_frequencies()),
        "ss_shuffle_caption": str(bool(dataset.shuffle_tags)),
        "ss_keep_tokens": dataset.keep_tokens,
        "ss_flip_aug": str(bool(dataset.flip)),
        "ss_random_crop": str(dataset.crop == "random"),
        "ss_seed": run["seed"],
        "ss_mixed_precision": run["mixed_precision"],
        "ss_full_fp16": "False",
        "ss_gradient_checkpointing": str(bool(run["gradient_checkpointing"])),
        "ss_noise_offset": 0,
        "ss_prior_loss_weight": run.get("prior_loss_weight", 1.0),
        "ss_training_comment": run.get("comment", "trained by modeldepot"),
        "sshs_model_hash": tensors_hash,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if family_key == "sdxl"
        else "diffusers",
        "modelspec.title": title,
        "modelspec.description": run.get("description") or f"LoRA trained on {base.name} by modeldepot",
        "modelspec.date": now,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.prediction_type": "v" if family_key == "sd-2-v" else "epsilon",
        "modelspec.hash_sha256": "0x" + tensors_hash,
        "modeldepot.base_key": base.key,
        "modeldepot.source": run["source"],
    }
    if run.get("dreambooth"):
        meta["modeldepot.dreambooth"] = _json(run["dreambooth"])
        trigger = run["dreambooth"].get("instance_prompt")
        if trigger:
            meta["modelspec.trigger_phrase"] = trigger
    return {k: str(v) for k, v in meta.items()}
