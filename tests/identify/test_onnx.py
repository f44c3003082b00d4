"""ONNX exports of pipelines: identified as main/onnx with a base, recorded as ONNXSD*Config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.configs import ONNXConfig, ONNXSD1Config, ONNXSD2Config, ONNXSDXLConfig
from modeldepot.errors import LoaderNotFoundError
from modeldepot.identify import identify
from modeldepot.load import ModelLoadService
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType, SubModelType
from modeldepot.testing import factories as F
from modeldepot.testing.factories._folders import write_onnx_pipeline

from .identify_helpers import as_record, reason

S = SubModelType


@pytest.mark.parametrize(
    ("base", "layout", "expect", "cls", "why"),
    [
        ("sd-1", "diffusers", B.StableDiffusion1, ONNXSD1Config, "SD-1 is assumed"),
        ("sd-2", "diffusers", B.StableDiffusion2, ONNXSD2Config, "tokenizer pads with '!'"),
        ("sd-1", "optimum", B.StableDiffusion1, ONNXSD1Config, "cross_attention_dim 768"),
        ("sd-2", "optimum", B.StableDiffusion2, ONNXSD2Config, "cross_attention_dim 1024"),
        ("sdxl", "optimum", B.StableDiffusionXL, ONNXSDXLConfig, "cross_attention_dim 2048"),
        ("sdxl-refiner", "optimum", B.StableDiffusionXLRefiner, ONNXConfig, "cross_attention_dim 1280"),
    ],
)
def test_onnx_pipeline_is_main_onnx_with_its_base(
    tmp_path: Path, base: str, layout: str, expect: B, cls: type, why: str
) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", base, layout=layout)
    ident = identify(root)
    assert (ident.type, ident.format, ident.base) == (ModelType.Main, ModelFormat.ONNX, expect)
    assert ident.repo_variant == ModelRepoVariant.ONNX
    reason(ident, "format", "onnx")
    reason(ident, "base", why)
    assert {S.UNet, S.VAEDecoder, S.VAEEncoder} <= set(ident.submodels)
    record = as_record(ident, root)
    assert type(record) is cls and record.base == expect and record.format == ModelFormat.ONNX


def test_diffusers_export_is_known_by_its_pipeline_class(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-1")
    ident = identify(root)
    reason(ident, "format", "OnnxStableDiffusionPipeline")
    assert ident.confidence < 0.9  # nothing in the folder names the base: an assumption, said as one


def test_optimum_export_is_known_by_its_unet_file(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-1", layout="optimum")
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"  # the torch pipeline's own index
    reason(identify(root), "format", "unet/model.onnx")


def test_sd2_export_keeps_the_documented_defaults(tmp_path: Path) -> None:
    """The seed doc's ONNXSD2Config: v-prediction and upcast attention."""
    record = as_record(identify(write_onnx_pipeline(tmp_path / "onnx", "sd-2")), tmp_path / "onnx")
    assert isinstance(record, ONNXSD2Config)
    assert record.prediction_type == SchedulerPredictionType.VPrediction
    assert record.upcast_attention is True


def test_configs_say_what_an_sd2_base_export_needs(tmp_path: Path) -> None:
    """SD-2 base (512, epsilon) exported by optimum: its configs win over the class defaults."""
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-2", layout="optimum", prediction_type="epsilon")
    record = as_record(identify(root), root)
    assert isinstance(record, ONNXSD2Config)
    assert record.prediction_type == SchedulerPredictionType.Epsilon
    assert record.upcast_attention is False


def test_inpaint_export_variant_from_the_pipeline_class(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-1")
    index = json.loads((root / "model_index.json").read_text())
    index["_class_name"] = "OnnxStableDiffusionInpaintPipeline"
    (root / "model_index.json").write_text(json.dumps(index))
    ident = identify(root)
    assert ident.variant == "inpaint"
    reason(ident, "variant", "OnnxStableDiffusionInpaintPipeline")


def test_torch_pipeline_with_an_onnx_copy_beside_it_stays_diffusers(tmp_path: Path) -> None:
    root = F.write_diffusers_pipeline(tmp_path / "pipe", "sd-1")
    (root / "unet" / "model.onnx").write_bytes(b"onnx copy")
    assert identify(root).format == ModelFormat.Diffusers


def test_base_override_moves_the_record_to_that_base_class(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-1")
    ident = identify(root, {"base": "sd-2"})
    assert ident.base == B.StableDiffusion2
    assert isinstance(as_record(ident, root), ONNXSD2Config)


def test_loading_an_onnx_model_says_there_is_no_loader(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-2")
    record = as_record(identify(root), root)
    service = ModelLoadService(DepotConfig(home=tmp_path / "home"))
    with pytest.raises(LoaderNotFoundError, match="no loader for base=sd-2, type=main, format=onnx"):
        service.load_model(record, SubModelType.UNet)
    with pytest.raises(LoaderNotFoundError, match="format=onnx"):
        service.load_model(record)  # no submodel named: still "no loader", not "name the submodel"


def test_export_without_any_config_is_still_identified(tmp_path: Path) -> None:
    root = write_onnx_pipeline(tmp_path / "onnx", "sd-1")
    shutil.rmtree(root / "scheduler")
    shutil.rmtree(root / "tokenizer")
    ident = identify(root)
    assert (ident.format, ident.base) == (ModelFormat.ONNX, B.StableDiffusion1)
    assert ident.prediction_type is None
