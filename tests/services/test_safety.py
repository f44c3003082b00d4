"""SafetyChecker over a tiny random StableDiffusionSafetyChecker: the flags are the model's own concept
scores against its thresholds (set here so one image is flagged and another is not), flagged images come
back black at their size, the others unchanged; from_key and refused models."""

from __future__ import annotations

import copy
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402
from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.services.safety import SafetyChecker  # noqa: E402
from modeldepot.testing.factories import write_blip_folder, write_safety_checker_folder  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def keys(depot: ModelManager, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("safety-models")
    return {
        "checker": depot.install.register_path(write_safety_checker_folder(root / "checker")),
        "blip": depot.install.register_path(write_blip_folder(root / "blip")),
    }


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    noise = np.random.RandomState(0).randint(0, 256, (33, 45, 3), dtype=np.uint8)
    # Different sizes, one not RGB: each comes back at its own size.
    return [Image.new("RGB", (40, 50), (200, 10, 10)), Image.fromarray(noise, "RGB"), Image.new("RGBA", (64, 48))]


@pytest.fixture
def checker(depot: ModelManager, keys: dict[str, str]) -> SafetyChecker:
    """A service over a private copy of the cached model, whose thresholds a test may change."""
    loaded = depot.load_model_by_key(keys["checker"])
    extractor = depot.load_model_by_key(keys["checker"], "feature_extractor").model
    return SafetyChecker(copy.deepcopy(loaded.model), feature_extractor=extractor)


def _concept_scores(checker: SafetyChecker, images: list[Image.Image]) -> Any:
    """Each image's cosine distance to each of the 17 concepts, computed apart from the service."""
    model = checker.model
    # As the service sees them: RGB (an RGBA image's alpha dropped, as PIL converts it).
    rgb = [im.convert("RGB") for im in images]
    pixels = checker.feature_extractor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = model.visual_projection(model.vision_model(pixels)[1])
        return cosine_distance(embeds, model.concept_embeds).numpy()  # type: ignore[no-untyped-call]


def _set_thresholds(checker: SafetyChecker, concepts: Any, special: float = 10.0) -> None:
    with torch.no_grad():
        checker.model.concept_embeds_weights.copy_(torch.as_tensor(concepts, dtype=torch.float32))
        checker.model.special_care_embeds_weights.fill_(special)


def _is_black(image: Image.Image) -> bool:
    return not np.asarray(image).any()


def _same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b.convert("RGB")))


def test_one_flagged_one_not_from_the_concept_scores(checker: SafetyChecker, images: list[Image.Image]) -> None:
    scores = _concept_scores(checker, images[:2])[:, 0]
    assert abs(scores[0] - scores[1]) > 0.02  # far apart enough for the checker's 3-decimal rounding
    # Concept 0's threshold halfway between the two images; every other concept out of reach.
    thresholds = np.full(17, 10.0)
    thresholds[0] = (scores[0] + scores[1]) / 2
    _set_thresholds(checker, thresholds)
    flagged = int(np.argmax(scores))
    out, flags = checker(images[:2])
    assert flags == [i == flagged for i in range(2)]
    assert _is_black(out[flagged]) and out[flagged].size == images[flagged].size
    assert _same(out[1 - flagged], images[1 - flagged])
    # Raising the threshold past the higher score clears it.
    thresholds[0] = max(scores) + 0.01
    _set_thresholds(checker, thresholds)
    assert checker(images[:2])[1] == [False, False]


def test_all_flagged_all_black_at_their_sizes(checker: SafetyChecker, images: list[Image.Image]) -> None:
    _set_thresholds(checker, np.full(17, -10.0))
    out, flags = checker(images)
    assert flags == [True, True, True]
    assert [im.size for im in out] == [im.size for im in images]
    assert all(_is_black(im) and im.mode == "RGB" for im in out)


def test_none_flagged_images_unchanged(checker: SafetyChecker, images: list[Image.Image]) -> None:
    _set_thresholds(checker, np.full(17, 10.0))
    out, flags = checker(images)
    assert flags == [False, False, False]
    assert all(_same(o, i) for o, i in zip(out, images, strict=True))
    single, one_flag = checker(images[0])
    assert one_flag == [False] and len(single) == 1 and _same(single[0], images[0])
    assert checker([]) == ([], [])


def test_special_care_lowers_the_bar(checker: SafetyChecker, images: list[Image.Image]) -> None:
    # The checker adds 0.01 to every concept score once a special-care concept fires.
    score = float(_concept_scores(checker, images[:1])[0, 0])
    thresholds = np.full(17, 10.0)
    thresholds[0] = score + 0.005
    _set_thresholds(checker, thresholds, special=10.0)
    assert checker(images[0])[1] == [False]
    _set_thresholds(checker, thresholds, special=-10.0)
    assert checker(images[0])[1] == [True]


def test_batches_agree(checker: SafetyChecker, images: list[Image.Image]) -> None:
    scores = _concept_scores(checker, images)[:, 0]
    thresholds = np.full(17, 10.0)
    low, high = np.sort(scores)[-2:]
    thresholds[0] = (low + high) / 2
    _set_thresholds(checker, thresholds)
    whole = checker(images)
    one_by_one = SafetyChecker(checker.bound, feature_extractor=checker.feature_extractor, batch_size=1)(images)
    assert whole[1] == one_by_one[1] == [i == int(np.argmax(scores)) for i in range(3)]
    assert all(_same(a, b) for a, b in zip(whole[0], one_by_one[0], strict=True))


def test_from_key_and_a_loaded_model(depot: ModelManager, keys: dict[str, str], images: list[Image.Image]) -> None:
    service = SafetyChecker.from_key(depot, keys["checker"])
    assert type(service.model).__name__ == "StableDiffusionSafetyChecker"
    assert isinstance(service.feature_extractor, transformers.CLIPImageProcessor)
    out, flags = service(images)
    assert len(out) == len(flags) == 3 and all(isinstance(f, bool) for f in flags)
    # The factory's thresholds (ones) are far above its random images' scores.
    assert flags == [False, False, False]
    from_loaded = SafetyChecker(depot.load_model_by_key(keys["checker"]))  # extractor read from the folder
    assert isinstance(from_loaded.feature_extractor, transformers.CLIPImageProcessor)
    assert from_loaded(images)[1] == flags


def test_bad_inputs_and_models(
    depot: ModelManager, keys: dict[str, str], checker: SafetyChecker, images: list[Image.Image]
) -> None:
    with pytest.raises(InvalidImageError, match="image 1 must be a PIL image, not ndarray"):
        checker([images[0], np.zeros((8, 8, 3))])  # type: ignore[list-item]
    with pytest.raises(ServiceInputError, match="batch_size"):
        SafetyChecker(checker.bound, feature_extractor=checker.feature_extractor, batch_size=0)
    with pytest.raises(ServiceInputError, match="bare StableDiffusionSafetyChecker without its processor"):
        SafetyChecker(checker.model)
    with pytest.raises(
        WrongModelTypeError, match="it is a captioner model; SafetyChecker takes safety_checker"
    ) as info:
        SafetyChecker.from_key(depot, keys["blip"])
    assert info.value.key == keys["blip"] and info.value.expected == ("safety_checker",)
    with pytest.raises(WrongModelTypeError, match="Linear; SafetyChecker needs a StableDiffusionSafetyChecker"):
        SafetyChecker(torch.nn.Linear(2, 2), feature_extractor=checker.feature_extractor)
