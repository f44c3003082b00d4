"""BlipCaptioner over a tiny random BlipForConditionalGeneration: captions are strings, deterministic,
within the asked lengths, start with the prompt; sampling is repeatable for a seed; from_key and errors."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.services.blip import BlipCaptioner  # noqa: E402
from modeldepot.testing.factories import write_blip_folder, write_clip_model_folder  # noqa: E402

pytestmark = pytest.mark.torch

#: Captions of 10 tokens: each token is a decoder pass, and the default 30 triples a test's time.
SHORT: dict[str, Any] = {"max_length": 10}


@pytest.fixture(scope="module")
def keys(depot: ModelManager, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("blip-models")
    return {
        "blip": depot.install.register_path(write_blip_folder(root / "blip")),
        "clip": depot.install.register_path(write_clip_model_folder(root / "clip")),
    }


@pytest.fixture(scope="module")
def captioner(depot: ModelManager, keys: dict[str, str]) -> BlipCaptioner:
    return BlipCaptioner.from_key(depot, keys["blip"])


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    noise = np.random.RandomState(1).randint(0, 256, (41, 29, 3), dtype=np.uint8)
    return [Image.new("RGB", (40, 56), (200, 40, 40)), Image.fromarray(noise, "RGB")]


@pytest.fixture
def generated(captioner: BlipCaptioner, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The token ids each ``generate`` call of the real model returns."""
    out: list[Any] = []
    real = captioner.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        ids = real(*args, **kwargs)
        out.append(ids)
        return ids

    monkeypatch.setattr(captioner.model, "generate", spy)
    return out


def test_a_caption_is_a_string_and_the_same_every_time(captioner: BlipCaptioner, images: list[Image.Image]) -> None:
    default = captioner(images[0])  # max_length=30, min_length=5, greedy
    assert isinstance(default, str) and default and default == default.strip()
    caption = captioner(images[0], **SHORT)
    assert default.startswith(caption) and captioner(images[0], **SHORT) == caption
    beams = captioner(images[0], num_beams=2, **SHORT)
    assert isinstance(beams, str) and captioner(images[0], num_beams=2, **SHORT) == beams


def test_a_list_gives_a_caption_per_image(captioner: BlipCaptioner, images: list[Image.Image]) -> None:
    captions = captioner(images, **SHORT)
    assert isinstance(captions, list) and len(captions) == 2
    # Captioned one at a time, each image gets the caption it gets in the batch.
    one_by_one = BlipCaptioner(captioner.bound, batch_size=1)
    assert one_by_one(images, **SHORT) == captions
    assert captioner([]) == []


def test_lengths_are_respected(captioner: BlipCaptioner, images: list[Image.Image], generated: list[Any]) -> None:
    short = captioner(images[0], max_length=4, min_length=4)
    longer = captioner(images[0], max_length=12, min_length=9)
    captioner(images[0], max_length=8, min_length=2, num_beams=2)
    lengths = [ids.shape[1] for ids in generated]
    assert lengths[0] == 4 and 9 <= lengths[1] <= 12 and 2 <= lengths[2] <= 8
    # Greedy decoding: the shorter caption's tokens are the first of the longer one's.
    assert torch.equal(generated[1][0, :4], generated[0][0])
    assert longer.startswith(short.split(" ")[0])


def test_a_prompt_starts_the_caption(captioner: BlipCaptioner, images: list[Image.Image]) -> None:
    caption = captioner(images[1], prompt="a picture of", **SHORT)
    assert caption.startswith("a picture of") and len(caption) > len("a picture of")
    assert captioner([images[0], images[1]], prompt="a picture of", **SHORT)[1] == caption


def test_sampling_is_repeatable_for_a_seed(captioner: BlipCaptioner, images: list[Image.Image]) -> None:
    first = captioner(images[0], sample=True, seed=1, **SHORT)
    assert captioner(images[0], sample=True, seed=1, **SHORT) == first
    assert {captioner(images[0], sample=True, seed=s, **SHORT) for s in (2, 3)} != {first}
    # The seed is ignored without sampling (greedy is already deterministic)...
    assert captioner(images[0], seed=1, **SHORT) == captioner(images[0], seed=2, **SHORT)
    # ...and sampling with a seed leaves everyone else's random numbers alone.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    captioner(images[0], sample=True, seed=7, max_length=3, min_length=3)
    assert torch.equal(torch.rand(3), expected)


def test_bad_arguments_are_clear_errors(captioner: BlipCaptioner, images: list[Image.Image]) -> None:
    im = images[0]
    with pytest.raises(ServiceInputError, match="max_length must be an integer ≥ 1, not 0"):
        captioner(im, max_length=0)
    with pytest.raises(ServiceInputError, match=r"min_length \(8\) is more than max_length \(4\)"):
        captioner(im, max_length=4, min_length=8)
    with pytest.raises(ServiceInputError, match="num_beams"):
        captioner(im, num_beams=0)
    with pytest.raises(ServiceInputError, match="prompt must be a string"):
        captioner(im, prompt=3)  # type: ignore[call-overload]
    with pytest.raises(ServiceInputError, match="seed must be an integer"):
        captioner(im, sample=True, seed=-1)
    with pytest.raises(ServiceInputError, match="top_p"):
        captioner(im, sample=True, top_p=0.0)
    with pytest.raises(InvalidImageError, match="image must be a PIL image, not Tensor"):
        captioner(torch.zeros(3, 8, 8))
    with pytest.raises(InvalidImageError, match="image 1 must be a PIL image, not NoneType"):
        captioner([im, None])  # type: ignore[list-item]


def test_every_way_of_giving_the_model(depot: ModelManager, keys: dict[str, str], captioner: BlipCaptioner) -> None:
    assert isinstance(captioner.processor, transformers.BlipProcessor)
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"
    image = Image.new("RGB", (32, 32), (0, 90, 200))
    want = captioner(image, **SHORT)
    loaded = depot.load_model_by_key(keys["blip"])
    from_loaded = BlipCaptioner(loaded)  # the processor is read from the record's folder
    assert isinstance(from_loaded.processor, transformers.BlipProcessor)
    assert from_loaded(image, **SHORT) == want
    bare = BlipCaptioner(loaded.model, processor=captioner.processor)
    assert bare(image, **SHORT) == want
    with pytest.raises(ServiceInputError, match="pass processor="):
        BlipCaptioner(loaded.model)


def test_models_it_cannot_use(depot: ModelManager, keys: dict[str, str]) -> None:
    with pytest.raises(
        WrongModelTypeError, match="BlipCaptioner cannot use model 'clip': it is a clip_vision model"
    ) as info:
        BlipCaptioner.from_key(depot, keys["clip"])
    assert info.value.key == keys["clip"] and info.value.expected == ("captioner",)
    with pytest.raises(WrongModelTypeError, match="CLIPModel; BlipCaptioner needs an image captioner"):
        BlipCaptioner(depot.load_model_by_key(keys["clip"]).model, processor=object())
