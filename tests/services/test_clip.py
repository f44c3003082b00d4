"""ClipEmbedder and ClipInterrogator over a tiny random two-tower CLIPModel: unit embeddings that match the
model's own forward, similarity, zero-shot ranking, the label cache, from_key and refused models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import InvalidImageError, ServiceInputError, WrongModelTypeError  # noqa: E402
from modeldepot.managers import ManagedModel  # noqa: E402
from modeldepot.services.clip import ClipEmbedder, ClipInterrogator  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402
from modeldepot.testing.factories import write_clip_model_folder  # noqa: E402

pytestmark = pytest.mark.torch

LABELS = ["a photo of a cat", "a red dog", "the picture", "an apple on a table", "dog"]


@pytest.fixture(scope="module")
def keys(depot: ModelManager, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("clip-models")
    return {
        "clip": depot.install.register_path(write_clip_model_folder(root / "clip")),
        # A second CLIPModel recorded as clip_embed by the user: it holds both towers too.
        "clip_embed": depot.install.register_path(
            write_clip_model_folder(root / "clip2", seed=1), {"type": "clip_embed"}
        ),
        "vision_tower": depot.install.register_path(F.tiny_clip_vision(root / "vision")),
        "vae": depot.install.register_path(F.tiny_vae(root / "vae")),
    }


@pytest.fixture(scope="module")
def embedder(depot: ModelManager, keys: dict[str, str]) -> ClipEmbedder:
    return ClipEmbedder.from_key(depot, keys["clip"])


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    noise = np.random.RandomState(0).randint(0, 256, (37, 45, 3), dtype=np.uint8)
    return [
        Image.new("RGB", (40, 56), (200, 40, 40)),
        Image.fromarray(noise, "RGB"),
        Image.new("L", (64, 32), 30),  # not RGB: converted
    ]


def _forward(e: ClipEmbedder, images: list[Image.Image], texts: list[str]) -> Any:
    """The model's own forward on the same inputs: the reference the service must agree with."""
    batch = e.processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        return e.model(**batch)


@pytest.fixture
def count_runs() -> Iterator[Any]:
    """``count_runs(module)``: a list that grows by one each time ``module`` runs (its hook is removed
    after the test, so the module-scoped models stay clean)."""
    handles: list[Any] = []

    def count(module: Any, record: Any = None) -> list[Any]:
        calls: list[Any] = []
        handles.append(module.register_forward_hook(lambda *_: calls.append(record() if record else 1)))
        return calls

    yield count
    for handle in handles:
        handle.remove()


