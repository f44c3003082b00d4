"""`modeldepot run ...`: every service command on tiny real models, the PNGs it writes, and its one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.cli._run_files import parse_lora, read_depth  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402
from modeldepot.testing.factories import write_blip_folder, write_clip_model_folder, write_gfpgan  # noqa: E402

Run = Callable[..., Any]


def _with_unet(src: Path, dest: Path, *, seed: int, in_channels: int, pipeline: str) -> Path:
    """A copy of the pipeline ``src`` with a new unet of ``in_channels`` (9: inpainting, 5: depth)."""
    shutil.copytree(src, dest)
    shutil.rmtree(dest / "unet")
    unet = F.tiny_unet(seed)
    config = {**unet.config, "in_channels": in_channels}
    torch.manual_seed(seed)
    type(unet).from_config(config).save_pretrained(dest / "unet", safe_serialization=True)
    index = json.loads((dest / "model_index.json").read_text())
    (dest / "model_index.json").write_text(json.dumps({**index, "_class_name": pipeline}))
    return dest


@pytest.fixture(scope="module")
def depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A home with one tiny model of every kind the commands use; returns its path and the keys by name."""
    d = tmp_path_factory.mktemp("run-cli")
    sd = F.tiny_sd_pipeline(d / "tiny-sd")
    paths = {
        "tiny-sd": sd,
        "tiny-inpaint": _with_unet(
            sd, d / "tiny-inpaint", seed=51, in_channels=9, pipeline="StableDiffusionInpaintPipeline"
        ),
        "tiny-depth": _with_unet(
            sd, d / "tiny-depth", seed=52, in_channels=5, pipeline="StableDiffusionDepth2ImgPipeline"
        ),
        "tiny-vae": F.tiny_vae(d / "tiny-vae", seed=9),
        "tinylora": F.tiny_lora(d / "tinylora.safetensors"),
        "tinyemb": F.tiny_textual_inversion(d / "tinyemb.safetensors", fmt="safetensors"),
        "tiny-x4": F.tiny_esrgan(d / "tiny-x4.pth", scale=4),
        "tiny-gfpgan": write_gfpgan(d / "tiny-gfpgan.pth", out_size=32),
        "tiny-blip": write_blip_folder(d / "tiny-blip"),
        "tiny-clip": write_clip_model_folder(d / "tiny-clip"),
    }
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELDEPOT_")}
    for name in saved:  # the module fixture runs before the autouse clean environment
        del os.environ[name]
    try:
        with ModelManager.open(home=d / "home") as mm:
            keys = {name: mm.install.register_path(path, {"name": name}) for name, path in paths.items()}
    finally:
        os.environ.update(saved)
    yield {"home": d / "home", "keys": keys}


@pytest.fixture
def cli(run: Run, depot: dict[str, Any]) -> Run:
    """``modeldepot run ARGS... --home <the module's home>``."""

    def _cli(*args: str | Path) -> Any:
        return run("run", *map(str, args), "--home", str(depot["home"]))

    return _cli


def _picture(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _pixels(path: Path) -> Any:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _parameters(path: Path) -> str:
    with Image.open(path) as image:
        text: str = image.text["parameters"]  # type: ignore[attr-defined]
    return text


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line: no traceback, no progress bar
    return lines[0]


def test_scheduler_help_lists_the_services_scheduler_names(run: Run) -> None:
    from modeldepot.services._schedulers import SCHEDULER_NAMES

    r = run("run", "txt2img", "--help")
    shown = r.out.replace("\n", " ").replace("│", " ")
    assert r.code == 0 and all(name in shown for name in SCHEDULER_NAMES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("key", ("key", 1.0)), ("key:0.5", ("key", 0.5)), ("a:b:-1", ("a:b", -1.0)), ("a:b", ("a:b", 1.0))],
)
def test_lora_option_parses_key_and_weight(text: str, expected: tuple[str, float]) -> None:
    assert parse_lora(text) == expected


