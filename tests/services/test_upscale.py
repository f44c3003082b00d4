"""Upscaler: ESRGAN-family networks at their scale, in feathered tiles equal to one untiled pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.load.loaders._gfpgan import build_gfpgan  # noqa: E402
from modeldepot.load.loaders._rrdbnet import build_rrdbnet  # noqa: E402
from modeldepot.managers import ManagedModel  # noqa: E402
from modeldepot.services.base import BoundModel  # noqa: E402
from modeldepot.services.upscale import Upscaler, _cores, upscale_tensor  # noqa: E402
from modeldepot.testing.factories import write_gfpgan, write_vae  # noqa: E402
from modeldepot.testing.factories._face import gfpgan_shapes  # noqa: E402
from modeldepot.testing.factories.torch_models import tiny_esrgan, tiny_esrgan_state_dict  # noqa: E402

pytestmark = pytest.mark.torch


def _net(*, seed: int = 10, nb: int = 1, scale: int = 4, unshuffle: int = 1, nf: int = 8, gc: int = 4) -> Any:
    """A factory RRDBNet with its weights tripled: outputs of order 1 (the factory's are ~0.01), so
    tiling errors are not hidden by a near-black output. ``unshuffle`` 2 makes a Real-ESRGAN x2plus-
    style net (pixel-unshuffled 12-channel input, two up-convs: x2)."""
    sd = tiny_esrgan_state_dict(seed, nf=nf, nb=nb, gc=gc, scale=4 if unshuffle > 1 else scale, layout="basicsr")
    if unshuffle > 1:
        gen = torch.Generator().manual_seed(seed)
        sd["conv_first.weight"] = torch.randn(nf, 3 * unshuffle**2, 3, 3, generator=gen) * 0.05
    return build_rrdbnet({k: v * 3 if k.endswith("weight") else v for k, v in sd.items()}).eval()


def _radius(nb: int, unshuffle: int = 1) -> int:
    """Input pixels an output pixel depends on either side, rounded up: conv_first, 15 convs per RRDB
    and conv_body at the network's own resolution, then at most one more pixel for the up-convs, the
    nearest upsampling and conv_hr / conv_last at the higher resolutions."""
    return (1 + 15 * nb + 1 + 3) * unshuffle


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


class _Recorder(torch.nn.Module):
    """Wraps a network and records the shape of every tile it is fed."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net, self.scale, self.unshuffle = net, net.scale, net.unshuffle
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: Any) -> Any:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


@pytest.fixture
def depot(tmp_path: Path) -> Iterator[ModelManager]:
    mm = ModelManager.open(home=tmp_path / "home")
    yield mm
    mm.close()


@pytest.mark.parametrize(("scale", "size", "want"), [(4, (37, 23), (148, 92)), (2, (37, 23), (74, 46))])
def test_output_is_scale_times_the_input(scale: int, size: tuple[int, int], want: tuple[int, int]) -> None:
    up = Upscaler(_net(scale=scale))
    assert up.scale == scale
    out = up(_image(*size))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == want


def test_unshuffling_net_takes_odd_sizes() -> None:
    up = Upscaler(_net(unshuffle=2))
    assert (up.scale, up.multiple) == (2, 2)
    assert up(_image(33, 21)).size == (66, 42)  # padded to whole 2x2 blocks inside, cropped back


def test_outscale_is_a_lanczos_resize_of_the_model_output() -> None:
    up = Upscaler(_net())
    image = _image(37, 23)
    native = up(image)
    assert up(image, outscale=4).tobytes() == native.tobytes()
    assert up(image, outscale=4.0).size == native.size
    half_up = up(image, outscale=1.5)
    assert half_up.size == (56, 35)  # 55.5 and 34.5 round half up
    assert half_up.tobytes() == native.resize((56, 35), Image.Resampling.LANCZOS).tobytes()
    assert up(image, outscale=1).size == image.size
    assert up(image, outscale=0.01).size == (1, 1)  # never below one pixel


