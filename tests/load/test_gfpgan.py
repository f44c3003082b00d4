"""GFPGAN face restorers: identified, loaded exactly through the upscaler loader, and run on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.config import DepotConfig  # noqa: E402
from modeldepot.identify import identify  # noqa: E402
from modeldepot.load import ModelCache, ModelLoadService  # noqa: E402
from modeldepot.load._errors import ModelLoadError  # noqa: E402
from modeldepot.load.loaders._gfpgan import GFPGAN, GfpganShape, build_gfpgan, looks_like_gfpgan  # noqa: E402
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType  # noqa: E402
from modeldepot.testing.factories._face import GFPGAN_RELEASE_CHANNELS, gfpgan_shapes, write_gfpgan  # noqa: E402
from modeldepot.testing.factories._writers import write_safetensors, write_weights  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def svc(depot_config: DepotConfig) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30))


def _random_sd(seed: int = 0, **shape_kw: Any) -> dict[str, Any]:
    """Random weights under the factory's (real) key names; noise strengths non-zero so noise matters."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(s, generator=gen) * (0.5 if k.endswith(".weight") and s == (1,) else 0.1)
        for k, s in gfpgan_shapes(**shape_kw).items()
    }


def _face(size: int = 32, batch: int = 1) -> Any:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "gfpgan.safetensors"])
def test_factory_file_identifies_and_loads(svc: ModelLoadService, mkcfg: Any, tmp_path: Path, name: str) -> None:
    path = write_gfpgan(tmp_path / name)
    ident = identify(path)
    assert (ident.type, ident.format, ident.base) == (
        ModelType.SpandrelImageToImage,
        ModelFormat.Checkpoint,
        BaseModelType.Any,
    )
    assert ident.extra["architecture"] == "GFPGAN" and ident.extra["out_size"] == 32
    model = svc.load_model(mkcfg(path, type="spandrel_image_to_image", format="checkpoint", base="any")).model
    assert isinstance(model, GFPGAN)
    assert (model.arch, model.scale, model.out_size) == ("GFPGAN", 1, 32)
    assert model.hparams.sft_half and model.hparams.different_w
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert model(_face()).shape == (1, 3, 32, 32)


def test_loaded_model_restores_deterministically(svc: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    sd = _random_sd()
    path = tmp_path / "gfpgan.safetensors"
    save_file({f"params_ema.{k}": v for k, v in sd.items()}, str(path))
    model = svc.load_model(mkcfg(path, type="spandrel_image_to_image", format="checkpoint", base="any")).model
    x = _face(batch=2)
    with torch.no_grad():
        out = model(x)
        again = model(x)
        direct = build_gfpgan(sd)(x)
        noisy = model(x, randomize_noise=True)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert torch.equal(out, again)  # the stored noise maps, not fresh noise
    assert torch.allclose(out, direct)
    assert not torch.allclose(out, noisy)  # fresh noise does change the result
    assert not torch.allclose(out[0], out[1])  # the image matters


def test_gfpgan_style_call_returns_the_tuple() -> None:
    model = build_gfpgan({"params_ema": _random_sd()})
    x = _face()
    with torch.no_grad():
        image, rgbs = model(x, return_rgb=True, weight=0.5)
        only, none = model(x, return_rgb=False)
    assert torch.equal(image, only) and none == []
    assert [tuple(r.shape) for r in rgbs] == [(1, 3, s, s) for s in (8, 16, 32)]
    with pytest.raises(ValueError, match=r"\(batch, 3, 32, 32\), got \(1, 3, 16, 16\)"):
        model(_face(16))


def test_modulated_conv_matches_per_sample_kernels() -> None:
    # The loader scales activations instead of building one kernel per sample; check that against
    # the textbook form (kernel * style, demodulated, one grouped convolution).
    from modeldepot.load.loaders._gfpgan import _ModConv

    torch.manual_seed(0)
    conv = _ModConv(4, 6, 3, 5, demodulate=True, upsample=False)
    x, style = torch.randn(2, 4, 7, 7), torch.randn(2, 5)
    with torch.no_grad():
        s = conv.modulation(style)
        w = conv.weight * s[:, None, :, None, None]  # (b, out, in, k, k)
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
        ref = torch.nn.functional.conv2d(x.reshape(1, 8, 7, 7), w.reshape(12, 4, 3, 3), padding=1, groups=2)
        assert torch.allclose(conv(x, style), ref.reshape(2, 6, 7, 7), atol=1e-5)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            {"out_size": 32, "channels": 8},
            GfpganShape(32, (4, 4, 4, 2), (8, 8, 8, 4), num_style_feat=16, num_mlp=8),
        ),
        (
            {
                "out_size": 16,
                "channels": {4: 6, 8: 4, 16: 2},
                "num_style_feat": 8,
                "num_mlp": 2,
                "sft_half": False,
                "different_w": False,
            },
            GfpganShape(16, (3, 2, 1), (6, 4, 2), num_style_feat=8, num_mlp=2, sft_half=False, different_w=False),
        ),
    ],
)
def test_hyperparameters_come_from_the_shapes(kw: dict[str, Any], expected: GfpganShape) -> None:
    model = build_gfpgan(_random_sd(**kw))
    assert model.hparams == expected and model.out_size == expected.out_size
    with torch.no_grad():
        out = model(_face(expected.out_size))
    assert out.shape == (1, 3, expected.out_size, expected.out_size) and torch.isfinite(out).all()


