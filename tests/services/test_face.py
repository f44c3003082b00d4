"""FaceRestorer: GFPGAN and CodeFormer on aligned crops and on the faces a detector finds."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # CodeFormer is built on the meta device

from safetensors.torch import save_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.configs import parse_config  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.load.loaders._codeformer import build_codeformer  # noqa: E402
from modeldepot.load.loaders._gfpgan import build_gfpgan  # noqa: E402
from modeldepot.load.loaders._rrdbnet import build_rrdbnet  # noqa: E402
from modeldepot.services.face import FaceRestorer, face_square  # noqa: E402
from modeldepot.testing.factories import write_vae  # noqa: E402
from modeldepot.testing.factories._codeformer import TINY_CODEFORMER, codeformer_shapes  # noqa: E402
from modeldepot.testing.factories._face import gfpgan_shapes  # noqa: E402
from modeldepot.testing.factories.torch_models import tiny_esrgan, tiny_esrgan_state_dict  # noqa: E402

pytestmark = pytest.mark.torch

#: A 512 px GFPGAN (the released models' face size) four channels wide: a tenth of a second a face.
GFPGAN_SHAPE: dict[str, Any] = {"out_size": 512, "channels": 4, "num_style_feat": 8}


def _random(shapes: dict[str, tuple[int, ...]], seed: int, scale: Any) -> dict[str, Any]:
    """Seeded weights for the factory's key layout (its files hold zeros, which restore nothing)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * scale(k, s) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def gfpgan_sd() -> dict[str, Any]:
    # noise strengths (the (1,)-shaped weights) large enough that fresh noise shows
    return _random(gfpgan_shapes(**GFPGAN_SHAPE), 0, lambda k, s: 0.5 if k.endswith(".weight") and s == (1,) else 0.1)


@pytest.fixture(scope="module")
def codeformer_sd() -> dict[str, Any]:
    return _random(codeformer_shapes(**TINY_CODEFORMER), 1, lambda k, s: 0.2 if len(s) > 1 else 0.5)


@pytest.fixture(scope="module")
def gfpgan(gfpgan_sd: dict[str, Any]) -> Any:
    return build_gfpgan(gfpgan_sd)


@pytest.fixture(scope="module")
def codeformer(codeformer_sd: dict[str, Any]) -> Any:
    return build_codeformer(codeformer_sd)


@pytest.fixture
def depot(tmp_path: Path) -> Iterator[ModelManager]:
    mm = ModelManager.open(home=tmp_path / "home")
    yield mm
    mm.close()


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth picture with some texture: a face crop stand-in the nets can change visibly."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width, 1), yy / max(height, 1), 0.5 + 0.0 * xx], axis=-1) * 200 + 20
    noise = np.random.default_rng(seed).normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _px(image: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image).astype(np.int16)


def test_gfpgan_restores_an_aligned_512_crop(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False)
    assert (restorer.arch, restorer.face_size) == ("GFPGAN", 512)
    face = _image(512, 512)
    out = restorer(face, weight=1)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (512, 512)
    assert np.abs(_px(out) - _px(face)).mean() > 5  # it did change the face
    # exactly the network's answer on [-1, 1] input, brought back to [0, 1]
    x = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        want = ((gfpgan(x) + 1) / 2).clamp(0, 1)[0].mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(out), want)
    # deterministic: the stored noise maps, whatever the seed
    assert restorer(face, weight=1, seed=1).tobytes() == out.tobytes() == restorer(face, weight=1, seed=2).tobytes()


def test_gfpgan_weight_blends_restored_and_input(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False)
    face = _image(512, 512, seed=1)
    assert restorer(face, weight=0).tobytes() == face.tobytes()
    full, half = _px(restorer(face, weight=1)), _px(restorer(face, weight=0.5))
    assert np.abs(half - (full + _px(face)) / 2).max() <= 1  # rounding only
    assert np.abs(full - _px(face)).max() > 10


def test_gfpgan_random_noise_is_seeded_and_leaves_the_global_generator_alone(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False, randomize_noise=True)
    face = _image(512, 512, seed=2)
    state = torch.get_rng_state()
    first = restorer(face, weight=1, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert restorer(face, weight=1, seed=7).tobytes() == first.tobytes()
    assert restorer(face, weight=1, seed=8).tobytes() != first.tobytes()
    stored = FaceRestorer(gfpgan, detector=False)(face, weight=1)
    assert stored.tobytes() != first.tobytes()


def test_codeformer_weight_is_its_fidelity(codeformer: Any) -> None:
    restorer = FaceRestorer(codeformer, detector=False)
    assert (restorer.arch, restorer.face_size) == ("CodeFormer", 8)
    face = _image(8, 8, seed=3)
    outs = {w: restorer(face, weight=w, seed=0) for w in (0, 0.5, 1)}
    assert all(o.size == (8, 8) and o.mode == "RGB" for o in outs.values())
    assert outs[0].tobytes() != outs[1].tobytes()  # w changes how much of the input is fused back
    assert restorer(face, weight=0.5, seed=5).tobytes() == outs[0.5].tobytes()  # nothing random
    x = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        y = codeformer(x, w=0.5, adain=True)[0]
    want = ((y + 1) / 2).clamp(0, 1)[0].mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(outs[0.5]), want)


