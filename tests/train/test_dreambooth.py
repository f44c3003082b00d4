"""train_dreambooth_lora on a tiny SD-1 pipeline: prior preservation generates the class images with the base
model (once), trains on instance + class images, and installs an identified LoRA that records its prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import TrainingError  # noqa: E402
from modeldepot.testing.factories import write_captioned_images  # noqa: E402
from modeldepot.train import train_dreambooth_lora  # noqa: E402

pytestmark = pytest.mark.torch

FAST: dict[str, Any] = {"resolution": 32, "rank": 2, "alpha": 2.0, "lr": 1e-3, "seed": 0, "class_steps": 2}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # No caption files: Dreambooth trains every instance image under the instance prompt.
    return write_captioned_images(tmp_path_factory.mktemp("dog") / "dog", 3, size=32, caption_ext=None)


def _metadata(path: str) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return dict(f.metadata())


def test_prior_preservation_generates_class_images_and_trains(depot: ModelManager, base: str, instance: Path) -> None:
    losses: list[float] = []
    record = train_dreambooth_lora(
        depot,
        base=base,
        instance_data=instance,
        instance_prompt="a photo of sks dog",
        class_prompt="a photo of a dog",
        num_class_images=2,
        steps=3,
        output_name="sks-dog",
        progress=lambda s, t, loss: losses.append(loss),
        **FAST,
    )
    class_dir = Path(depot.config.home) / "train" / "sks-dog" / "class_images"
    made = sorted(class_dir.glob("*.png"))
    assert [p.name for p in made] == ["class-00000.png", "class-00001.png"]
    for path in made:
        with Image.open(path) as image:
            assert image.size == (32, 32)
            assert "a photo of a dog" in image.info["parameters"]  # made by Txt2Img with the class prompt
    assert (record.type.value, record.base.value, record.name) == ("lora", "sd-1", "sks-dog")
    assert record.source.startswith("train:dreambooth:")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    meta = _metadata(record.path)
    facts = json.loads(meta["modeldepot.dreambooth"])
    assert facts["instance_prompt"] == "a photo of sks dog" and facts["class_prompt"] == "a photo of a dog"
    assert facts["class_data"] == str(class_dir)
    assert meta["ss_num_reg_images"] == "2" and meta["ss_prior_loss_weight"] == "1.0"
    assert meta["modelspec.trigger_phrase"] == "a photo of sks dog"
    assert json.loads(meta["ss_tag_frequency"]) == {"dog": {"a photo of sks dog": 3}}


def test_existing_class_images_are_reused_and_the_prior_changes_training(
    depot: ModelManager, base: str, instance: Path, tmp_path: Path
) -> None:
    class_dir = tmp_path / "dogs"
    common = {"base": base, "instance_data": instance, "instance_prompt": "a photo of sks dog", "steps": 2, **FAST}
    with_prior = train_dreambooth_lora(
        depot, class_prompt="a photo of a dog", class_data=class_dir, num_class_images=1, output_name="p1", **common
    )
    first = (class_dir / "class-00000.png").stat()
    again = train_dreambooth_lora(
        depot, class_prompt="a photo of a dog", class_data=class_dir, num_class_images=1, output_name="p2", **common
    )
    assert (class_dir / "class-00000.png").stat().st_mtime_ns == first.st_mtime_ns  # not generated twice
    assert sorted(p.name for p in class_dir.iterdir()) == ["class-00000.png"]
    without = train_dreambooth_lora(depot, prior_preservation=False, output_name="p3", **common)
    a, b, c = load_file(with_prior.path), load_file(again.path), load_file(without.path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data, same seed: the same LoRA
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the prior loss took part
    assert json.loads(_metadata(without.path)["modeldepot.dreambooth"])["prior_preservation"] is False


def test_refusals(depot: ModelManager, base: str, instance: Path) -> None:
    with pytest.raises(TrainingError, match="needs class_prompt"):
        train_dreambooth_lora(depot, base=base, instance_data=instance, instance_prompt="sks dog", **FAST)
    with pytest.raises(TrainingError, match="instance_prompt is empty"):
        train_dreambooth_lora(depot, base=base, instance_data=instance, instance_prompt=" ", **FAST)
    with pytest.raises(TrainingError, match="num_class_images"):
        train_dreambooth_lora(
            depot, base=base, instance_data=instance, instance_prompt="x", class_prompt="y", num_class_images=0, **FAST
        )
