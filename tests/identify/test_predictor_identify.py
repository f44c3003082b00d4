"""CLIP+MLP predictors (LAION's aesthetic-predictor layout): identified from their five linear layers,
as safetensors and as the released .pth pickles; other small MLPs are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.configs import ClipPredictorCheckpointConfig
from modeldepot.identify import explain, identify
from modeldepot.identify._rules_predictor import predictor_shapes
from modeldepot.taxonomy import BaseModelType as B
from modeldepot.taxonomy import ModelFormat, ModelType
from modeldepot.testing.factories import write_safetensors, write_torch_pickle

from .identify_helpers import as_record, reason

#: The key table of sac+logos+ava1-l14-linearMSE.pth (ViT-L/14 embeddings, 768 wide).
LAION_L14 = {
    "layers.0.weight": (1024, 768),
    "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024),
    "layers.2.bias": (128,),
    "layers.4.weight": (64, 128),
    "layers.4.bias": (64,),
    "layers.6.weight": (16, 64),
    "layers.6.bias": (16,),
    "layers.7.weight": (1, 16),
    "layers.7.bias": (1,),
}


def test_the_shape_table_is_the_released_one() -> None:
    assert predictor_shapes(768) == LAION_L14


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("sac+logos+ava1-l14-linearMSE.pth", None),  # torch.save(model.state_dict()), as released
        ("predictor.ckpt", "state_dict"),  # a Lightning checkpoint
        ("predictor.safetensors", None),
    ],
)
def test_laion_layout_is_a_clip_predictor(tmp_path: Path, name: str, wrap: str | None) -> None:
    path = tmp_path / name
    if path.suffix == ".safetensors":
        write_safetensors(path, LAION_L14)
    else:
        write_torch_pickle(path, {wrap: dict(LAION_L14), "epoch": 3} if wrap else dict(LAION_L14))
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (ModelType.ClipPredictor, ModelFormat.Checkpoint, B.Any)
    assert ident.compatible_bases == {B.Any}
    assert ident.extra["architecture"] == "CLIP+MLP predictor"
    assert ident.extra["embedding_dim"] == 768
    reason(ident, "type", "clip_predictor", "layers.0/2/4/6/7")
    reason(ident, "base", "any")
    reason(ident, "architecture", "768-wide")
    record = as_record(ident, path)
    assert isinstance(record, ClipPredictorCheckpointConfig)
    assert record.architecture == "CLIP+MLP predictor"


def test_embedding_width_comes_from_the_first_layer(tmp_path: Path) -> None:
    ident = identify(write_safetensors(tmp_path / "h14.safetensors", predictor_shapes(1024)))
    assert ident.type == ModelType.ClipPredictor
    assert ident.extra["embedding_dim"] == 1024
    reason(ident, "architecture", "1024-wide")


def test_explain_names_the_rule_and_the_layout(tmp_path: Path) -> None:
    text = explain(identify(write_safetensors(tmp_path / "p.safetensors", LAION_L14)))
    assert text.startswith("Verdict: clip_predictor / checkpoint / base any")
    assert "* clip_predictor: WON  -> clip_predictor / checkpoint / any" in text
    assert "architecture: CLIP+MLP predictor (768-wide CLIP image embedding" in text
    assert "embedding_dim=768" in text
    assert "- esrgan: no match" in text


@pytest.mark.parametrize(
    ("change", "why"),
    [
        # Another MLP of the same depth: other widths.
        ({"layers.2.weight": (256, 1024), "layers.2.bias": (256,)}, "layers.2.weight [256, 1024]"),
        ({"layers.7.weight": (10, 16), "layers.7.bias": (10,)}, "layers.7.weight [10, 16]"),
        ({"layers.0.weight": (512, 768), "layers.0.bias": (512,)}, "layers.0.weight [512, 768]"),
        # One more layer, one layer fewer, a 1-D first weight.
        ({"layers.8.weight": (1, 1)}, "1 other tensors: layers.8.weight"),
        ({"layers.7.weight": None, "layers.7.bias": None}, "without layers.7.weight, layers.7.bias"),
        ({"layers.0.weight": (1024,)}, "not a linear layer"),
    ],
)
def test_other_mlps_are_not_taken(tmp_path: Path, change: dict[str, tuple[int, ...] | None], why: str) -> None:
    shapes = {k: v for k, v in {**LAION_L14, **change}.items() if v is not None}
    ident = identify(write_safetensors(tmp_path / "mlp.safetensors", shapes))
    # Not "unknown" in every case: textual_inversion takes any table of < 10 small tensors.
    assert ident.type != ModelType.ClipPredictor
    (candidate,) = [c for c in ident.candidates if c.rule == "clip_predictor"]
    assert not candidate.matched
    assert any(why in r for r in candidate.reasons), candidate.reasons


def test_a_plain_mlp_with_other_names_is_not_taken(tmp_path: Path) -> None:
    shapes = {"net.0.weight": (1024, 768), "net.0.bias": (1024,), "net.2.weight": (1, 1024), "net.2.bias": (1,)}
    ident = identify(write_safetensors(tmp_path / "head.safetensors", shapes))
    assert ident.type != ModelType.ClipPredictor
    (candidate,) = [c for c in ident.candidates if c.rule == "clip_predictor"]
    assert candidate.reasons == ["no layers.0.weight key (CLIP+MLP predictor layout)"]
