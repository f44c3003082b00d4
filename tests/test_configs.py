"""Record classes: the discriminated union, seed aliases, compatible bases, clear errors."""

from __future__ import annotations

import pytest

from modeldepot.configs import (
    CONFIG_CLASSES,
    LoRALyCORISConfig,
    MainCheckpointConfig,
    ONNXConfig,
    ONNXSD1Config,
    ONNXSD2Config,
    ONNXSDXLConfig,
    VAECheckpointConfig,
    apply_changes,
    class_for,
    parse_config,
)
from modeldepot.errors import InvalidModelConfigException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType, ModelVariantType, SchedulerPredictionType


def rec(**kw: object) -> dict[str, object]:
    return {"name": "m", "type": "main", "format": "checkpoint", "base": "sd-1", "path": "/m.safetensors", **kw}


def test_union_picks_the_class_and_makes_a_key() -> None:
    c = parse_config(rec())
    assert isinstance(c, MainCheckpointConfig)
    assert len(c.key) == 32 and int(c.key, 16) >= 0
    assert c.variant == ModelVariantType.Normal
    assert isinstance(parse_config(rec(type="lora", format="lycoris")), LoRALyCORISConfig)
    for tag, cls in CONFIG_CLASSES.items():
        type_, format_, *base = tag.split(".")  # ONNX tags also name the base
        data = rec(type=type_, format=format_, base=base[0] if base else "sd-1")
        if tag == "main.onnx":
            data["base"] = "sdxl-refiner"  # the generic ONNX class: a base without its own class
        assert parse_config(data).__class__ is cls, tag


def test_seed_aliases_are_accepted() -> None:
    c = parse_config(
        {"name": "v", "model_type": "vae", "model_format": "checkpoint", "base_model": "sd-1", "path": "/v"}
    )
    assert isinstance(c, VAECheckpointConfig) and c.base_model == BaseModelType.StableDiffusion1
    assert c.model_type == ModelType.VAE


def test_compatible_bases_always_include_base() -> None:
    c = parse_config(rec(type="vae", compatible_bases=["sd-2"]))
    assert c.compatible_bases == {BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2}
    assert c.is_compatible_with("sd-2") and not c.is_compatible_with("sdxl")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (rec(base="sd-9"), "base"),
        (rec(type="main", format="lycoris"), "type"),
        ({"name": "x", "format": "checkpoint", "base": "sd-1", "path": "/p"}, "type"),
        (rec(path=""), "path"),
        (rec(variant="weird"), "variant"),
        (rec(bogus_field=1), "bogus_field"),
    ],
)
def test_invalid_records_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidModelConfigException) as err:
        parse_config(data)
    assert err.value.field is not None and field in err.value.field


def test_apply_changes_revalidates_and_drops_stale_fields() -> None:
    c = parse_config(rec(variant="inpaint"))
    lora = apply_changes(c, {"model_type": "lora", "model_format": "lycoris"})
    assert isinstance(lora, LoRALyCORISConfig) and not hasattr(lora, "variant") and lora.key == c.key
    with pytest.raises(InvalidModelConfigException):
        apply_changes(c, {"key": "0" * 32})
    with pytest.raises(InvalidModelConfigException):
        apply_changes(c, {"base": "nope"})


# ---- the seed doc's spellings (issue 14) --------------------------------------------------------


def test_checkpoint_config_field_is_accepted_as_config() -> None:
    """Seed doc: CheckpointConfig's ``config`` is the path to the checkpoint's config file."""
    c = parse_config(rec(config="configs/stable-diffusion/v1-inference.yaml"))
    assert isinstance(c, MainCheckpointConfig)
    assert c.config == c.config_path == "configs/stable-diffusion/v1-inference.yaml"
    assert c.model_dump()["config_path"] == "configs/stable-diffusion/v1-inference.yaml"
    assert "config" not in c.model_dump() and '"config_path"' in c.model_dump_json()
    direct = VAECheckpointConfig(name="v", base=BaseModelType.StableDiffusion1, path="/v", config="v.yaml")
    assert direct.config_path == "v.yaml"
    direct.config = "other.yaml"
    assert direct.config_path == "other.yaml"


def test_config_alias_in_changes_and_conflicts() -> None:
    c = parse_config(rec(config_path="a.yaml"))
    assert apply_changes(c, {"config": "b.yaml"}).config_path == "b.yaml"
    with pytest.raises(InvalidModelConfigException) as err:
        parse_config(rec(config_path="a.yaml", config="b.yaml"))
    assert err.value.field == "config"
    with pytest.raises(InvalidModelConfigException):
        parse_config(rec(type="lora", format="lycoris", config="a.yaml"))  # no config file for a LoRA


def test_onnx_sd2_config_has_the_documented_fields() -> None:
    """Seed doc: ONNXSD2Config carries prediction_type and upcast_attention."""
    c = ONNXSD2Config(name="sd2-onnx", path="/m/sd2-onnx")
    assert (c.type, c.format, c.base) == (ModelType.Main, ModelFormat.ONNX, BaseModelType.StableDiffusion2)
    assert c.prediction_type == SchedulerPredictionType.VPrediction and c.upcast_attention is True
    again = parse_config(c.model_dump(mode="json"))
    assert isinstance(again, ONNXSD2Config) and again == c


@pytest.mark.parametrize(
    ("base", "cls"),
    [("sd-1", ONNXSD1Config), ("sd-2", ONNXSD2Config), ("sdxl", ONNXSDXLConfig), ("unknown", ONNXConfig)],
)
def test_onnx_records_pick_their_class_by_base(base: str, cls: type) -> None:
    c = parse_config({"name": "o", "model_type": "main", "model_format": "onnx", "base_model": base, "path": "/o"})
    assert type(c) is cls and c.base == BaseModelType(base)
    assert class_for("main", "onnx", base) is cls


def test_onnx_record_without_a_base_names_the_field() -> None:
    with pytest.raises(InvalidModelConfigException) as err:
        parse_config({"name": "o", "type": "main", "format": "onnx", "path": "/o"})
    assert err.value.field == "base"


def test_onnx_update_of_the_base_changes_the_class() -> None:
    c = parse_config({"name": "o", "type": "main", "format": "onnx", "base": "sd-1", "path": "/o"})
    moved = apply_changes(c, {"base": "sd-2"})
    assert isinstance(moved, ONNXSD2Config) and moved.key == c.key


def test_generic_onnx_class_refuses_a_base_with_its_own_class() -> None:
    with pytest.raises(ValueError, match="ONNXSD2Config"):
        ONNXConfig(name="o", base=BaseModelType.StableDiffusion2, path="/o")
