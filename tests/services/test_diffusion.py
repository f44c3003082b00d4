"""Txt2Img / Img2Img / Inpaint / Depth2Img over the cache's parts, on tiny real pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.services.diffusion import Depth2Img, Img2Img, Inpaint, Txt2Img  # noqa: E402
from modeldepot.testing.factories import tiny_lora_for  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402


@pytest.fixture(scope="module")
def depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("diffusion")
    a = F.tiny_sd_pipeline(d / "tiny-a")
    paths = {
        "a": a,
        "b": F.tiny_sd_variant(a, d / "tiny-b", seed=50),
        "inpaint": F.tiny_sd_variant(
            a, d / "tiny-inpaint", seed=51, in_channels=9, pipeline="StableDiffusionInpaintPipeline"
        ),
        "depth": F.tiny_sd_variant(
            a, d / "tiny-depth", seed=52, in_channels=5, pipeline="StableDiffusionDepth2ImgPipeline"
        ),
        "vae": F.tiny_vae(d / "tiny-vae", seed=9),
        "emb": F.tiny_textual_inversion(d / "tinyemb.safetensors", fmt="safetensors"),
        "lora": tiny_lora_for(d / "tinylora.safetensors", F.tiny_unet(), F.tiny_clip_text_model(), seed=3),
    }
    mm = ModelManager.open(home=d / "home")
    keys = {name: mm.install.register_path(path) for name, path in paths.items()}
    yield {"mm": mm, "keys": keys, "paths": paths}
    mm.close()


def _array(image: Image.Image) -> Any:
    return np.asarray(image, dtype=np.int16)


def test_txt2img_size_determinism_and_parameters(depot: dict[str, Any]) -> None:
    t2i = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])
    first = t2i("a red barn", steps=2, seed=5)
    assert first.mode == "RGB" and first.size == (16, 16)  # the tiny model's native size: 8 latents x 2
    assert np.array_equal(_array(first), _array(t2i("a red barn", steps=2, seed=5)))
    assert not np.array_equal(_array(first), _array(t2i("a red barn", steps=2, seed=6)))
    wide = t2i("a red barn", steps=2, seed=5, width=32, height=24)
    assert wide.size == (32, 24)
    text = first.info["parameters"]
    assert text.splitlines()[0] == "a red barn"
    assert "Steps: 2" in text and "Seed: 5" in text and "Size: 16x16" in text and "Model: tiny-a" in text


def test_txt2img_equals_a_hand_built_diffusers_pipeline(depot: dict[str, Any]) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        depot["paths"]["a"], safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator("cpu").manual_seed(3)
    expected = pipe("a lighthouse", num_inference_steps=2, width=16, height=16, generator=gen).images[0]
    got = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])("a lighthouse", steps=2, seed=3, guidance=7.5)
    assert np.abs(_array(got) - _array(expected)).max() <= 1  # same weights, same math: at most a rounding step


def test_services_accept_what_managers_and_the_load_service_hand_out(depot: dict[str, Any]) -> None:
    from modeldepot.managers import ManagedModel

    mm, key = depot["mm"], depot["keys"]["a"]
    reference = Txt2Img.from_key(mm, key)("x", steps=2, seed=1)
    parts = {n: mm.load_model_by_key(key, n) for n in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    from_parts = Txt2Img(parts)("x", steps=2, seed=1)
    managed = ManagedModel(key, "diffusers", None, "cpu", "float32", mm.store.get_model(key), parts)
    from_managed = Txt2Img(managed)("x", steps=2, seed=1)
    for image in (from_parts, from_managed):
        assert np.array_equal(_array(image), _array(reference))
    with pytest.raises(WrongModelTypeError, match="all the parts"):
        Txt2Img(parts["unet"])


def test_parts_are_the_caches_and_a_switch_shares_them(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    a = Txt2Img.from_key(mm, keys["a"])
    b = Txt2Img.from_key(mm, keys["b"])
    assert a.parts["vae"] is mm.load_model_by_key(keys["a"], "vae").model
    assert b.parts["vae"] is a.parts["vae"] and b.parts["text_encoder"] is a.parts["text_encoder"]
    assert b.parts["unet"] is not a.parts["unet"]
    assert not np.array_equal(_array(a("x", steps=2, seed=1)), _array(b("x", steps=2, seed=1)))


def test_img2img_and_argument_errors(depot: dict[str, Any]) -> None:
    i2i = Img2Img.from_key(depot["mm"], depot["keys"]["a"])
    source = Image.new("RGB", (24, 16), (200, 40, 40))
    out = i2i("a painting", source, strength=0.5, steps=2, seed=2)
    assert out.size == (24, 16) and "Denoising strength: 0.5" in out.info["parameters"]
    with pytest.raises(ServiceInputError, match="strength"):
        i2i("x", source, strength=1.5)
    with pytest.raises(InvalidImageError, match="PIL image"):
        i2i("x", "not an image")
    with pytest.raises(ServiceInputError, match="unexpected options: widht"):
        i2i("x", source, widht=3)
    t2i = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])
    with pytest.raises(ServiceInputError, match="steps"):
        t2i("x", steps=0)
    with pytest.raises(ServiceInputError, match="width must be a positive multiple of 2"):
        t2i("x", steps=1, width=15)
    with pytest.raises(ServiceInputError, match=r"unknown scheduler 'nope'.*euler_a"):
        t2i("x", steps=1, scheduler="nope")


def test_inpaint_models_and_masks(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    source = Image.new("RGB", (16, 16), (10, 120, 10))
    for key in (keys["inpaint"], keys["a"]):  # a 9-channel inpainting unet, and a normal one
        out = Inpaint.from_key(mm, key)("a hole", source, Image.new("L", (16, 16), 255), steps=2, seed=4)
        assert out.size == (16, 16)
    with pytest.raises(InvalidImageError, match="mask is 8x8 px but the image is 16x16"):
        Inpaint.from_key(mm, keys["a"])("x", source, Image.new("L", (8, 8), 255))
    with pytest.raises(WrongModelTypeError, match="inpaint model \\(use Inpaint\\)"):
        Txt2Img.from_key(mm, keys["inpaint"])


def test_depth2img_needs_a_depth_map_with_relief(depot: dict[str, Any]) -> None:
    mm, key = depot["mm"], depot["keys"]["depth"]
    d2i = Depth2Img.from_key(mm, key)
    source = Image.new("RGB", (16, 16), (90, 90, 200))
    ramp = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)), "L")
    out = d2i("a room", source, ramp, steps=2, seed=1)
    assert out.size == (16, 16) and np.isfinite(_array(out)).all()
    with pytest.raises(ServiceInputError, match="depth_map="):
        d2i("a room", source)
    with pytest.raises(InvalidImageError, match="flat"):
        d2i("a room", source, Image.new("L", (16, 16), 128))
    with pytest.raises(WrongModelTypeError, match="depth model"):
        Img2Img.from_key(mm, key)
    with pytest.raises(WrongModelTypeError, match="normal model"):
        Depth2Img.from_key(mm, depot["keys"]["a"])


def test_wrong_model_types(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    with pytest.raises(WrongModelTypeError, match="it is a vae model; Txt2Img takes main models"):
        Txt2Img.from_key(mm, keys["vae"])
    t2i = Txt2Img.from_key(mm, keys["a"])
    with pytest.raises(WrongModelTypeError, match="not a vae"):
        t2i("x", steps=1, vae=keys["emb"])
    with pytest.raises(WrongModelTypeError, match="not a lora"):
        t2i("x", steps=1, loras=[(keys["vae"], 1.0)])


def test_vae_swap_uses_the_other_vae_and_leaves_the_cache_alone(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    t2i = Txt2Img.from_key(mm, keys["a"])
    cached_vae = t2i.parts["vae"]
    before = {k: v.clone() for k, v in cached_vae.state_dict().items()}
    plain = t2i("x", steps=2, seed=1)
    swapped = t2i("x", steps=2, seed=1, vae=keys["vae"])
    assert not np.array_equal(_array(plain), _array(swapped))
    assert "VAE: tiny-vae" in swapped.info["parameters"]
    assert t2i.parts["vae"] is cached_vae
    assert all(torch.equal(before[k], v) for k, v in cached_vae.state_dict().items())
    assert np.array_equal(_array(plain), _array(t2i("x", steps=2, seed=1)))


def test_embeddings_change_the_text_embedding_for_their_trigger(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    t2i = Txt2Img.from_key(mm, keys["a"])
    tokenizer, encoder = t2i.parts["tokenizer"], t2i.parts["text_encoder"]
    vocab, table = len(tokenizer), encoder.get_input_embeddings()
    plain = t2i("a tinyemb cat", steps=2, seed=1)
    with_embedding = t2i("a tinyemb cat", steps=2, seed=1, embeddings=[keys["emb"]])
    assert not np.array_equal(_array(plain), _array(with_embedding))
    # the cached tokenizer and embedding table are untouched
    assert len(tokenizer) == vocab and encoder.get_input_embeddings() is table
    assert np.array_equal(_array(plain), _array(t2i("a tinyemb cat", steps=2, seed=1)))


def test_schedulers_progress_and_the_cached_scheduler(depot: dict[str, Any]) -> None:
    t2i = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])
    cached = t2i.parts["scheduler"]
    config = dict(cached.config)
    steps: list[tuple[int, int]] = []
    out = t2i("x", steps=3, seed=1, scheduler="euler_a", progress=lambda s, n: steps.append((s, n)))
    assert "Sampler: Euler a" in out.info["parameters"]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    karras = t2i("x", steps=2, seed=1, scheduler="dpmpp_2m_k")
    assert "Sampler: DPM++ 2M Karras" in karras.info["parameters"]
    assert t2i.parts["scheduler"] is cached and dict(cached.config) == config


def test_num_images_and_a_random_seed_is_reported(depot: dict[str, Any]) -> None:
    t2i = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])
    images = t2i.generate("x", steps=1, num_images=2)
    assert len(images) == 2
    seed = int(images[0].info["parameters"].split("Seed: ")[1].split(",")[0])
    again = t2i.generate("x", steps=1, num_images=2, seed=seed)
    assert np.array_equal(_array(images[1]), _array(again[1]))


def _weights(modules: dict[str, Any]) -> dict[str, Any]:
    return {f"{n}.{k}": (v.data_ptr(), v.clone()) for n, m in modules.items() for k, v in m.state_dict().items()}


def test_loras_patch_the_cached_modules_for_one_call_and_restore_them_bit_for_bit(depot: dict[str, Any]) -> None:
    mm, keys = depot["mm"], depot["keys"]
    assert mm.store.get_model(keys["lora"]).type.value == "lora"
    t2i = Txt2Img.from_key(mm, keys["a"])
    modules = {n: t2i.parts[n] for n in ("unet", "text_encoder")}
    before = _weights(modules)
    plain = t2i("a barn", steps=2, seed=1)
    patched = t2i("a barn", steps=2, seed=1, loras=[(keys["lora"], 1.0)])
    assert not np.array_equal(_array(plain), _array(patched))
    assert "<lora:tinylora:1>" in patched.info["parameters"].splitlines()[0]
    after = _weights(modules)
    assert after.keys() == before.keys()
    for name, (ptr, tensor) in before.items():  # the same storage, the same bits
        assert after[name][0] == ptr and torch.equal(after[name][1], tensor), name
    assert np.array_equal(_array(plain), _array(t2i("a barn", steps=2, seed=1, loras=[(keys["lora"], 0.0)])))
    with pytest.raises(ServiceInputError, match="unknown scheduler"):  # fails after the patch: still restored
        t2i("a barn", steps=2, seed=1, loras=[(keys["lora"], 1.0)], scheduler="not-one")
    assert all(torch.equal(_weights(modules)[n][1], t) for n, (_, t) in before.items())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's import
def test_compile_matches_eager(depot: dict[str, Any]) -> None:
    mm, key = depot["mm"], depot["keys"]["a"]
    eager = Txt2Img.from_key(mm, key)("x", steps=2, seed=1)
    compiled = Txt2Img.from_key(mm, key, compile=True)
    first = compiled("x", steps=2, seed=1)
    assert np.abs(_array(first) - _array(eager)).max() <= 2
    assert np.array_equal(_array(first), _array(compiled("x", steps=2, seed=1)))
    # a LoRA patched into the cached unet reaches the compiled graph (weights are its inputs, not constants)
    lora = [(depot["keys"]["lora"], 1.0)]
    eager_lora = Txt2Img.from_key(mm, key)("x", steps=2, seed=1, loras=lora)
    compiled_lora = compiled("x", steps=2, seed=1, loras=lora)
    assert np.abs(_array(compiled_lora) - _array(eager_lora)).max() <= 2
    assert not np.array_equal(_array(compiled_lora), _array(first))


def test_patching_on_the_cpu_hands_back_the_callers_thread_count(depot: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    from modeldepot.services._lora import patched_loras

    t2i = Txt2Img.from_key(depot["mm"], depot["keys"]["a"])
    state_dict = load_file(str(depot["paths"]["lora"]))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with patched_loras({"unet": t2i.parts["unet"]}, [("tinylora", state_dict, 1.0)]) as report:
            assert report.layer_count > 0 and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_single_file_checkpoint_generates_what_its_diffusers_twin_does(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from diffusers import StableDiffusionPipeline

    ck = F.tiny_sd1_checkpoint(tmp_path_factory.mktemp("single-file"))
    with ModelManager.open(home=ck.path.parent / "home") as mm:
        overrides = {"base": "sd-1", "type": "main", "format": "checkpoint", "config_path": str(ck.config_dir)}
        key = mm.install.register_path(ck.path, overrides)
        got = Txt2Img.from_key(mm, key)("a cat", steps=2, seed=1)
    twin = StableDiffusionPipeline.from_pretrained(ck.reference_dir, safety_checker=None, requires_safety_checker=False)
    twin.set_progress_bar_config(disable=True)
    expected = twin("a cat", num_inference_steps=2, width=16, height=16, generator=torch.Generator().manual_seed(1))
    assert np.abs(_array(got) - _array(expected.images[0])).max() <= 1
