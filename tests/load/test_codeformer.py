"""CodeFormer built from its weights: strict loads, hyperparameters read from shapes, a real forward."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldepot.errors import InvalidImageError

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from modeldepot.load._errors import ModelLoadError  # noqa: E402
from modeldepot.load.loaders._codeformer import (  # noqa: E402
    CodeFormerConfig,
    build_codeformer,
    codeformer_from_config,
    infer_codeformer_config,
    looks_like_codeformer,
)
from modeldepot.load.loaders._common import load_weights  # noqa: E402
from modeldepot.testing.factories._codeformer import (  # noqa: E402
    RELEASED,
    TINY_CODEFORMER,
    codeformer_shapes,
    write_codeformer,
)

pytestmark = pytest.mark.torch

# A second tiny shape: three levels, two res blocks each, attention on two levels, two fusions,
# and a transformer width (20) that 8 does not divide.
OTHER: dict[str, Any] = {
    "nf": 32,
    "ch_mult": (1, 1, 2),
    "res_blocks": 2,
    "attn_resolutions": (2, 8),
    "emb_dim": 8,
    "codebook_size": 12,
    "dim_embd": 20,
    "n_layers": 3,
    "latent_side": 2,
    "connect_list": ("4", "8"),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The models here are tiny: on a busy machine intra-op threads cost far more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Any]:
    """Seeded weights of a plausible scale (the factory's pickles hold zeros, which hide the fusion)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * (0.2 if len(s) > 1 else 0.5) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, Any]:
    return _random_weights(codeformer_shapes(**TINY_CODEFORMER))


@pytest.fixture(scope="module")
def tiny_model(tiny_sd: dict[str, Any]) -> Any:
    return build_codeformer({"params_ema": tiny_sd}, "tiny")


# -- loading -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["codeformer.pth", "codeformer.safetensors"])
def test_factory_file_builds_exactly(tmp_path: Path, name: str) -> None:
    path = write_codeformer(tmp_path / name, seed=3)
    sd = load_weights(path)
    if name.endswith(".pth"):
        assert all(k.startswith("params_ema.") for k in sd)  # the released file's wrapper, flattened
    assert looks_like_codeformer(sd)
    model = build_codeformer(sd, str(path))
    assert (model.arch, model.scale, model.out_size) == ("CodeFormer", 1, 8)
    assert not model.training
    params = dict(model.named_parameters())
    assert all(not p.is_meta and p.dtype == torch.float32 and not p.requires_grad for p in params.values())
    assert len(params) == len(sd)


@pytest.mark.parametrize("wrap", ["nested_ema", "nested_params", "flat_ema", "flat_params", "bare"])
def test_every_wrapper_gives_the_same_weights(tiny_sd: dict[str, Any], wrap: str) -> None:
    sd: dict[str, Any] = {
        "nested_ema": {"params_ema": tiny_sd},
        "nested_params": {"params": tiny_sd},
        "flat_ema": {f"params_ema.{k}": v for k, v in tiny_sd.items()},
        "flat_params": {f"params.{k}": v for k, v in tiny_sd.items()},
        "bare": dict(tiny_sd),
    }[wrap]
    loaded = build_codeformer(sd, "x").state_dict()
    assert loaded.keys() == tiny_sd.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_sd.items())


def test_ema_weights_win_over_raw_ones(tiny_sd: dict[str, Any]) -> None:
    raw = {k: torch.zeros_like(v) for k, v in tiny_sd.items()}
    model = build_codeformer({"params": raw, "params_ema": tiny_sd}, "x")
    assert torch.equal(model.position_emb, tiny_sd["position_emb"])


def test_missing_weight_is_named(tiny_sd: dict[str, Any]) -> None:
    sd = {k: v for k, v in tiny_sd.items() if k != "fuse_convs_dict.8.shift.2.bias"}
    with pytest.raises(
        ModelLoadError, match=r"tiny\.pth: .*CodeFormer.*1 missing keys: fuse_convs_dict\.8\.shift\.2\.bias"
    ):
        build_codeformer({"params_ema": sd}, "tiny.pth")


def test_missing_structural_weight_is_named(tiny_sd: dict[str, Any]) -> None:
    sd = {k: v for k, v in tiny_sd.items() if k != "position_emb"}
    with pytest.raises(ModelLoadError, match=r"missing key position_emb"):
        build_codeformer(sd, "tiny.pth")


