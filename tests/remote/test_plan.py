"""Download plans for Hugging Face sources: the default fp16 preference, variants, subfolders, files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import NoLoadableFilesError
from modeldepot.remote import ModelMetadataFetchBase, parse_source
from modeldepot.remote.plan import DownloadPlan, plan_download
from modeldepot.taxonomy import ModelRepoVariant
from modeldepot.testing.fakehub import FakeHub

FP16 = ModelRepoVariant.FP16
DEFAULT = ModelRepoVariant.Default
W = b"\x00" * (11 * 1024)
INDEX = json.dumps({"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}).encode()
ONNX_INDEX = json.dumps(
    {
        "_class_name": "OnnxStableDiffusionPipeline",
        "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
        "vae_encoder": ["diffusers", "OnnxRuntimeModel"],
    }
).encode()
PIPELINE = {
    "model_index.json": INDEX,
    "unet/config.json": b"{}",
    "unet/diffusion_pytorch_model.safetensors": W + b"u32",
    "vae/config.json": b"{}",
    "vae/diffusion_pytorch_model.safetensors": W + b"v32",
}
FP16_FILES = {
    "unet/diffusion_pytorch_model.fp16.safetensors": W + b"u16",
    "vae/diffusion_pytorch_model.fp16.safetensors": W + b"v16",
}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo("acme/both", PIPELINE | FP16_FILES)
        h.add_hf_repo("acme/plain", PIPELINE)
        h.add_hf_repo("acme/half-vae", PIPELINE | {"vae/diffusion_pytorch_model.fp16.safetensors": W + b"v16"})
        h.add_hf_repo("acme/branchy", PIPELINE)
        h.add_hf_repo("acme/branchy", PIPELINE, revision="fp16")
        h.add_hf_repo(
            "acme/onnx",
            {
                "model_index.json": ONNX_INDEX,
                "unet/config.json": b"{}",
                "unet/model.onnx": W + b"unet",
                "unet/weights.pb": W + b"unet-data",
                "vae_decoder/config.json": b"{}",
                "vae_decoder/model.onnx": W + b"dec",
                "vae_encoder/config.json": b"{}",
                "vae_encoder/model.onnx": W + b"enc",
            },
        )
        h.add_hf_repo(
            "acme/ckpts",
            {
                "checkpoints/sd4.safetensors": W + b"32",
                "checkpoints/sd4.fp16.safetensors": W + b"16",
                "README.md": b"# ckpts",
            },
        )
        yield h


@pytest.fixture(scope="module")
def cfg(hub: FakeHub) -> DepotConfig:
    return DepotConfig(hf_endpoint=hub.url, civitai_endpoint=hub.url)


def plan(cfg: DepotConfig, text: str, tmp_path: Path) -> DownloadPlan:
    return plan_download(cfg, parse_source(text, cfg), tmp_path / "dest")


def paths(p: DownloadPlan) -> set[str]:
    return {f.path for f in p.files}


def weights(p: DownloadPlan) -> set[str]:
    return {f.path for f in p.files if f.path.endswith((".safetensors", ".onnx"))}


def test_no_variant_prefers_fp16_files(cfg: DepotConfig, tmp_path: Path) -> None:
    p = plan(cfg, "acme/both", tmp_path)
    assert weights(p) == set(FP16_FILES)
    assert p.chosen_variant == FP16
    assert p.variant_reason == "variant fp16 (default: the repo has fp16 files)"


def test_no_variant_falls_back_to_the_unqualified_files(cfg: DepotConfig, tmp_path: Path) -> None:
    p = plan(cfg, "acme/plain", tmp_path)
    assert weights(p) == {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"}
    assert p.chosen_variant == DEFAULT
    assert p.variant_reason == "variant default (default: no fp16 files)"


def test_the_subfolder_asked_for_decides(cfg: DepotConfig, tmp_path: Path) -> None:
    # The repo has fp16 files, but not in unet: unet's default files are chosen, and said so.
    unet = plan(cfg, "acme/half-vae::unet", tmp_path)
    assert weights(unet) == {"unet/diffusion_pytorch_model.safetensors"} and unet.chosen_variant == DEFAULT
    assert unet.model_subpath == "unet"
    vae = plan(cfg, "acme/half-vae::/vae", tmp_path)  # a leading slash is the same folder
    assert weights(vae) == {"vae/diffusion_pytorch_model.fp16.safetensors"} and vae.chosen_variant == FP16
    assert vae.model_subpath == "vae"


def test_an_fp16_branch_counts_as_fp16_files(cfg: DepotConfig, tmp_path: Path, hub: FakeHub) -> None:
    p = plan(cfg, "acme/branchy", tmp_path)
    assert p.chosen_variant == FP16 and "'fp16' branch" in (p.variant_reason or "")
    branch_sha = hub.hf.repos["acme/branchy"].branches["fp16"]
    assert all(f"/resolve/{branch_sha}/" in f.url for f in p.files)


def test_explicit_variants_keep_their_meaning(cfg: DepotConfig, tmp_path: Path) -> None:
    default = plan(cfg, "acme/both:default", tmp_path)
    assert not any(".fp16." in w for w in weights(default)) and default.chosen_variant == DEFAULT
    assert default.variant_reason == "variant default (the unlabelled files)"
    fp32 = plan(cfg, "acme/both:fp32", tmp_path)
    assert weights(fp32) == weights(default)
    fp16 = plan(cfg, "acme/both:fp16", tmp_path)
    assert weights(fp16) == set(FP16_FILES) and fp16.variant_reason == "variant fp16 (asked for)"
    missing = plan(cfg, "acme/plain:fp16", tmp_path)
    assert missing.chosen_variant == DEFAULT
    assert missing.variant_reason == "variant default (asked for fp16, but the repo has no fp16 files)"


def test_fp16_vae_subfolder(cfg: DepotConfig, tmp_path: Path) -> None:
    p = plan(cfg, "acme/both:fp16:vae", tmp_path)
    assert paths(p) == {"vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"}
    assert p.model_subpath == "vae"


def test_onnx_vae_is_the_exported_decoder_and_encoder(cfg: DepotConfig, tmp_path: Path) -> None:
    p = plan(cfg, "acme/onnx:onnx:vae", tmp_path)
    assert paths(p) == {
        "vae_decoder/config.json",
        "vae_decoder/model.onnx",
        "vae_encoder/config.json",
        "vae_encoder/model.onnx",
    }
    assert p.chosen_variant == ModelRepoVariant.ONNX and p.model_subpath is None
    assert any("vae_decoder + vae_encoder" in n for n in p.notes)
    whole = plan(cfg, "acme/onnx:onnx", tmp_path)
    assert {"unet/model.onnx", "unet/weights.pb", "vae_decoder/model.onnx"} <= paths(whole)
    with pytest.raises(NoLoadableFilesError, match="onnx"):
        plan(cfg, "acme/onnx", tmp_path)  # no torch weights; the message says to ask for onnx


def test_single_files_by_path(cfg: DepotConfig, tmp_path: Path) -> None:
    exact = plan(cfg, "acme/ckpts::/checkpoints/sd4.safetensors", tmp_path)
    assert paths(exact) == {"checkpoints/sd4.safetensors"} and exact.model_subpath == "checkpoints/sd4.safetensors"
    assert exact.chosen_variant == DEFAULT and exact.variant_reason == "variant default (the file asked for)"
    assert plan(cfg, "acme/ckpts::checkpoints/sd4.safetensors", tmp_path).files == exact.files
    half = plan(cfg, "acme/ckpts:fp16:checkpoints/sd4.safetensors", tmp_path)
    assert paths(half) == {"checkpoints/sd4.fp16.safetensors"} and half.chosen_variant == FP16
    assert half.model_subpath == "checkpoints/sd4.fp16.safetensors"
    with pytest.raises(NoLoadableFilesError, match=r"no file 'checkpoints/none\.safetensors'"):
        plan(cfg, "acme/ckpts::checkpoints/none.safetensors", tmp_path)


def test_plan_metadata_reads_back_as_hugging_face_metadata(cfg: DepotConfig, tmp_path: Path) -> None:
    p = plan(cfg, "acme/both", tmp_path)
    meta = ModelMetadataFetchBase.from_json(p.metadata["source_api_response"])
    assert meta.type == "huggingface" and meta.name == "both" and len(meta.files) == len(PIPELINE | FP16_FILES)
    assert json.loads(p.metadata["source_api_response"])["id"] == "acme/both"  # the raw answer is still there


def test_full_precision_settings_make_the_default_the_unlabelled_files(hub: FakeHub, tmp_path: Path) -> None:
    full = DepotConfig(hf_endpoint=hub.url, precision="float32")
    p = plan(full, "acme/both", tmp_path)
    assert not any(".fp16." in w for w in weights(p)) and p.chosen_variant == DEFAULT
    assert p.variant_reason == "variant default (default: precision is float32 in the settings)"
    # An explicit variant still wins over the settings.
    assert plan(full, "acme/both:fp16", tmp_path).chosen_variant == FP16


def test_model_folder_for_joined_and_file_subpaths(cfg: DepotConfig, tmp_path: Path) -> None:
    joined = plan(cfg, "acme/both::unet+vae", tmp_path)
    assert joined.model_subpath is None and {"unet/config.json", "vae/config.json"} <= paths(joined)
    config_file = plan(cfg, "acme/both::unet/config.json", tmp_path)
    assert paths(config_file) == {"unet/config.json"} and config_file.model_subpath == "unet/config.json"
