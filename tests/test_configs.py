"""Record classes: the discriminated union, seed aliases, compatible bases, clear errors."""

from __future__ import annotations

import pytest

from modeldepot.configs import (
    CONFIG_CLASSES,
    LoRALyCORISConfig,
    MainCheckpointConfig,
    VAECheckpointConfig,
    apply_changes,
    parse_config,
)
from modeldepot.errors import InvalidModelConfigException
from modeldepot.taxonomy import BaseModelType, ModelType, ModelVariantType


def rec(**kw: object) -> dict[str, object]:
    return {"name": "m", "type": "main", "format": "checkpoint", "base": "sd-1", "path": "/m.safetensors", **kw}


def test_union_picks_the_class_and_makes_a_key() -> None:
    c = parse_config(rec())
    assert isinstance(c, MainCheckpointConfig)
    assert len(c.key) == 32 and int(c.key, 16) >= 0
    assert c.variant == ModelVariantType.Normal
    assert isinstance(parse_config(rec(type="lora", format="lycoris")), LoRALyCORISConfig)
    assert all(
        parse_config(rec(type=t.split(".")[0], format=t.split(".")[1])).__class__ is cls
        for t, cls in CONFIG_CLASSES.items()
    )


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