def test_missing_and_extra_keys_are_named(svc: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    path = write_gfpgan(tmp_path / "gfpgan.safetensors")
    sd = load_file(str(path))
    del sd["stylegan_decoder.noises.noise3"]
    save_file(sd, str(tmp_path / "missing.safetensors"))
    cfg = mkcfg(tmp_path / "missing.safetensors", type="spandrel_image_to_image", format="checkpoint", base="any")
    with pytest.raises(ModelLoadError, match=r"GFPGAN face restorer: 1 missing keys: stylegan_decoder\.noises\.noise3"):
        svc.load_model(cfg)
    sd = load_file(str(path)) | {"toRGB.9.weight": torch.zeros(3, 2, 1, 1)}
    with pytest.raises(ModelLoadError, match=r"1 unexpected keys: toRGB\.9\.weight"):
        build_gfpgan(sd, "extra.safetensors")
    sd = load_file(str(path))
    sd["final_conv.bias"] = torch.zeros(5)
    with pytest.raises(ModelLoadError, match=r"shape mismatches: final_conv\.bias file \[5\] vs model \[4\]"):
        build_gfpgan(sd, "bad.safetensors", partial=True)  # partial forgives gaps, never wrong shapes
    sd = load_file(str(path))
    del sd["final_conv.weight"]  # a key the shapes are read from: still named, not a KeyError
    with pytest.raises(ModelLoadError, match=r"missing key final_conv\.weight"):
        build_gfpgan(sd, "nofinal.safetensors")


def test_partial_load_keeps_what_the_file_has(tmp_path: Path) -> None:
    sd = _random_sd()
    del sd["condition_shift.0.2.bias"]
    model = build_gfpgan(sd, partial=True)
    assert torch.equal(model.state_dict()["final_conv.weight"], sd["final_conv.weight"])


def test_unsupported_architecture_lists_the_built_in_ones(svc: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    path = write_weights(tmp_path / "mystery.safetensors", {"head.weight": (4, 4)}, wrap=None)
    cfg = mkcfg(path, type="spandrel_image_to_image", format="checkpoint", base="any")
    with pytest.raises(
        ModelLoadError, match=r"unsupported image-to-image architecture \(built in: ESRGAN/RRDBNet, GFPGAN"
    ):
        svc.load_model(cfg)


def test_released_key_set_identifies_and_builds(tmp_path: Path) -> None:
    shapes = gfpgan_shapes(512, channels=GFPGAN_RELEASE_CHANNELS, num_style_feat=512)
    # Facts of GFPGAN's GFPGANv1Clean(out_size=512, channel_multiplier=2, different_w=True,
    # sft_half=True), the architecture of GFPGANv1.3/1.4.pth (348.6 MB of float32 weights).
    assert (len(shapes), sum(math.prod(s) for s in shapes.values())) == (285, 87_143_276)
    assert shapes["final_linear.weight"] == (16 * 512, 256 * 16)
    assert shapes["condition_scale.6.2.weight"] == (32, 32, 3, 3)  # 512 px: half of the 64 decoder channels
    assert looks_like_gfpgan(f"params_ema.{k}" for k in shapes)
    ident = identify(write_safetensors(tmp_path / "GFPGANv1.4.safetensors", shapes))
    assert ident.type == ModelType.SpandrelImageToImage and ident.extra["architecture"] == "GFPGAN"
    assert (ident.extra["out_size"], ident.extra["num_style_feat"], ident.extra["sft_half"]) == (512, 512, True)
    model = build_gfpgan({k: torch.empty(s, device="meta") for k, s in shapes.items()}, "GFPGANv1.4")
    assert model.hparams == GfpganShape.released() and model.out_size == 512


def test_not_a_gfpgan_is_a_value_error() -> None:
    assert not looks_like_gfpgan(["conv_first.weight", "body.0.rdb1.conv1.weight"])
    with pytest.raises(ValueError, match="not a GFPGAN state dict"):
        build_gfpgan({"conv_first.weight": torch.zeros(1)})


def test_model_manager_registers_and_loads_gfpgan(tmp_path: Path) -> None:
    path = write_gfpgan(tmp_path / "GFPGANv1.4.pth")
    with ModelManager.open(home=tmp_path / "home") as mm:
        key = mm.install.register_path(path)
        record = mm.store.get_model(key)
        assert (record.type, getattr(record, "architecture", None)) == (ModelType.SpandrelImageToImage, "GFPGAN")
        with mm.load_model_by_key(key) as model:
            assert isinstance(model, GFPGAN) and model.out_size == 32


def test_codeformer_files_are_dispatched_to_codeformer(svc: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    factory = pytest.importorskip("modeldepot.testing.factories._codeformer")  # written beside this one
    path = factory.write_codeformer(tmp_path / "codeformer.pth")
    model = svc.load_model(mkcfg(path, type="spandrel_image_to_image", format="checkpoint", base="any")).model
    assert model.arch == "CodeFormer" and not isinstance(model, GFPGAN)
