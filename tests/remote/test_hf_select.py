"""File selection on realistic Hugging Face listings (pure: no network)."""

from __future__ import annotations

import pytest

from modeldepot.errors import RemoteNotFoundError, UnsafePathError
from modeldepot.remote import HFFile, NoLoadableFilesError, select_hf_files, select_preferred
from modeldepot.remote.hf_select import framework_of
from modeldepot.taxonomy import ModelRepoVariant

FP16 = ModelRepoVariant.FP16
GB = 1 << 30


def listing(spec: dict[str, int] | list[str]) -> list[HFFile]:
    if isinstance(spec, list):
        spec = {p: 100 for p in spec}
    return [HFFile(path=p, size=s) for p, s in spec.items()]


def paths(sel: object) -> set[str]:
    return set(sel.paths)  # type: ignore[attr-defined]


SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD15 = listing(
    {
        ".gitattributes": 1,
        "README.md": 1,
        "model_index.json": 1,
        "v1-5-pruned-emaonly.ckpt": 4 * GB,
        "v1-5-pruned-emaonly.safetensors": 4 * GB,
        "v1-5-pruned.ckpt": 7 * GB,
        "v1-5-pruned.safetensors": 7 * GB,
        "v1-inference.yaml": 1,
        "feature_extractor/preprocessor_config.json": 1,
        "safety_checker/config.json": 1,
        "safety_checker/model.fp16.safetensors": 600,
        "safety_checker/model.safetensors": 1200,
        "safety_checker/pytorch_model.bin": 1200,
        "safety_checker/pytorch_model.fp16.bin": 600,
        "safety_checker/flax_model.msgpack": 1200,
        "scheduler/scheduler_config.json": 1,
        "text_encoder/config.json": 1,
        "text_encoder/model.fp16.safetensors": 246,
        "text_encoder/model.safetensors": 492,
        "text_encoder/pytorch_model.bin": 492,
        "text_encoder/pytorch_model.fp16.bin": 246,
        "text_encoder/flax_model.msgpack": 492,
        "tokenizer/merges.txt": 1,
        "tokenizer/special_tokens_map.json": 1,
        "tokenizer/tokenizer_config.json": 1,
        "tokenizer/vocab.json": 1,
        "unet/config.json": 1,
        "unet/diffusion_pytorch_model.bin": 3400,
        "unet/diffusion_pytorch_model.fp16.bin": 1700,
        "unet/diffusion_pytorch_model.fp16.safetensors": 1700,
        "unet/diffusion_pytorch_model.non_ema.bin": 3400,
        "unet/diffusion_pytorch_model.non_ema.safetensors": 3400,
        "unet/diffusion_pytorch_model.safetensors": 3400,
        "unet/diffusion_pytorch_model.msgpack": 3400,
        "vae/config.json": 1,
        "vae/diffusion_pytorch_model.bin": 335,
        "vae/diffusion_pytorch_model.fp16.bin": 167,
        "vae/diffusion_pytorch_model.fp16.safetensors": 167,
        "vae/diffusion_pytorch_model.safetensors": 335,
        "vae/diffusion_pytorch_model.msgpack": 335,
    }
)
SD15_CONFIGS = {
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
}


@pytest.mark.parametrize("index", [SD15_INDEX, None], ids=["model_index", "no_model_index_contents"])
def test_sd15_default(index: dict[str, object] | None) -> None:
    sel = select_hf_files(SD15, None, None, model_index=index)
    assert paths(sel) == SD15_CONFIGS | {
        "safety_checker/model.safetensors",
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }
    assert sel.variant_used == ModelRepoVariant.Default
    assert any("ignored root checkpoints" in n for n in sel.notes)
    assert any("flax" in n for n in sel.notes)