def test_values_in_range_and_deterministic() -> None:
    up = Upscaler(_net())
    image = _image(40, 30, seed=3)
    raw = up.upscale_tensor(image, tile=0)
    assert raw.dtype == torch.float32 and raw.shape == (1, 3, 120, 160) and torch.isfinite(raw).all()
    assert raw.min() < 0 or raw.max() > 1  # the net overshoots: the image must clamp, not wrap around
    out = up(image, tile=0)
    expected = raw[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(out), expected)
    assert up(image, tile=0).tobytes() == out.tobytes()
    assert Upscaler(_net())(image, tile=0).tobytes() == out.tobytes()  # same weights, another instance
    assert Upscaler(_net(seed=11))(image, tile=0).tobytes() != out.tobytes()  # the weights matter


@pytest.mark.parametrize(("unshuffle", "size"), [(1, (200, 150)), (2, (183, 99))])
def test_tiled_equals_untiled_when_the_overlap_covers_the_receptive_field(
    unshuffle: int, size: tuple[int, int]
) -> None:
    net = _Recorder(_net(unshuffle=unshuffle))
    up = Upscaler(net)
    overlap = 2 * _radius(1, unshuffle)  # blending uses the central half of the overlap
    tile = 2 * overlap + 16
    image = _image(*size, seed=1)
    whole = up.upscale_tensor(image, tile=0)
    net.shapes.clear()
    tiled = up.upscale_tensor(image, tile=tile, overlap=overlap)
    assert len(net.shapes) >= 2  # it did tile
    assert all(s[2] < size[1] + unshuffle or s[3] < size[0] + unshuffle for s in net.shapes)
    assert whole.abs().max() > 0.5
    assert (tiled - whole).abs().max() < 1e-4


