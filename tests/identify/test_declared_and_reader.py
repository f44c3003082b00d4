"""Declared-metadata parsing, and the validating safetensors header reader."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from modeldepot.errors import InvalidSafetensorsError
from modeldepot.identify import TensorInfo, read_safetensors_header
from modeldepot.identify._declared import read_declared
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelType, SchedulerPredictionType
from modeldepot.testing import factories as F


@pytest.mark.parametrize(
    ("meta", "type_", "base", "variant", "pred"),
    [
        ({"modelspec.architecture": "stable-diffusion-v1"}, ModelType.Main, B.StableDiffusion1, None, None),
        (
            {"modelspec.architecture": "stable-diffusion-v1-inpainting"},
            ModelType.Main,
            B.StableDiffusion1,
            "inpaint",
            None,
        ),
        (
            {"modelspec.architecture": "stable-diffusion-v2-768-v"},
            ModelType.Main,
            B.StableDiffusion2,
            None,
            "v_prediction",
        ),
        ({"modelspec.architecture": "stable-diffusion-v2-512"}, ModelType.Main, B.StableDiffusion2, None, "epsilon"),
        (
            {"modelspec.architecture": "stable-diffusion-xl-v1-refiner"},
            ModelType.Main,
            B.StableDiffusionXLRefiner,
            None,
            None,
        ),
        (
            {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"},
            ModelType.LoRA,
            B.StableDiffusionXL,
            None,
            None,
        ),
        ({"modelspec.architecture": "stable-diffusion-v3-medium"}, ModelType.Main, B.StableDiffusion3, None, None),
        ({"modelspec.architecture": "Flux.1-schnell"}, ModelType.Main, B.Flux, "schnell", None),
        ({"modelspec.architecture": "flux-1-dev/lora"}, ModelType.LoRA, B.Flux, "dev", None),
        (
            {"modelspec.architecture": "stable-diffusion-v1/textual-inversion"},
            ModelType.TextualInversion,
            B.StableDiffusion1,
            None,
            None,
        ),
        (
            {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v2_768_v"},
            ModelType.LoRA,
            B.StableDiffusion2,
            None,
            "v_prediction",
        ),
        ({"ss_network_module": "networks.lora_flux"}, ModelType.LoRA, B.Flux, None, None),
        ({"modelspec.prediction_type": "v"}, None, None, None, "v_prediction"),
    ],
)
def test_read_declared(meta: dict[str, str], type_: Any, base: Any, variant: Any, pred: Any) -> None:
    d = read_declared(meta)
    assert (d.type, d.base, d.variant) == (type_, base, variant)
    assert d.prediction_type == (SchedulerPredictionType(pred) if pred else None)
    assert all(any(key in why for key in meta) for why in d.why.values())


def test_unrecognised_declarations_become_notes() -> None:
    d = read_declared({"modelspec.architecture": "wan-2_1/weird", "modelspec.prediction_type": "flow"})
    assert not d.any and len(d.notes) == 3


def _write(path: Path, header: dict[str, Any], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}, "invalid shape"),
        ({"dtype": "F16", "shape": [1.5], "data_offsets": [0, 2]}, "invalid shape"),
        ({"dtype": "F16", "shape": "4", "data_offsets": [0, 2]}, "invalid shape"),
        ({"dtype": 7, "shape": [1], "data_offsets": [0, 2]}, "unknown dtype"),
        ({"dtype": "F16", "shape": [1], "data_offsets": [0]}, "data_offsets"),
        ({"dtype": "F16", "shape": [1], "data_offsets": ["0", 2]}, "data_offsets"),
        ({"dtype": "F16", "shape": [1], "data_offsets": [2, 0]}, "data_offsets"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [0, 2]}, r"spans 2 bytes but F16\[2\] needs 4"),
        ([1, 2], "not an object"),
    ],
)
def test_reader_rejects_bad_entries(tmp_path: Path, entry: Any, message: str) -> None:
    path = _write(tmp_path / "x.safetensors", {"t": entry}, b"\0" * 8)
    with pytest.raises(InvalidSafetensorsError, match=message) as info:
        read_safetensors_header(path)
    assert str(path) in str(info.value)


def test_reader_result(tmp_path: Path) -> None:
    path = F.write_safetensors(tmp_path / "x.safetensors", {"a": (2, 3), "b": (4,)}, metadata={"k": "v"})
    h = read_safetensors_header(path)
    assert h.tensors["a"] == TensorInfo("F16", (2, 3), 0, 12) and h.tensors["b"].nbytes == 8
    assert h.metadata == {"k": "v"} and h.file_size == path.stat().st_size
    assert h.data_offset == 8 + h.header_len and h.shape("a") == (2, 3)
    with pytest.raises(AttributeError):
        h.tensors["a"].dtype = "F32"  # type: ignore[misc]