def test_sd15_fp16() -> None:
    sel = select_hf_files(SD15, FP16, None, model_index=SD15_INDEX)
    assert paths(sel) == SD15_CONFIGS | {
        "safety_checker/model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    assert sel.variant_used == FP16
    assert not any(n.startswith("no fp16") for n in sel.notes)


def test_fp32_uses_unlabelled_weights_quietly() -> None:
    sel = select_hf_files(SD15, ModelRepoVariant.FP32, None, model_index=SD15_INDEX)
    assert "unet/diffusion_pytorch_model.safetensors" in sel.paths
    assert not any(n.startswith("no fp32") for n in sel.notes)


def test_model_index_limits_folders_and_skips_null_components() -> None:
    index = {**SD15_INDEX, "safety_checker": [None, None], "feature_extractor": [None, None]}
    sel = select_hf_files(SD15, None, None, model_index=index)
    assert not any(p.startswith(("safety_checker/", "feature_extractor/")) for p in sel.paths)
    assert "unet/diffusion_pytorch_model.safetensors" in sel.paths


SDXL = listing(
    {
        "01.png": 1,
        "README.md": 1,
        "LICENSE.md": 1,
        "model_index.json": 1,
        "sd_xl_base_1.0.safetensors": 6 * GB,
        "sd_xl_base_1.0_0.9vae.safetensors": 6 * GB,
        "sd_xl_offset_example-lora_1.0.safetensors": 49,
        "scheduler/scheduler_config.json": 1,
        "text_encoder/config.json": 1,
        "text_encoder/flax_model.msgpack": 492,
        "text_encoder/model.fp16.safetensors": 246,
        "text_encoder/model.onnx": 492,
        "text_encoder/model.safetensors": 492,
        "text_encoder/openvino_model.bin": 492,
        "text_encoder/openvino_model.xml": 1,
        "text_encoder_2/config.json": 1,
        "text_encoder_2/model-00001-of-00002.safetensors": 1500,
        "text_encoder_2/model-00002-of-00002.safetensors": 1278,
        "text_encoder_2/model.safetensors.index.json": 1,
        "text_encoder_2/model.fp16-00001-of-00002.safetensors": 750,
        "text_encoder_2/model.fp16-00002-of-00002.safetensors": 639,
        "text_encoder_2/model.fp16.safetensors.index.json": 1,
        "text_encoder_2/model.onnx": 1,
        "text_encoder_2/model.onnx_data": 2778,
        "tokenizer/merges.txt": 1,
        "tokenizer/special_tokens_map.json": 1,
        "tokenizer/tokenizer_config.json": 1,
        "tokenizer/vocab.json": 1,
        "tokenizer_2/merges.txt": 1,
        "tokenizer_2/special_tokens_map.json": 1,
        "tokenizer_2/tokenizer_config.json": 1,
        "tokenizer_2/vocab.json": 1,
        "unet/config.json": 1,
        "unet/diffusion_pytorch_model.fp16.safetensors": 5135,
        "unet/diffusion_pytorch_model.safetensors": 10270,
        "unet/model.onnx": 1,
        "unet/model.onnx_data": 10270,
        "unet/openvino_model.bin": 10270,
        "unet/openvino_model.xml": 1,
        "vae/config.json": 1,
        "vae/diffusion_pytorch_model.fp16.safetensors": 167,
        "vae/diffusion_pytorch_model.safetensors": 335,
        "vae_1_0/config.json": 1,
        "vae_1_0/diffusion_pytorch_model.safetensors": 335,
        "vae_decoder/config.json": 1,
        "vae_decoder/model.onnx": 198,
        "vae_encoder/config.json": 1,
        "vae_encoder/model.onnx": 137,
    }
)
SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SDXL_CONFIGS = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "unet/config.json",
    "vae/config.json",
    *(
        f"tokenizer{s}/{n}"
        for s in ("", "_2")
        for n in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
    ),
}