def test_small_overlap_feathers_without_a_seam() -> None:
    """With too little context tiles differ from the untiled pass; feathering spreads that difference
    over the overlap instead of leaving a step at the tile boundary."""
    net = _net()
    x = torch.from_numpy(np.asarray(_image(96, 64, seed=2), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    tile, overlap, s = 32, 4, 4
    with torch.inference_mode():
        whole = upscale_tensor(net, x, scale=s, tile=0, overlap=0)
        feathered = upscale_tensor(net, x, scale=s, tile=tile, overlap=overlap)
        cut = upscale_tensor(net, x, scale=s, tile=tile, overlap=overlap, blend=False)

    def seams(out: Any) -> list[tuple[float, float]]:
        """(step of the error across each tile boundary, largest error in that boundary's overlap)."""
        err = out - whole
        found = []
        for axis, length in ((3, 96), (2, 64)):
            for _, b in _cores(length, tile, 1)[:-1]:
                step = (err.narrow(axis, b * s, 1) - err.narrow(axis, b * s - 1, 1)).abs().max()
                band = err.narrow(axis, (b - overlap) * s, 2 * overlap * s).abs().max()
                found.append((float(step), float(band)))
        return found

    feathered_seams, cut_seams = seams(feathered), seams(cut)
    assert len(feathered_seams) == 3  # 3 x 2 tiles: two vertical boundaries and one horizontal
    assert max(band for _, band in feathered_seams) > 1e-2  # the overlap really is too small
    assert all(step <= 0.75 * band for step, band in feathered_seams)
    # The same tiles cut hard at the boundary do leave steps as large as the error itself.
    assert max(step / band for step, band in cut_seams) > 0.9


def test_large_image_runs_in_bounded_tiles() -> None:
    net = _Recorder(_net(nf=4, gc=2, scale=2))
    up = Upscaler(net)
    out = up(_image(1024, 768, seed=4), tile=128, overlap=16)
    assert out.size == (2048, 1536)
    assert len(net.shapes) == 8 * 6
    assert max(s[2] for s in net.shapes) <= 128 + 2 * 16 and max(s[3] for s in net.shapes) <= 128 + 2 * 16
    assert min(s[2] for s in net.shapes) == 128 + 16  # edge tiles: context only on the inner side


def test_tile_zero_and_images_smaller_than_a_tile_run_in_one_pass() -> None:
    net = _Recorder(_net())
    up = Upscaler(net)
    up(_image(50, 40), tile=0, overlap=100)
    up(_image(50, 40), tile=64, overlap=16)
    assert net.shapes == [(1, 3, 40, 50), (1, 3, 40, 50)]


def test_argument_errors() -> None:
    up = Upscaler(_net())
    image = _image(20, 20)
    for kwargs in ({"tile": -1}, {"overlap": -1}, {"tile": 1.5}, {"tile": 64, "overlap": 32}, {"tile": 10}):
        with pytest.raises(ServiceInputError, match=r"tile|overlap"):
            up(image, **kwargs)
    up(image, tile=64, overlap=31)  # just under half a tile is fine
    for outscale in (0, -2, float("nan"), float("inf"), "2", True):
        with pytest.raises(ServiceInputError, match="outscale"):
            up(image, outscale=outscale)
    with pytest.raises(InvalidImageError, match="PIL image"):
        up(np.zeros((8, 8, 3), dtype=np.uint8))  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match=r"at least 1[x\u00d7]1"):
        up(Image.new("RGB", (0, 5)))
    with pytest.raises(InvalidImageError, match=r"1[x\u00d7]1 px; it must be at least 2[x\u00d7]2"):
        Upscaler(_net(unshuffle=2))(Image.new("RGB", (1, 1)))
    assert up(Image.new("RGBA", (3, 2))).mode == "RGB"  # alpha is dropped, not an error


def test_modules_that_are_not_upscalers_are_refused() -> None:
    gfpgan = build_gfpgan({k: torch.zeros(s) for k, s in gfpgan_shapes(32, channels=8, num_style_feat=16).items()})
    with pytest.raises(WrongModelTypeError, match="GFPGAN face restorer; use FaceRestorer"):
        Upscaler(gfpgan)
    with pytest.raises(WrongModelTypeError, match="failed on a 1x3x16x16 image"):
        Upscaler(torch.nn.Linear(4, 4))
    with pytest.raises(WrongModelTypeError, match="not a torch image-to-image network"):
        Upscaler("esrgan.pth")
    with pytest.raises(WrongModelTypeError, match="not an RGB image"):
        Upscaler(torch.nn.Conv2d(3, 1, 3, padding=1))


def test_a_bare_module_without_scale_is_measured() -> None:
    net = torch.nn.Sequential(torch.nn.Upsample(scale_factor=3, mode="nearest"), torch.nn.Conv2d(3, 3, 3, padding=1))
    up = Upscaler(net)
    assert up.scale == 3
    assert up(_image(10, 7)).size == (30, 21)


def test_a_record_of_another_type_is_refused(tmp_path: Path) -> None:
    vae = write_vae(tmp_path / "vae.safetensors")
    from modeldepot.configs import parse_config

    record = parse_config({"name": "my-vae", "type": "vae", "format": "checkpoint", "base": "sd-1", "path": str(vae)})
    with pytest.raises(WrongModelTypeError, match="it is a vae model; Upscaler takes spandrel_image_to_image") as err:
        Upscaler(BoundModel(_net(), record))
    assert err.value.key == record.key and err.value.expected == ("spandrel_image_to_image",)


def test_from_key_loads_through_the_depot(depot: ModelManager, tmp_path: Path) -> None:
    path = tiny_esrgan(tmp_path / "tiny-x4.pth")
    key = depot.install.register_path(path)
    up = Upscaler.from_key(depot, key)
    assert up.bound.key == key and up.scale == 4 and len(up.bound.entries) == 1
    image = _image(24, 16)
    out = up(image, tile=0)
    assert out.size == (96, 64)
    direct = Upscaler(build_rrdbnet(torch.load(path, weights_only=True)))(image, tile=0)
    assert out.tobytes() == direct.tobytes()
    assert repr(up) == "Upscaler('tiny-x4')"
    # what load_model_by_key and a manager hand out work too
    assert Upscaler(depot.load_model_by_key(key))(image).tobytes() == out.tobytes()
    loaded = depot.load_model_by_key(key)
    record = depot.store.get_model(key)
    managed = ManagedModel(key, "esrgan", loaded.model, "cpu", "float32", record, parts={"model": loaded})
    assert Upscaler(managed)(image).tobytes() == out.tobytes()


def test_from_key_refuses_a_vae_and_a_face_restorer(depot: ModelManager, tmp_path: Path) -> None:
    vae_key = depot.install.register_path(write_vae(tmp_path / "vae.safetensors"))
    with pytest.raises(WrongModelTypeError, match="it is a vae model") as err:
        Upscaler.from_key(depot, vae_key)
    assert err.value.key == vae_key
    face_key = depot.install.register_path(write_gfpgan(tmp_path / "GFPGANv1.4.safetensors", seed=1))
    with pytest.raises(WrongModelTypeError, match="GFPGAN face restorer; use FaceRestorer") as err:
        Upscaler.from_key(depot, face_key)
    assert err.value.key == face_key