def test_txt2img_writes_pngs_with_parameters_and_a_step_bar(cli: Run, tmp_path: Path) -> None:
    import transformers.utils.logging as tlog

    before = (tlog.get_verbosity(), tlog.is_progress_bar_enabled())
    out = tmp_path / "out.png"
    r = cli(
        "txt2img", "-m", "tiny-sd", "-p", "a red barn", "--negative", "blurry", "--steps", "2", "--seed", "7",
        "--width", "32", "--height", "24", "-n", "2", "-o", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    second = tmp_path / "out-1.png"
    assert r.out.split() == ["wrote", str(out), "(seed", "7)", "wrote", str(second), "(seed", "7)"]
    for path in (out, second):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (32, 24)
        text = _parameters(path)
        assert text.splitlines()[:2] == ["a red barn", "Negative prompt: blurry"]
        assert "Steps: 2," in text and "Seed: 7," in text and "Size: 32x24" in text and "Model: tiny-sd" in text
    assert not np.array_equal(_pixels(out), _pixels(second))  # a batch, not copies
    # stderr is the step bar, run to its end, and nothing else: the libraries' loading bars and warnings are off
    bar = re.search(r"txt2img\s.*?(\d+)/(\d+)", _one_line(r.err))
    assert bar is not None and bar.group(1) == bar.group(2), r.err
    assert (tlog.get_verbosity(), tlog.is_progress_bar_enabled()) == before  # and are on again afterwards


def test_txt2img_default_name_records_the_seed_and_never_overwrites(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("txt2img", "-m", "tiny-sd", "-p", "a cat", "--steps", "2")
    assert r.code == 0, r.err
    [written] = tmp_path.glob("*.png")
    match = re.fullmatch(r"txt2img-(\d+)\.png", written.name)
    assert match is not None
    seed = match.group(1)
    assert f"Seed: {seed}," in _parameters(written)
    before = written.read_bytes()
    r = cli("txt2img", "-m", "tiny-sd", "-p", "a cat", "--steps", "2", "--seed", seed)
    assert r.code == 1 and "already exists" in _one_line(r.err) and "--force" in r.err
    assert written.read_bytes() == before
    r = cli("txt2img", "-m", "tiny-sd", "-p", "a cat", "--steps", "2", "--seed", seed, "--force")
    assert r.code == 0, r.err
    assert written.read_bytes() == before  # the recorded seed remakes the image, byte for byte


def test_a_later_image_of_a_batch_existing_refuses_the_whole_run(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "out-2.png").write_bytes(b"mine")
    r = cli("txt2img", "-m", "tiny-sd", "-p", "x", "--steps", "2", "-n", "3", "-o", tmp_path / "out.png")
    assert r.code == 1 and "out-2.png already exists" in _one_line(r.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.png"]


def test_txt2img_options_reach_the_service(cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "opts.png"
    r = cli(
        "txt2img", "-m", "tiny-sd", "-p", "a tinyemb cat", "--steps", "2", "--seed", "3", "--lora", "tinylora:0.5",
        "--embedding", "tinyemb", "--vae", "tiny-vae", "--scheduler", "euler_a", "--guidance", "5", "-o", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    text = _parameters(out)
    assert text.splitlines()[0] == "a tinyemb cat <lora:tinylora:0.5>"
    assert "Sampler: Euler a," in text and "VAE: tiny-vae" in text and "CFG scale: 5," in text


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's import
def test_txt2img_compile(cli: Run, tmp_path: Path) -> None:
    args = ("txt2img", "-m", "tiny-sd", "-p", "x", "--steps", "2", "--seed", "4")
    assert cli(*args, "-o", tmp_path / "eager.png").code == 0
    r = cli(*args, "--compile", "-o", tmp_path / "compiled.png")
    assert r.code == 0, r.err
    difference = _pixels(tmp_path / "compiled.png").astype(int) - _pixels(tmp_path / "eager.png").astype(int)
    assert np.abs(difference).max() <= 2  # the same image, up to the compiled kernels' rounding


def test_img2img_and_inpaint_read_their_input_files(cli: Run, tmp_path: Path) -> None:
    image = _picture(tmp_path / "in.png", (24, 16))
    mask = Image.new("L", (24, 16))
    mask.paste(255, (8, 4, 16, 12))
    mask.save(tmp_path / "mask.png")
    r = cli("img2img", "-m", "tiny-sd", "-p", "x", "-i", image, "--strength", "0.5", "--steps", "2", "--seed", "1",
            "-o", tmp_path / "i2i.png")  # fmt: skip
    assert r.code == 0, r.err
    assert _size(tmp_path / "i2i.png") == (24, 16)
    assert "Denoising strength: 0.5" in _parameters(tmp_path / "i2i.png")
    r = cli("inpaint", "-m", "tiny-inpaint", "-p", "x", "-i", image, "--mask", tmp_path / "mask.png", "--steps", "2",
            "--seed", "1", "-o", tmp_path / "inpaint.png")  # fmt: skip
    assert r.code == 0, r.err
    assert _size(tmp_path / "inpaint.png") == (24, 16)
    text = _parameters(tmp_path / "inpaint.png")
    assert "Denoising strength: 1," in text and "Model: tiny-inpaint" in text


def test_depth2img_takes_a_16_bit_depth_map(cli: Run, tmp_path: Path) -> None:
    image = _picture(tmp_path / "in.png", (16, 16))
    ramp = np.tile(np.linspace(0, 40000, 16, dtype=np.uint16), (16, 1))  # far left, near right
    Image.fromarray(ramp).save(tmp_path / "depth16.png")
    depth = read_depth(tmp_path / "depth16.png")
    assert isinstance(depth, torch.Tensor) and tuple(depth.shape) == (1, 16, 16)
    assert depth.min().item() == 0 and depth.max().item() == 1  # scaled, not clipped at 255 as "L" would
    Image.fromarray((ramp // 256).astype(np.uint8)).save(tmp_path / "depth8.png")
    assert isinstance(read_depth(tmp_path / "depth8.png"), Image.Image)
    r = cli("depth2img", "-m", "tiny-depth", "-p", "x", "-i", image, "--depth", tmp_path / "depth16.png",
            "--steps", "2", "--seed", "2", "-o", tmp_path / "d.png")  # fmt: skip
    assert r.code == 0, r.err
    assert _size(tmp_path / "d.png") == (16, 16)
    assert "Denoising strength: 0.8" in _parameters(tmp_path / "d.png")


def test_upscale_size_parameters_and_pixels(
    cli: Run, depot: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldepot.services.upscale import Upscaler

    monkeypatch.chdir(tmp_path)
    _picture(tmp_path / "photo.png", (12, 10))
    r = cli("upscale", "-m", "tiny-x4", "-i", "photo.png", "--tile", "8", "--overlap", "2")
    assert r.code == 0, r.err
    assert r.out.strip() == "wrote photo-upscaled.png"
    with Image.open(tmp_path / "photo-upscaled.png") as written:
        assert written.size == (48, 40)
        pixels = np.asarray(written.convert("RGB"))
    assert _parameters(tmp_path / "photo-upscaled.png") == "Upscaled with tiny-x4 (x4), tile 8, overlap 2"
    with ModelManager.open(home=depot["home"]) as mm, Image.open(tmp_path / "photo.png") as photo:
        direct = Upscaler.from_key(mm, "tiny-x4")(photo, tile=8, overlap=2)
    assert np.array_equal(pixels, np.asarray(direct))  # the command adds nothing and loses nothing
    r = cli("upscale", "-m", "tiny-x4", "-i", "photo.png", "--outscale", "2", "-o", "half.png")
    assert r.code == 0, r.err
    assert _size(tmp_path / "half.png") == (24, 20)
    assert _parameters(tmp_path / "half.png").endswith(", outscale 2")


def test_restore_an_aligned_crop(cli: Run, tmp_path: Path) -> None:
    face = _picture(tmp_path / "face.png", (32, 32))  # the tiny GFPGAN's own face size
    r = cli("restore", "-m", "tiny-gfpgan", "-i", face, "--weight", "0.7", "-o", tmp_path / "r.png")
    assert r.code == 0, r.err
    assert _size(tmp_path / "r.png") == (32, 32)
    assert _parameters(tmp_path / "r.png") == "Faces restored with tiny-gfpgan, weight 0.7"
    small = _picture(tmp_path / "small.png", (16, 16))
    r = cli("restore", "-m", "tiny-gfpgan", "-i", small, "--aligned", "-o", tmp_path / "s.png")
    assert r.code == 0, r.err
    assert _size(tmp_path / "s.png") == (16, 16)


@pytest.mark.skipif(importlib.util.find_spec("cv2") is not None, reason="OpenCV is installed: a detector exists")
def test_restore_a_whole_image_without_a_detector_says_so(cli: Run, tmp_path: Path) -> None:
    image = _picture(tmp_path / "photo.png", (40, 24))
    r = cli("restore", "-m", "tiny-gfpgan", "-i", image, "-o", tmp_path / "r.png")
    assert r.code == 1 and "no face detector" in _one_line(r.err)
    assert not (tmp_path / "r.png").exists()


def test_caption_prints_the_captioners_caption(cli: Run, depot: dict[str, Any], tmp_path: Path) -> None:
    from modeldepot.services.blip import BlipCaptioner

    image = _picture(tmp_path / "in.png", (32, 32))
    r = cli("caption", "-m", "tiny-blip", "-i", image, "--max-length", "8")
    assert r.code == 0, r.err
    with ModelManager.open(home=depot["home"]) as mm, Image.open(image) as picture:
        expected = BlipCaptioner.from_key(mm, "tiny-blip")(picture, max_length=8)
    assert r.out == expected + "\n"


def test_interrogate_ranks_labels_as_text_and_json(cli: Run, tmp_path: Path) -> None:
    image = _picture(tmp_path / "in.png", (32, 32))
    (tmp_path / "labels.txt").write_text("# kinds of animal\n\na dog\n  a bird  \n", encoding="utf-8")
    args = ("interrogate", "-m", "tiny-clip", "-i", image, "-l", "a cat", "--label", "a car")
    r = cli(*args, "--labels-file", tmp_path / "labels.txt", "--top-k", "10", "--json")
    assert r.code == 0, r.err
    ranked = json.loads(r.out)
    assert sorted(item["label"] for item in ranked) == ["a bird", "a car", "a cat", "a dog"]
    scores = [item["score"] for item in ranked]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    r = cli(*args, "--labels-file", tmp_path / "labels.txt", "-k", "2")
    assert r.code == 0, r.err
    lines = [line.split("  ", 1) for line in r.out.splitlines()]
    assert [label for _, label in lines] == [item["label"] for item in ranked[:2]]  # best first, top 2
    assert [float(score) for score, _ in lines] == pytest.approx([item["score"] for item in ranked[:2]], abs=1e-4)
    r = cli("interrogate", "-m", "tiny-clip", "-i", image)
    assert r.code == 2 and "--label" in _one_line(r.err)


ERRORS = {
    "unknown model": (["upscale", "-m", "no-such-model", "-i", "{img}"], 1, "'no-such-model'"),
    "a VAE to upscale": (["upscale", "-m", "tiny-vae", "-i", "{img}"], 1, "Upscaler cannot use model 'tiny-vae'"),
    "missing image": (["upscale", "-m", "tiny-x4", "-i", "{tmp}/nope.png"], 1, "nope.png does not exist"),
    "image is a folder": (["caption", "-m", "tiny-blip", "-i", "{tmp}"], 1, "is a folder"),
    "unreadable image": (["upscale", "-m", "tiny-x4", "-i", "{tmp}/text.png"], 1, "cannot read image"),
    "mask size mismatch": (
        ["inpaint", "-m", "tiny-inpaint", "-p", "x", "-i", "{img}", "--mask", "{tmp}/mask8.png", "--steps", "2"],
        1,
        "mask is 8",
    ),
    "missing mask": (
        ["inpaint", "-m", "tiny-sd", "-p", "x", "-i", "{img}", "--mask", "{tmp}/none.png"],
        1,
        "mask file",
    ),
    "a VAE as LoRA": (["txt2img", "-m", "tiny-sd", "-p", "x", "--lora", "tiny-vae"], 1, "is a vae model"),
    "unknown scheduler": (["txt2img", "-m", "tiny-sd", "-p", "x", "--scheduler", "nope"], 1, "unknown scheduler"),
    "caption with a CLIP model": (["caption", "-m", "tiny-clip", "-i", "{img}"], 1, "tiny-clip"),
    "not a PNG output": (["upscale", "-m", "tiny-x4", "-i", "{img}", "-o", "{tmp}/out.jpg"], 2, "must be a .png"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_and_write_nothing(cli: Run, tmp_path: Path, case: str) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    img = _picture(inputs / "in.png", (16, 16))
    Image.new("L", (8, 8)).save(inputs / "mask8.png")
    (inputs / "text.png").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    argv, code, message = ERRORS[case]
    args = [a.format(img=img, tmp=inputs) for a in argv]
    if "-o" not in args:
        args += ["-o", str(out / "result.png")] if args[0] not in ("caption", "interrogate") else []
    r = cli(*args)
    assert r.code == code, (r.out, r.err)
    line = _one_line(r.err)
    assert line.startswith("error:") and message in line, line
    assert r.out == "" and list(out.iterdir()) == []