def test_extra_and_misshapen_weights_are_named(tiny_sd: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError, match=r"1 unexpected keys: generator\.blocks\.99\.weight"):
        build_codeformer({**tiny_sd, "generator.blocks.99.weight": torch.zeros(1)}, "x")
    bad = {**tiny_sd, "feat_emb.bias": torch.zeros(31)}
    with pytest.raises(ModelLoadError, match=r"shape mismatches: feat_emb\.bias file \[31\] vs model \[32\]"):
        build_codeformer(bad, "x")


def test_partial_load_keeps_the_rest(tiny_sd: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    gone = ("fuse_convs_dict.8.shift.2.bias", "feat_emb.bias")
    sd = {k: v for k, v in tiny_sd.items() if k not in gone}
    with caplog.at_level(logging.WARNING):
        model = build_codeformer(sd, "x", partial=True)
    assert "partial load" in caplog.text and "2 missing keys: feat_emb.bias" in caplog.text
    assert torch.equal(model.idx_pred_layer[1].weight, tiny_sd["idx_pred_layer.1.weight"])
    assert not any(p.is_meta for p in model.parameters())


def test_other_architectures_are_refused() -> None:
    from modeldepot.testing.factories.torch_models import tiny_esrgan_state_dict

    esrgan = tiny_esrgan_state_dict(layout="new")
    assert not looks_like_codeformer(esrgan)
    with pytest.raises(ValueError, match="not a CodeFormer"):
        build_codeformer(esrgan, "x")
    # The plain VQGAN CodeFormer is trained from has no transformer: not a CodeFormer either.
    vqgan = [k for k in codeformer_shapes(**TINY_CODEFORMER) if k.split(".")[0] in ("encoder", "generator", "quantize")]
    assert not looks_like_codeformer(vqgan)
    assert looks_like_codeformer([*vqgan, "position_emb"])
    assert looks_like_codeformer([f"params_ema.{k}" for k in codeformer_shapes(**TINY_CODEFORMER)])


# -- hyperparameters -----------------------------------------------------------------------------
def test_tiny_configs_are_inferred() -> None:
    first = infer_codeformer_config(codeformer_shapes(**TINY_CODEFORMER))
    assert first == CodeFormerConfig(
        nf=32,
        ch_mult=(1, 2),
        res_blocks=1,
        attn_resolutions=(4,),
        emb_dim=16,
        codebook_size=16,
        dim_embd=32,
        dim_mlp=64,
        n_layers=2,
        n_head=8,
        latent_side=4,
        connect_list=("8",),
    )
    second = infer_codeformer_config({f"params_ema.{k}": v for k, v in codeformer_shapes(**OTHER).items()})
    assert (second.nf, second.ch_mult, second.res_blocks, second.attn_resolutions) == (32, (1, 1, 2), 2, (2, 8))
    assert (second.emb_dim, second.codebook_size, second.dim_embd, second.n_layers) == (8, 12, 20, 3)
    assert (second.latent_side, second.out_size, second.connect_list) == (2, 8, ("4", "8"))
    assert second.n_head == 5  # the largest divisor of 20 not above 8


def test_second_tiny_config_builds_and_runs() -> None:
    shapes = codeformer_shapes(**OTHER)
    model = build_codeformer(_random_weights(shapes, seed=1), "other")
    assert model.state_dict().keys() == shapes.keys()
    assert model.ft_layers[0].self_attn.num_heads == 5
    with torch.no_grad():
        out, logits, lq = model(torch.rand(1, 3, 8, 8) * 2 - 1, w=1.0)
    assert (out.shape, logits.shape, lq.shape) == ((1, 3, 8, 8), (1, 4, 12), (1, 8, 2, 2))
    assert torch.isfinite(out).all()


def test_released_key_set_gives_the_released_hyperparameters() -> None:
    """Header-only: the full-size names and shapes (no tensors) infer the released model."""
    from accelerate import init_empty_weights

    shapes = codeformer_shapes()
    # anchors read off sczhou/CodeFormer's architecture, independent of the factory's loops
    assert shapes["encoder.blocks.0.weight"] == (64, 3, 3, 3)
    assert shapes["encoder.blocks.24.weight"] == (256, 512, 3, 3)
    assert shapes["generator.blocks.24.weight"] == (3, 64, 3, 3)
    assert shapes["fuse_convs_dict.256.encode_enc.conv_out.weight"] == (128, 256, 1, 1)
    assert shapes["ft_layers.8.self_attn.in_proj_weight"] == (1536, 512)
    assert "idx_pred_layer.1.bias" not in shapes

    cfg = infer_codeformer_config({f"params_ema.{k}": v for k, v in shapes.items()})
    assert cfg == CodeFormerConfig.released()
    assert (cfg.dim_embd, cfg.n_head, cfg.n_layers, cfg.codebook_size) == (512, 8, 9, 1024)
    assert cfg.connect_list == RELEASED["connect_list"] == ("32", "64", "128", "256")
    assert cfg.out_size == 512
    with init_empty_weights():
        model = codeformer_from_config(cfg)
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert built == shapes
    assert sum(p.numel() for p in model.parameters()) == 94_112_707  # ~376 MB of float32, as released


# -- forward -----------------------------------------------------------------------------------------
def _face(seed: int = 0, batch: int = 2) -> Any:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_forward_shapes_and_determinism(tiny_model: Any, tiny_sd: dict[str, Any]) -> None:
    x = _face()
    with torch.no_grad():
        out, logits, lq_feat = tiny_model(x)
        again = tiny_model(x)[0]
        other = build_codeformer(dict(tiny_sd), "again")(x)[0]
    assert out.shape == (2, 3, 8, 8)
    assert logits.shape == (2, 16, 16)  # batch, latent positions (4x4), codebook entries
    assert lq_feat.shape == (2, 16, 4, 4)
    assert torch.isfinite(out).all()
    assert torch.equal(out, again) and torch.equal(out, other)
    with torch.no_grad():
        code_logits, code_lq = tiny_model(x, code_only=True)
    assert torch.equal(code_logits, logits) and torch.equal(code_lq, lq_feat)


def test_fidelity_weight_mixes_in_the_encoder(tiny_sd: dict[str, Any]) -> None:
    x = _face(1)
    model = build_codeformer(dict(tiny_sd), "x")
    with torch.no_grad():
        at0, at_half, at1 = (model(x, w=w)[0] for w in (0.0, 0.5, 1.0))
        assert not torch.allclose(at0, at1) and not torch.allclose(at_half, at1)
        # w=0 skips the fusion blocks: wiping them changes nothing there, and everything at w=1
        for p in model.fuse_convs_dict.parameters():
            p.zero_()
        assert torch.equal(model(x, w=0.0)[0], at0)
        assert not torch.allclose(model(x, w=1.0)[0], at1)


def test_generator_decodes_the_predicted_codes(tiny_sd: dict[str, Any]) -> None:
    """The decoder sees codebook entries picked by the logits, not the encoder latent."""
    x = _face(2, batch=1)
    model = build_codeformer(dict(tiny_sd), "x")
    with torch.no_grad():
        out, logits, _ = model(x, w=0.0)
        used = set(logits.argmax(dim=2).flatten().tolist())
        unused = sorted(set(range(16)) - used)
        assert unused, "the tiny model happens to use every code"
        book = model.quantize.embedding.weight
        book[unused] += 5.0
        assert torch.equal(model(x, w=0.0)[0], out)
        book[min(used)] += 5.0
        assert not torch.allclose(model(x, w=0.0)[0], out)


def test_adain_matches_colour_statistics(tiny_model: Any) -> None:
    x = _face(3)
    with torch.no_grad():
        plain = tiny_model(x, w=0.0)[0]
        matched = tiny_model(x, w=0.0, adain=True)[0]
    assert not torch.allclose(plain, matched)


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (1, 1, 8, 8), (3, 8, 8)])
def test_wrong_input_is_refused(tiny_model: Any, shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImageError, match=r"CodeFormer takes \(batch, 3, 8, 8\) images"):
        tiny_model(torch.zeros(shape))


# -- through the manager -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["codeformer.pth", "codeformer.safetensors"])
def test_manager_loads_the_factory_file(tmp_path: Path, name: str) -> None:
    from modeldepot import ModelManager

    path = write_codeformer(tmp_path / "src" / name, seed=5)
    with ModelManager.open(home=tmp_path / "home") as mm:
        key = mm.install.register_path(path)
        config = mm.store.get_model(key)
        assert (config.type.value, config.format.value) == ("spandrel_image_to_image", "checkpoint")
        model = mm.load_model_by_key(key).model
    assert type(model).__name__ == "CodeFormer" and model.arch == "CodeFormer" and model.out_size == 8
    assert dict(model.named_parameters()).keys() == codeformer_shapes(**TINY_CODEFORMER).keys()
