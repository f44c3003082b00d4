"""train_lora on a tiny random SD-1 pipeline and 4 captioned 32x32 images: the result is installed and
identified as lora/sd-1 with kohya and ModelSpec metadata, it loads, it lowers the denoising loss of the
training images and changes the unet's output; checkpoints, Ctrl-C and resume continue bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from modeldepot import ModelManager  # noqa: E402
from modeldepot.errors import TrainingError  # noqa: E402
from modeldepot.hashing import autov3  # noqa: E402
from modeldepot.services._lora import patched_loras  # noqa: E402
from modeldepot.testing.factories import torch_models as F  # noqa: E402
from modeldepot.testing.factories import write_captioned_images  # noqa: E402
from modeldepot.train import CaptionedImageDataset, train_lora  # noqa: E402

pytestmark = pytest.mark.torch

FAST: dict[str, Any] = {"resolution": 32, "rank": 4, "alpha": 4.0, "lr": 1e-3, "seed": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_captioned_images(tmp_path_factory.mktemp("data") / "photos", 4, size=32)


@pytest.fixture(scope="module")
def trained(depot: ModelManager, base: str, data: Path) -> tuple[Any, list[tuple[int, int, float]]]:
    seen: list[tuple[int, int, float]] = []
    record = train_lora(
        depot, base=base, data=data, steps=5, output_name="tiny-style", progress=lambda *a: seen.append(a), **FAST
    )
    return record, seen


def _header(path: str) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return dict(f.metadata())


def _fixed_loss(depot: ModelManager, base: str, data: Path, lora: dict[str, Any] | None) -> float:
    """The denoising loss on the training images with fixed noise and timesteps (the training objective,
    without its randomness)."""
    from diffusers import DDPMScheduler

    parts = {n: depot.load_model_by_key(base, n).model for n in ("unet", "vae", "text_encoder", "tokenizer")}
    scheduler = DDPMScheduler.from_config(depot.load_model_by_key(base, "scheduler").model.config)
    ds = CaptionedImageDataset(data, resolution=32, bucket_step=32)
    (batch,) = list(ds.batches(4))
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        latents = parts["vae"].encode(batch.pixel_values).latent_dist.mean * parts["vae"].config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        steps = torch.randint(0, 1000, (4,), generator=gen)
        ids = parts["tokenizer"](batch.captions, padding="max_length", truncation=True, return_tensors="pt").input_ids
        modules = {"unet": parts["unet"], "text_encoder": parts["text_encoder"]}
        with patched_loras(modules, [("lora", lora, 1.0)] if lora else []):
            pred = parts["unet"](scheduler.add_noise(latents, noise, steps), steps, parts["text_encoder"](ids)[0])
        return float(torch.nn.functional.mse_loss(pred.sample, noise))


def test_the_lora_is_installed_as_lora_sd1_from_the_run(trained: Any, depot: ModelManager) -> None:
    record, _ = trained
    assert (record.type.value, record.base.value, record.name) == ("lora", "sd-1", "tiny-style")
    assert record.source.startswith("train:lora:") and record.source.endswith("tiny-style")
    assert record.source_type.value == "external"
    run = json.loads(record.source_api_response)
    assert run["steps"] == 5 and run["rank"] == 4 and sorted(run["losses"], key=int) == ["1", "2", "3", "4", "5"]
    assert Path(record.path).is_file()
    assert not list((Path(depot.config.home) / "train" / "tiny-style").glob("*.safetensors"))  # moved in


def test_metadata_is_what_kohya_tools_read(trained: Any, depot: ModelManager, base: str, data: Path) -> None:
    record, _ = trained
    meta = _header(record.path)
    base_record = depot.store.get_model(base)
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "4.0")
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_sd_model_name"] == "tiny-sd" and meta["ss_sd_model_hash"] == base_record.hash
    assert (meta["ss_steps"], meta["ss_max_train_steps"], meta["ss_resolution"]) == ("5", "5", "(32, 32)")
    assert meta["ss_num_train_images"] == "4" and meta["ss_seed"] == "0"
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags == {"photos": CaptionedImageDataset(data, resolution=32, bucket_step=32).tag_frequencies()["photos"]}
    assert tags["photos"]["sks"] == 4
    assert json.loads(meta["ss_dataset_dirs"]) == {"photos": {"n_repeats": 1, "img_count": 4}}
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.title"] == "tiny-style" and meta["modelspec.resolution"] == "32x32"
    assert meta["sshs_model_hash"] == (autov3(record.path) or "").lower()
    assert meta["modelspec.hash_sha256"] == "0x" + meta["sshs_model_hash"]


def test_keys_are_kohya_unet_only_by_default(trained: Any) -> None:
    record, _ = trained
    sd = load_file(record.path)
    assert sd and all(k.startswith("lora_unet_") for k in sd)
    assert {k.rsplit(".", 1)[0].rsplit(".", 1)[-1] for k in sd} >= {"lora_down", "lora_up"}
    assert any(k.endswith("attn2_to_k.lora_down.weight") for k in sd)
    assert any(k.endswith("ff_net_0_proj.lora_up.weight") for k in sd)


def test_loss_is_finite_and_training_lowers_the_denoising_loss(
    trained: Any, depot: ModelManager, base: str, data: Path
) -> None:
    record, seen = trained
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5] and {t for _, t, _ in seen} == {5}
    assert all(torch.isfinite(torch.tensor(loss)) for *_, loss in seen)
    lora = depot.load_model_by_key(record.key).model
    before, after = _fixed_loss(depot, base, data, None), _fixed_loss(depot, base, data, lora)
    assert after < before


def test_the_lora_loads_and_changes_the_unet_output(trained: Any, depot: ModelManager, base: str) -> None:
    record, _ = trained
    lora = depot.load_model_by_key(record.key).model
    unet = depot.load_model_by_key(base, "unet").model
    sample = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(1, 77, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(sample, 500, hidden).sample
        with patched_loras({"unet": unet}, [("trained", lora, 1.0)]) as report:
            patched = unet(sample, 500, hidden).sample
        again = unet(sample, 500, hidden).sample
    assert report.layer_count == len([k for k in lora if k.endswith(".alpha")]) > 0
    assert not report.unmatched.get("trained")  # every layer of the file names a real module
    assert not torch.allclose(plain, patched, atol=1e-6)
    assert torch.equal(plain, again)  # the cached unet was not changed by training or patching


def test_txt2img_uses_the_lora(trained: Any, depot: ModelManager, base: str) -> None:
    from modeldepot.services import Txt2Img

    record, _ = trained
    service = Txt2Img.from_key(depot, base)
    plain = service("sks, red cat", steps=2, width=32, height=32, seed=3)
    styled = service("sks, red cat", steps=2, width=32, height=32, seed=3, loras=[(record.key, 1.0)])
    assert plain.tobytes() != styled.tobytes()


def test_ctrl_c_saves_a_checkpoint_and_resume_ends_where_an_uninterrupted_run_does(
    depot: ModelManager, base: str, data: Path
) -> None:
    straight = train_lora(depot, base=base, data=data, steps=4, output_name="straight", **FAST)

    def stop_at_two(step: int, total: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        train_lora(depot, base=base, data=data, steps=4, output_name="resumed", progress=stop_at_two, **FAST)
    checkpoint = Path(depot.config.home) / "train" / "resumed" / "checkpoints" / "step-000002"
    assert info.value.checkpoint == checkpoint  # type: ignore[attr-defined]
    assert any("checkpoint saved to" in note for note in info.value.__notes__)
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2

    seen: list[int] = []
    resumed = train_lora(
        depot,
        base=base,
        data=data,
        steps=4,
        output_name="resumed",
        resume=True,
        progress=lambda s, t, loss: seen.append(s),
        **FAST,
    )
    assert seen == [3, 4]
    a, b = load_file(straight.path), load_file(resumed.path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.source_api_response)["losses"].keys() == {"3", "4"}


def test_checkpoint_every_and_resume_checks(depot: ModelManager, base: str, data: Path, tmp_path: Path) -> None:
    train_lora(depot, base=base, data=data, steps=3, output_name="every", checkpoint_every=1, **FAST)
    folder = Path(depot.config.home) / "train" / "every" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-000001", "step-000002"]
    with pytest.raises(TrainingError, match=r"rank=4.*rank=8"):
        train_lora(
            depot, base=base, data=data, steps=3, output_name="x1", resume=folder / "step-000001", **{**FAST, "rank": 8}
        )
    with pytest.raises(TrainingError, match="at step 2"):
        train_lora(depot, base=base, data=data, steps=2, output_name="x2", resume=folder / "step-000002", **FAST)
    with pytest.raises(TrainingError, match="not a training checkpoint"):
        train_lora(depot, base=base, data=data, steps=3, output_name="x3", resume=tmp_path, **FAST)
    with pytest.raises(TrainingError, match="no checkpoint to resume"):
        train_lora(depot, base=base, data=data, steps=3, output_name="x4", resume=True, **FAST)


def test_text_encoder_training_writes_te_keys(depot: ModelManager, base: str, data: Path) -> None:
    record = train_lora(depot, base=base, data=data, steps=2, output_name="with-te", text_encoder=True, **FAST)
    sd = load_file(record.path)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in sd)
    assert any(k.startswith("lora_unet_") for k in sd)
    assert _header(record.path)["ss_network_train_unet_only"] == "False"


def test_gradient_checkpointing_and_bf16_run(depot: ModelManager, base: str, data: Path) -> None:
    plain = train_lora(depot, base=base, data=data, steps=2, output_name="gc-off", **FAST)
    ckpt = train_lora(depot, base=base, data=data, steps=2, output_name="gc-on", gradient_checkpointing=True, **FAST)
    a, b = load_file(plain.path), load_file(ckpt.path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # recomputation, same result
    assert _header(ckpt.path)["ss_gradient_checkpointing"] == "True"
    losses: list[float] = []
    train_lora(
        depot,
        base=base,
        data=data,
        steps=2,
        output_name="bf16",
        mixed_precision="bf16",
        progress=lambda s, t, loss: losses.append(loss),
        **FAST,
    )
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_refusals(trained: Any, depot: ModelManager, base: str, data: Path, tmp_path: Path) -> None:
    assert trained[0].name == "tiny-style"
    with pytest.raises(TrainingError, match="already installed"):
        train_lora(depot, base=base, data=data, steps=1, output_name="tiny-style", **FAST)
    with pytest.raises(TrainingError, match="fp16 mixed precision needs a CUDA"):
        train_lora(depot, base=base, data=data, steps=1, output_name="y", mixed_precision="fp16", **FAST)
    with pytest.raises(TrainingError, match="rank must be"):
        train_lora(depot, base=base, data=data, steps=1, output_name="y", **{**FAST, "rank": 0})
    vae = depot.install.install_path(F.tiny_vae(tmp_path / "vae"))
    with pytest.raises(TrainingError, match="is a vae model"):
        train_lora(depot, base=vae, data=data, steps=1, output_name="y", **FAST)
    unknown = depot.install.install_path(F.tiny_sd_pipeline(tmp_path / "other", seed=5), {"name": "unknown-base"})
    with pytest.raises(TrainingError, match="register it with --base"):
        train_lora(depot, base=unknown, data=data, steps=1, output_name="y", **FAST)
    assert not depot.store.search_by_attr(name="y")


def test_sdxl_trains_both_encoders_under_kohya_te1_te2(
    depot: ModelManager, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = F.tiny_sdxl_checkpoint(tmp_path_factory.mktemp("sdxl")).reference_dir
    key = depot.install.install_path(folder, {"name": "tiny-sdxl", "base": "sdxl"})
    record = train_lora(depot, base=key, data=data, steps=2, output_name="xl-style", text_encoder=True, **FAST)
    assert (record.type.value, record.base.value) == ("lora", "sdxl")
    sd = load_file(record.path)
    assert {k.split("_")[1] for k in sd} == {"unet", "te1", "te2"}
    meta = _header(record.path)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    modules = {n: depot.load_model_by_key(key, n).model for n in ("unet", "text_encoder", "text_encoder_2")}
    with patched_loras(modules, [("xl", sd, 1.0)]) as report:
        pass
    assert report.layer_count == len([k for k in sd if k.endswith(".alpha")])
    assert not report.unmatched.get("xl")