def test_sdxl_fp16_keeps_the_variant_shard_group_and_its_index() -> None:
    sel = select_hf_files(SDXL, FP16, None, model_index=SDXL_INDEX)
    assert paths(sel) == SDXL_CONFIGS | {
        "text_encoder/model.fp16.safetensors",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.fp16.safetensors.index.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    assert sel.variant_used == FP16
    assert not any(p.endswith((".png", ".md", ".onnx", ".onnx_data", ".xml", ".msgpack")) for p in sel.paths)
    assert not any(p.startswith(("vae_1_0/", "vae_decoder/", "vae_encoder/")) for p in sel.paths)


def test_sdxl_default_takes_the_unlabelled_shards_and_their_index() -> None:
    sel = select_hf_files(SDXL, None, None, model_index=SDXL_INDEX)
    te2 = {p for p in sel.paths if p.startswith("text_encoder_2/")}
    assert te2 == {
        "text_encoder_2/config.json",
        "text_encoder_2/model-00001-of-00002.safetensors",
        "text_encoder_2/model-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.json",
    }
    assert sel.variant_used == ModelRepoVariant.Default


def test_missing_variant_falls_back_per_folder_and_says_so() -> None:
    files = [f for f in SDXL if f.path != "unet/diffusion_pytorch_model.fp16.safetensors"]
    sel = select_hf_files(files, FP16, None, model_index=SDXL_INDEX)
    assert "unet/diffusion_pytorch_model.safetensors" in sel.paths
    assert "vae/diffusion_pytorch_model.fp16.safetensors" in sel.paths
    assert "no fp16 weights for unet; using default" in sel.notes
    assert sel.variant_used == FP16  # other folders did have fp16


def test_transformers_style_index_spelling() -> None:
    files = listing(
        [
            "config.json",
            "model.safetensors.index.fp16.json",
            "model.fp16-00001-of-00002.safetensors",
            "model.fp16-00002-of-00002.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]
    )
    sel = select_hf_files(files, FP16)
    assert paths(sel) == {
        "config.json",
        "model.safetensors.index.fp16.json",
        "model.fp16-00001-of-00002.safetensors",
        "model.fp16-00002-of-00002.safetensors",
    }


FLUX = listing(
    {
        "README.md": 1,
        "LICENSE.md": 1,
        "schnell_grid.jpeg": 1,
        "model_index.json": 1,
        "flux1-schnell.safetensors": 23 * GB,
        "ae.safetensors": 335,
        "scheduler/scheduler_config.json": 1,
        "text_encoder/config.json": 1,
        "text_encoder/model.safetensors": 246,
        "text_encoder_2/config.json": 1,
        "text_encoder_2/model-00001-of-00002.safetensors": 4994,
        "text_encoder_2/model-00002-of-00002.safetensors": 4530,
        "text_encoder_2/model.safetensors.index.json": 1,
        "tokenizer/merges.txt": 1,
        "tokenizer/special_tokens_map.json": 1,
        "tokenizer/tokenizer_config.json": 1,
        "tokenizer/vocab.json": 1,
        "tokenizer_2/special_tokens_map.json": 1,
        "tokenizer_2/spiece.model": 1,
        "tokenizer_2/tokenizer.json": 1,
        "tokenizer_2/tokenizer_config.json": 1,
        "transformer/config.json": 1,
        "transformer/diffusion_pytorch_model-00001-of-00003.safetensors": 9962,
        "transformer/diffusion_pytorch_model-00002-of-00003.safetensors": 9949,
        "transformer/diffusion_pytorch_model-00003-of-00003.safetensors": 3870,
        "transformer/diffusion_pytorch_model.safetensors.index.json": 1,
        "vae/config.json": 1,
        "vae/diffusion_pytorch_model.safetensors": 167,
    }
)
FLUX_INDEX = {
    "_class_name": "FluxPipeline",
    **{
        k: ["x", "Y"]
        for k in ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae")
    },
}


def test_flux_sharded_transformer_with_index_and_fp16_fallback() -> None:
    sel = select_hf_files(FLUX, FP16, None, model_index=FLUX_INDEX)
    expected = {f.path for f in FLUX if "/" in f.path} | {"model_index.json"}
    assert paths(sel) == expected
    assert "tokenizer_2/spiece.model" in sel.paths
    for folder in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        assert f"no fp16 weights for {folder}; using default" in sel.notes
    assert sel.variant_used == ModelRepoVariant.Default


def test_lora_repo_selects_the_lora_file_only() -> None:
    files = listing(
        {
            ".gitattributes": 1,
            "README.md": 1,
            "image_0.png": 1,
            "pytorch_lora_weights.safetensors": 23,
            "checkpoint-500/pytorch_lora_weights.safetensors": 23,
            "checkpoint-500/optimizer.bin": 46,
        }
    )
    sel = select_hf_files(files, None)
    assert sel.paths == ["pytorch_lora_weights.safetensors"]
    assert any("checkpoint-500" in n for n in sel.notes)


def test_bin_only_repo_and_bin_only_folder_are_kept() -> None:
    ti = listing(
        ["README.md", "learned_embeds.bin", "token_identifier.txt", "type_of_concept.txt", "concept_images/0.jpeg"]
    )
    assert paths(select_hf_files(ti, None)) == {"learned_embeds.bin", "token_identifier.txt", "type_of_concept.txt"}
    old = [f for f in SD15 if not f.path.startswith("unet/")] + listing(
        ["unet/config.json", "unet/diffusion_pytorch_model.bin"]
    )
    sel = select_hf_files(old, FP16, None, model_index=SD15_INDEX)
    assert "unet/diffusion_pytorch_model.bin" in sel.paths
    assert "no fp16 weights for unet; using default" in sel.notes


def test_single_file_checkpoint_root_picks_the_largest_safetensors() -> None:
    files = listing(
        {
            "README.md": 1,
            "v1-5-pruned.safetensors": 7 * GB,
            "v1-5-pruned-emaonly.safetensors": 4 * GB,
            "v1-5-pruned.ckpt": 7 * GB,
            "v1-inference.yaml": 1,
        }
    )
    sel = select_hf_files(files, None)
    assert sel.paths == ["v1-5-pruned.safetensors"]
    assert any("v1-5-pruned-emaonly.safetensors" in n for n in sel.notes)
    asked = select_hf_files(files, None, "v1-5-pruned-emaonly.safetensors")
    assert asked.paths == ["v1-5-pruned-emaonly.safetensors"]


def test_checkpoint_keeps_its_a1111_yaml_sidecar() -> None:
    files = listing({"model768.safetensors": 5, "model768.yaml": 1, "other.yaml": 1})
    assert paths(select_hf_files(files, None)) == {"model768.safetensors", "model768.yaml"}


def test_subfolders_and_files() -> None:
    vae = select_hf_files(SDXL, FP16, "vae")
    assert paths(vae) == {"vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"}
    two = select_hf_files(SD15, None, "text_encoder+tokenizer")
    assert {p.split("/")[0] for p in two.paths} == {"text_encoder", "tokenizer"}
    assert "text_encoder/model.safetensors" in two.paths
    one = select_hf_files(SDXL, None, "unet/diffusion_pytorch_model.fp16.safetensors")
    assert one.paths == ["unet/diffusion_pytorch_model.fp16.safetensors"] and one.variant_used == FP16
    tokenizer_only = select_hf_files(SD15, None, "tokenizer")
    assert len(tokenizer_only.paths) == 4 and tokenizer_only.variant_used is None


def test_missing_subfolder_names_what_exists() -> None:
    with pytest.raises(RemoteNotFoundError, match=r"no file or folder 'unet2'.*text_encoder"):
        select_hf_files(SD15, None, "unet2")


def test_unsafe_paths_are_refused() -> None:
    with pytest.raises(UnsafePathError):
        select_hf_files(listing(["../evil.safetensors"]), None)
    with pytest.raises(UnsafePathError):
        select_hf_files(SD15, None, "../unet")


def test_other_framework_only_repo_is_refused_with_a_hint() -> None:
    files = listing(["config.json", "flax_model.msgpack", "tf_model.h5", "README.md"])
    with pytest.raises(NoLoadableFilesError, match=r"flax, tf"):
        select_hf_files(files, None)
    flax = select_hf_files(files, ModelRepoVariant.Flax)
    assert paths(flax) == {"config.json", "flax_model.msgpack"} and flax.variant_used == ModelRepoVariant.Flax


def test_onnx_variant_takes_onnx_files() -> None:
    sel = select_hf_files(SDXL, ModelRepoVariant.ONNX, None, model_index=SDXL_INDEX)
    assert "unet/model.onnx" in sel.paths and "unet/model.onnx_data" in sel.paths
    assert not any(p.endswith(".safetensors") for p in sel.paths)


def test_incomplete_shard_group_prefers_a_complete_one() -> None:
    files = listing(
        [
            "config.json",
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
        ]
    )
    sel = select_hf_files(files, None)
    assert paths(sel) == {"config.json", "pytorch_model.bin"}


def test_variant_branch_listing_has_no_fallback_note() -> None:
    files = listing(["config.json", "diffusion_pytorch_model.safetensors"])
    sel = select_hf_files(files, FP16, variant_branch=True)
    assert sel.variant_used == FP16 and not sel.notes


@pytest.mark.parametrize(
    ("path", "framework"),
    [
        ("unet/diffusion_pytorch_model.safetensors", "torch"),
        ("onnx/model.onnx", "onnx"),
        ("text_encoder/openvino_model.bin", "openvino"),
        ("flax_model.msgpack", "flax"),
        ("tf_model.h5", "tf"),
        ("unet/config.json", None),
        ("onnx/config.json", "onnx"),
    ],
)
def test_framework_of(path: str, framework: str | None) -> None:
    assert framework_of(path) == framework


# -- no variant asked for: fp16 preferred ------------------------------------------------------------


def test_preferred_takes_fp16_when_the_repo_has_it() -> None:
    sel = select_preferred(SD15, model_index=SD15_INDEX)
    assert sel.paths == select_hf_files(SD15, FP16, None, model_index=SD15_INDEX).paths
    assert sel.chosen_variant == FP16
    assert sel.variant_reason == "variant fp16 (default: the repo has fp16 files)"


def test_preferred_falls_back_to_the_unlabelled_files() -> None:
    files = [f for f in SD15 if ".fp16." not in f.path]
    sel = select_preferred(files, model_index=SD15_INDEX)
    assert sel.paths == select_hf_files(files, ModelRepoVariant.Default, None, model_index=SD15_INDEX).paths
    assert sel.chosen_variant == ModelRepoVariant.Default
    assert sel.variant_reason == "variant default (default: no fp16 files)"
    assert not any(n.startswith("no fp16") for n in sel.notes)  # not asked for, so not news


def test_preferred_looks_only_at_the_subfolder_asked_for() -> None:
    files = [f for f in SDXL if f.path != "vae/diffusion_pytorch_model.fp16.safetensors"]
    vae = select_preferred(files, "vae")
    assert vae.paths == ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    assert vae.chosen_variant == ModelRepoVariant.Default
    unet = select_preferred(files, "unet")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in unet.paths and unet.chosen_variant == FP16


def test_preferred_keeps_a_named_file_as_is() -> None:
    sel = select_preferred(SDXL, "unet/diffusion_pytorch_model.safetensors")
    assert sel.paths == ["unet/diffusion_pytorch_model.safetensors"]
    assert sel.variant_reason == "variant default (the file asked for)"


def test_preferred_on_a_repo_with_only_other_frameworks_says_so() -> None:
    files = listing(["config.json", "flax_model.msgpack"])
    with pytest.raises(NoLoadableFilesError, match=r"no loadable default weights.*flax"):
        select_preferred(files)


def test_explicit_variant_reasons() -> None:
    assert select_hf_files(SD15, FP16, model_index=SD15_INDEX).variant_reason == "variant fp16 (asked for)"
    plain = [f for f in SD15 if ".fp16." not in f.path]
    missing = select_hf_files(plain, FP16, model_index=SD15_INDEX)
    assert missing.variant_reason == "variant default (asked for fp16, but the repo has no fp16 files)"


# -- onnx / openvino subfolders ----------------------------------------------------------------------


def test_onnx_vae_is_the_decoder_and_encoder() -> None:
    sel = select_hf_files(SDXL, ModelRepoVariant.ONNX, "vae")
    assert sel.paths == [
        "vae_decoder/config.json",
        "vae_decoder/model.onnx",
        "vae_encoder/config.json",
        "vae_encoder/model.onnx",
    ]
    assert sel.subfolders == ("vae_decoder", "vae_encoder") and sel.chosen_variant == ModelRepoVariant.ONNX
    assert "'vae' is vae_decoder + vae_encoder in this repo's onnx layout" in sel.notes
    # The torch VAE is still the torch VAE.
    assert select_hf_files(SDXL, FP16, "vae").subfolders == ("vae",)


def test_onnx_whole_pipeline_includes_the_split_vae() -> None:
    sel = select_hf_files(SDXL, ModelRepoVariant.ONNX, None, model_index=SDXL_INDEX)
    assert {"vae_decoder/model.onnx", "vae_encoder/model.onnx", "unet/model.onnx"} <= set(sel.paths)
    assert not any(p.startswith("vae/") for p in sel.paths)


def test_onnx_export_under_an_onnx_folder() -> None:
    files = listing(
        ["config.json", "model.safetensors", "onnx/text_encoder/model.onnx", "onnx/text_encoder/config.json"]
    )
    sel = select_hf_files(files, ModelRepoVariant.ONNX, "text_encoder")
    assert sel.paths == ["onnx/text_encoder/config.json", "onnx/text_encoder/model.onnx"]
    with pytest.raises(RemoteNotFoundError, match="no file or folder 'unet'"):
        select_hf_files(files, ModelRepoVariant.ONNX, "unet")