def test_aligned_true_takes_any_square_crop(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False)
    out = restorer(_image(200, 200), aligned=True, weight=1)
    assert out.size == (200, 200)
    with pytest.raises(InvalidImageError, match="must be square"):
        restorer(_image(200, 150), aligned=True)


def test_detected_faces_are_pasted_inside_their_boxes_only(gfpgan: Any) -> None:
    boxes = [(10, 20, 70, 80), (120, 5, 160, 45)]
    seen: list[tuple[int, int]] = []

    def detector(image: Image.Image) -> list[tuple[int, int, int, int]]:
        seen.append(image.size)
        return boxes

    restorer = FaceRestorer(gfpgan, detector=detector, margin=0)
    image = _image(180, 100, seed=4)
    out = restorer(image, weight=1)
    assert seen == [(180, 100)] and out.size == (180, 100) and out.mode == "RGB"
    before, after = _px(image), _px(out)
    inside = np.zeros(before.shape[:2], dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
        # restored in the middle of each box, feathered to (almost) nothing at its edge
        middle = np.abs(after[y0 + 15 : y1 - 15, x0 + 15 : x1 - 15] - before[y0 + 15 : y1 - 15, x0 + 15 : x1 - 15])
        assert middle.mean() > 5
        assert np.abs(after[y0, x0:x1] - before[y0, x0:x1]).max() < np.abs(middle).max()
    assert np.array_equal(after[~inside], before[~inside])


def test_boxes_grow_by_the_margin_and_stay_inside_the_image(gfpgan: Any) -> None:
    assert face_square((40, 40, 60, 50), (200, 100), 0.5) == (30, 25, 70, 65)  # 20 px wide box -> 40 px square
    assert face_square((0, 0, 30, 30), (200, 100), 0.5) == (0, 0, 60, 60)  # shifted in, not padded
    assert face_square((150, 10, 260, 90), (200, 100), 0.25) == (100, 0, 200, 100)  # shrunk to fit
    assert face_square((250, 10, 260, 90), (200, 100), 0.25) is None  # nothing inside the image
    restorer = FaceRestorer(gfpgan, detector=lambda im: [(40, 40, 60, 50), (250, 0, 300, 10)], margin=0.5)
    image = _image(200, 100, seed=5)
    before, after = _px(image), _px(restorer(image, weight=1))
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[25:65, 30:70] = False
    assert np.array_equal(after[outside], before[outside])
    assert not np.array_equal(after[25:65, 30:70], before[25:65, 30:70])


def test_no_face_found_returns_the_image_unchanged(gfpgan: Any) -> None:
    image = _image(120, 90)
    assert FaceRestorer(gfpgan, detector=lambda im: [])(image).tobytes() == image.tobytes()


def test_a_detector_answer_that_is_not_boxes_is_an_error(gfpgan: Any) -> None:
    for answer in ([(1, 2, 3)], [("a", 1, 2, 3)], [None], [(0, 0, float("nan"), 5)]):
        restorer = FaceRestorer(gfpgan, detector=lambda im, a=answer: a)  # type: ignore[misc]
        with pytest.raises(ServiceInputError, match=r"each face must be \(x0, y0, x1, y1\)"):
            restorer(_image(120, 90))


def test_whole_images_without_a_detector_say_how_to_get_one(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False)
    with pytest.raises(InvalidImageError) as err:
        restorer(_image(640, 480))
    message = str(err.value)
    for part in (
        "640x480",
        "no face detector is installed",
        "pip install opencv-python-headless",
        "detector=",
        "512x512",
    ):
        assert part in message


def test_detector_available_says_whether_opencv_is_installed(gfpgan: Any) -> None:
    installed = importlib.util.find_spec("cv2") is not None
    assert FaceRestorer.detector_available() is installed
    default = FaceRestorer(gfpgan)
    assert (default.detector is not None) is installed
    if not installed:
        with pytest.raises(InvalidImageError, match="no face detector is installed"):
            default(_image(100, 80))
        with pytest.raises(ServiceInputError, match="opencv-python-headless"):
            FaceRestorer(gfpgan, detector=True)


def test_opencv_haar_detector_runs(gfpgan: Any) -> None:
    pytest.importorskip("cv2")
    restorer = FaceRestorer(gfpgan)
    blank = Image.new("RGB", (160, 120), (128, 128, 128))
    assert restorer.detector is not None and restorer.detector(blank) == []
    assert restorer(blank).tobytes() == blank.tobytes()


def test_argument_errors(gfpgan: Any) -> None:
    restorer = FaceRestorer(gfpgan, detector=False)
    face = _image(512, 512)
    for weight in (-0.1, 1.1, float("nan"), True, "0.5"):
        with pytest.raises(ServiceInputError, match="weight"):
            restorer(face, weight=weight)  # type: ignore[arg-type]
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(ServiceInputError, match="seed"):
            restorer(face, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="PIL image"):
        restorer(np.zeros((512, 512, 3), dtype=np.uint8))  # type: ignore[arg-type]
    with pytest.raises(ServiceInputError, match="margin"):
        FaceRestorer(gfpgan, margin=-1)
    with pytest.raises(ServiceInputError, match="detector"):
        FaceRestorer(gfpgan, detector="haar")  # type: ignore[arg-type]


def test_other_networks_are_refused() -> None:
    esrgan = build_rrdbnet(tiny_esrgan_state_dict(10, layout="basicsr"))
    with pytest.raises(WrongModelTypeError, match=r"RRDBNet.*not a GFPGAN or CodeFormer face restorer; use Upscaler"):
        FaceRestorer(esrgan)
    with pytest.raises(WrongModelTypeError, match="Conv2d"):
        FaceRestorer(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(WrongModelTypeError) as err:
        FaceRestorer(object())
    assert err.value.expected == ("GFPGAN", "CodeFormer")


def test_records_of_upscalers_and_other_types_are_refused(tmp_path: Path) -> None:
    esrgan = parse_config(
        {"name": "x4", "type": "spandrel_image_to_image", "format": "checkpoint", "base": "any", "path": "x4.pth"}
        | {"architecture": "ESRGAN"}
    )
    with pytest.raises(WrongModelTypeError, match=r"'x4': its architecture is ESRGAN.*use Upscaler") as err:
        FaceRestorer.check_config(esrgan)
    assert err.value.key == esrgan.key
    vae = parse_config({"name": "v", "type": "vae", "format": "checkpoint", "base": "sd-1", "path": "v.safetensors"})
    with pytest.raises(WrongModelTypeError, match="it is a vae model"):
        FaceRestorer.check_config(vae)


def test_from_key_loads_gfpgan_and_codeformer_through_the_depot(
    depot: ModelManager, tmp_path: Path, gfpgan_sd: dict[str, Any], codeformer_sd: dict[str, Any], gfpgan: Any
) -> None:
    gfpgan_path = tmp_path / "GFPGANv1.4.safetensors"
    save_file({f"params_ema.{k}": v.contiguous() for k, v in gfpgan_sd.items()}, str(gfpgan_path))
    codeformer_path = tmp_path / "codeformer.safetensors"
    save_file({k: v.contiguous() for k, v in codeformer_sd.items()}, str(codeformer_path))
    gfpgan_key = depot.install.register_path(gfpgan_path)
    codeformer_key = depot.install.register_path(codeformer_path)

    restorer = FaceRestorer.from_key(depot, gfpgan_key, detector=False)
    assert restorer.bound.key == gfpgan_key and restorer.arch == "GFPGAN" and len(restorer.bound.entries) == 1
    face = _image(512, 512, seed=6)
    assert restorer(face).tobytes() == FaceRestorer(gfpgan, detector=False)(face).tobytes()

    cf = FaceRestorer.from_key(depot, codeformer_key, detector=False)
    assert cf.arch == "CodeFormer" and cf(_image(8, 8)).size == (8, 8)
    assert FaceRestorer(depot.load_model_by_key(codeformer_key))(_image(8, 8)).size == (8, 8)


def test_from_key_refuses_an_upscaler_and_a_vae(depot: ModelManager, tmp_path: Path) -> None:
    esrgan_key = depot.install.register_path(tiny_esrgan(tmp_path / "x4.pth"))
    with pytest.raises(WrongModelTypeError, match="use Upscaler") as err:
        FaceRestorer.from_key(depot, esrgan_key)
    assert err.value.key == esrgan_key
    vae_key = depot.install.register_path(write_vae(tmp_path / "vae.safetensors"))
    with pytest.raises(WrongModelTypeError, match="it is a vae model"):
        FaceRestorer.from_key(depot, vae_key)