def test_embeddings_are_unit_float32_rows(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    d = embedder.model.config.projection_dim
    assert embedder.dim == d
    one = embedder.image(images[0])
    many = embedder.image(images)
    text_one, texts = embedder.text("a cat"), embedder.text(LABELS)
    assert (one.shape, many.shape, text_one.shape, texts.shape) == ((1, d), (3, d), (1, d), (len(LABELS), d))
    for arr in (one, many, text_one, texts):
        assert arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(many[0], one[0], atol=1e-6)
    # Different images and texts land in different places.
    assert not np.allclose(many[0], many[1], atol=1e-3) and not np.allclose(texts[0], texts[1], atol=1e-3)
    assert embedder.image([]).shape == (0, d) and embedder.text([]).shape == (0, d)


def test_embeddings_match_the_models_forward(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    out = _forward(embedder, images, LABELS)
    np.testing.assert_allclose(embedder.image(images), out.image_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(embedder.text(LABELS), out.text_embeds.numpy(), atol=1e-5)


def test_similarity_is_the_dot_product_of_the_embeddings(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    sim = embedder.similarity(images, LABELS)
    assert sim.shape == (len(images), len(LABELS)) and sim.dtype == np.float32
    manual = embedder.image(images) @ embedder.text(LABELS).T
    np.testing.assert_allclose(sim, manual, atol=1e-6)
    logits = _forward(embedder, images, LABELS).logits_per_image
    np.testing.assert_allclose(sim, (logits / embedder.model.logit_scale.exp()).numpy(), atol=1e-5)
    assert embedder.similarity(images[1], "dog").shape == (1, 1)


def test_calls_are_deterministic(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    assert np.array_equal(embedder.image(images), embedder.image(images))
    assert np.array_equal(embedder.text(LABELS), embedder.text(LABELS))


def test_long_lists_are_encoded_in_batches(
    depot: ModelManager, keys: dict[str, str], images: list[Image.Image], count_runs: Any
) -> None:
    small = ClipEmbedder.from_key(depot, keys["clip"], batch_size=2)
    vision, text = count_runs(small.model.vision_model), count_runs(small.model.text_model)
    five = [*images, *images[:2]]
    got_images, got_texts = small.image(five), small.text(LABELS)
    assert (len(vision), len(text)) == (3, 3)  # 5 items, 2 per forward pass
    whole = ClipEmbedder.from_key(depot, keys["clip"], batch_size=64)
    # Padding a text beside longer ones does not change its embedding.
    np.testing.assert_allclose(got_images, whole.image(five), atol=1e-5)
    np.testing.assert_allclose(got_texts, whole.text(LABELS), atol=1e-5)


def test_the_cache_entry_is_locked_while_running(depot: ModelManager, keys: dict[str, str], count_runs: Any) -> None:
    loaded = depot.load_model_by_key(keys["clip"])
    e = ClipEmbedder(loaded)
    seen = count_runs(loaded.model.text_model, lambda: loaded.locked)
    e.text("a cat")
    assert seen == [True] and not loaded.locked


def test_interrogator_ranks_as_clip_zero_shot(
    depot: ModelManager, keys: dict[str, str], images: list[Image.Image]
) -> None:
    it = ClipInterrogator.from_key(depot, keys["clip"])
    ranked = it(images[1], LABELS, top_k=3)
    assert len(ranked) == 3 and all(isinstance(lbl, str) and isinstance(s, float) for lbl, s in ranked)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    everything = it(images[1], LABELS, top_k=100)
    assert sorted(lbl for lbl, _ in everything) == sorted(LABELS) and everything[:3] == ranked
    assert sum(s for _, s in everything) == pytest.approx(1.0, abs=1e-5)
    # The score is the model's own softmax over logits_per_image.
    probs = _forward(it, [images[1]], LABELS).logits_per_image.softmax(dim=-1)[0]
    for label, score in everything:
        assert score == pytest.approx(float(probs[LABELS.index(label)]), abs=1e-5)
    assert it(images[1], LABELS, top_k=1) == ranked[:1]


def test_interrogator_categories(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    it = ClipInterrogator(embedder.bound)
    cats = {"mediums": ["a photo", "a painting", "a drawing"], "flavors": LABELS}
    out = it(images[0], cats, top_k=2)
    assert list(out) == ["mediums", "flavors"] and all(len(v) == 2 for v in out.values())
    assert out["flavors"] == it(images[0], LABELS, top_k=2)
    whole = it(images[0], cats, top_k=10)
    assert sum(s for _, s in whole["mediums"]) == pytest.approx(1.0, abs=1e-5)
    assert {lbl for lbl, _ in whole["mediums"]} == set(cats["mediums"])


def test_label_embeddings_are_cached_per_label_set(
    embedder: ClipEmbedder, images: list[Image.Image], count_runs: Any
) -> None:
    it = ClipInterrogator(embedder.bound, cache_size=1)
    text_runs, image_runs = count_runs(it.model.text_model), count_runs(it.model.vision_model)
    first = it(images[0], LABELS)
    assert len(text_runs) == 1
    again = it(images[0], LABELS)
    assert (len(text_runs), len(image_runs)) == (1, 2) and again == first  # only the image was encoded again
    np.testing.assert_array_equal(it.label_embeddings(LABELS), embedder.text(LABELS))
    it(images[0], ["a", "b"])  # a second set evicts the first (cache_size=1)
    it(images[0], LABELS)
    assert len(text_runs) == 4  # LABELS, the test's own embedder.text, ["a", "b"], LABELS again
    it.clear_cache()
    it(images[0], LABELS)
    assert len(text_runs) == 5
    uncached = ClipInterrogator(embedder.bound, cache_size=0)
    runs = count_runs(uncached.model.text_model)
    uncached(images[0], LABELS)
    uncached(images[0], LABELS)
    assert len(runs) == 2


def test_bad_inputs_are_clear_errors(embedder: ClipEmbedder, images: list[Image.Image]) -> None:
    it = ClipInterrogator(embedder.bound)
    with pytest.raises(ServiceInputError, match="labels is empty"):
        it(images[0], [])
    with pytest.raises(ServiceInputError, match=r"labels\['flavors'\] is empty"):
        it(images[0], {"mediums": ["a photo"], "flavors": []})
    with pytest.raises(ServiceInputError, match="one string"):
        it(images[0], "a cat")
    with pytest.raises(ServiceInputError, match="top_k must be an integer ≥ 1, not 0"):
        it(images[0], LABELS, top_k=0)
    with pytest.raises(ServiceInputError, match="every label must be a string, not int"):
        it(images[0], ["a cat", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidImageError, match="image must be a PIL image, not ndarray"):
        it(np.zeros((4, 4, 3)), LABELS)  # type: ignore[call-overload]
    with pytest.raises(InvalidImageError, match="image 1 must be a PIL image, not str"):
        embedder.image([images[0], "cat.png"])  # type: ignore[list-item]
    with pytest.raises(ServiceInputError, match="every text must be a string"):
        embedder.text([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ServiceInputError, match="batch_size"):
        ClipEmbedder(embedder.bound, batch_size=0)


def test_every_way_of_giving_the_model(depot: ModelManager, keys: dict[str, str], embedder: ClipEmbedder) -> None:
    want = embedder.text(LABELS)
    assert isinstance(embedder.processor, transformers.CLIPProcessor)
    assert embedder.bound.key == keys["clip"] and repr(embedder) == "ClipEmbedder('clip')"
    loaded = depot.load_model_by_key(keys["clip"])
    # A LoadedModel: the processor is read from the record's folder.
    from_loaded = ClipEmbedder(loaded)
    assert isinstance(from_loaded.processor, transformers.CLIPProcessor)
    np.testing.assert_array_equal(from_loaded.text(LABELS), want)
    # A manager's ManagedModel carries its processor in extras.
    managed = ManagedModel("tiny", "clip", loaded.model, "cpu", "float32", loaded.config, {"model": loaded})
    managed.extras["processor"] = embedder.processor
    from_managed = ClipInterrogator(managed)
    assert from_managed.processor is embedder.processor
    np.testing.assert_array_equal(from_managed.text(LABELS), want)
    # A bare CLIPModel with its processor.
    np.testing.assert_array_equal(ClipEmbedder(loaded.model, processor=embedder.processor).text(LABELS), want)
    with pytest.raises(ServiceInputError, match="bare CLIPModel without its processor: pass processor="):
        ClipEmbedder(loaded.model)
    with pytest.raises(ServiceInputError, match="needs a CLIPProcessor"):
        ClipEmbedder(loaded.model, processor=embedder.processor.image_processor)


def test_a_clip_embed_record_holding_a_full_clip_model(depot: ModelManager, keys: dict[str, str]) -> None:
    config = depot.store.get_model(keys["clip_embed"])
    assert config.type.value == "clip_embed"
    it = ClipInterrogator.from_key(depot, keys["clip_embed"])
    assert type(it.model).__name__ == "CLIPModel"
    assert len(it(Image.new("RGB", (32, 32)), LABELS, top_k=2)) == 2


def test_models_it_cannot_use(depot: ModelManager, keys: dict[str, str]) -> None:
    with pytest.raises(WrongModelTypeError, match="cannot use model 'vae': it is a vae model") as info:
        ClipEmbedder.from_key(depot, keys["vae"])
    assert info.value.key == keys["vae"] and info.value.expected == ("clip_vision", "clip_embed")
    with pytest.raises(WrongModelTypeError, match="it is a vae model"):
        ClipInterrogator(depot.load_model_by_key(keys["vae"]))
    # An image tower alone is a clip_vision record, but cannot embed text.
    with pytest.raises(WrongModelTypeError, match="CLIPVisionModelWithProjection, not a full CLIP model") as info:
        ClipInterrogator.from_key(depot, keys["vision_tower"])
    assert info.value.key == keys["vision_tower"] and info.value.expected == ("CLIPModel",)
    with pytest.raises(WrongModelTypeError, match="Linear, not a full CLIP model"):
        ClipEmbedder(torch.nn.Linear(2, 2))


def test_an_open_clip_model_names_what_it_needs() -> None:
    class OpenClipLike:
        """What tells an open_clip model apart: encode_image and encode_text (the package itself needs torchvision)."""

        def encode_image(self, x: Any) -> Any:
            return x

        def encode_text(self, x: Any) -> Any:
            return x

    with pytest.raises(WrongModelTypeError, match=r"open_clip OpenClipLike.*Hugging Face layout.*open_clip_torch"):
        ClipEmbedder(OpenClipLike())
