"""Seed 002 (InvokeAI Model Manager V2), as written: HF source syntax, HFModelSource, and metadata.

Each test follows the document's own examples (lines cited), against the local fakehub.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.manager import ModelManager
from modeldepot.remote import (
    AnyModelRepoMetadata,
    HFModelSource,
    HuggingFaceMetadata,
    HuggingFaceMetadataFetch,
    ModelMetadataBase,
    ModelMetadataFetchBase,
    parse_source,
)
from modeldepot.remote.metadata import CivitaiMetadata
from modeldepot.remote.plan import plan_download
from modeldepot.taxonomy import ModelRepoVariant
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub

REPO = "stabilityai/stable-diffusion-v4"
W = b"\x00" * (11 * 1024)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo(
            REPO,
            {
                "model_index.json": json.dumps({"unet": ["diffusers", "U"], "vae": ["diffusers", "V"]}).encode(),
                "unet/config.json": b"{}",
                "unet/diffusion_pytorch_model.safetensors": W + b"u32",
                "unet/diffusion_pytorch_model.fp16.safetensors": W + b"u16",
                "vae/config.json": b"{}",
                "vae/diffusion_pytorch_model.safetensors": W + b"v32",
                "vae/diffusion_pytorch_model.fp16.safetensors": W + b"v16",
                "vae_decoder/config.json": b"{}",
                "vae_decoder/model.onnx": W + b"dec",
                "vae_encoder/config.json": b"{}",
                "vae_encoder/model.onnx": W + b"enc",
                "checkpoints/sd4.safetensors": W + b"ckpt",
                "path/to/model.safetensors": W + b"m32",
                "path/to/model.fp16.safetensors": W + b"m16",
            },
            tags=["diffusers", "text-to-image"],
            card_data={"license": "openrail++"},
            author="stabilityai",
        )
        yield h


@pytest.fixture(scope="module")
def cfg(hub: FakeHub) -> DepotConfig:
    return DepotConfig(hf_endpoint=hub.url, civitai_endpoint=hub.url)


def planned(cfg: DepotConfig, source: str, tmp_path: Path) -> set[str]:
    return {f.path for f in plan_download(cfg, parse_source(source, cfg), tmp_path).files}


# -- lines 447-450 and 1619-1626: the source strings ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variant", "subfolder", "file"),
    [
        (f"{REPO}:fp16", "fp16", None, None),
        (f"{REPO}:fp16:vae", "fp16", "vae", None),
        (f"{REPO}:onnx:vae", "onnx", "vae", None),
        (f"{REPO}::/checkpoints/sd4.safetensors", None, None, "checkpoints/sd4.safetensors"),
        ("model/name:fp16:vae", "fp16", "vae", None),
        ("model/name::vae", None, "vae", None),
        ("model/name:fp16:path/to/model.safetensors", "fp16", None, "path/to/model.safetensors"),
        ("model/name::path/to/model.safetensors", None, None, "path/to/model.safetensors"),
    ],
)
def test_documented_source_strings_parse(
    text: str, variant: str | None, subfolder: str | None, file: str | None
) -> None:
    src = parse_source(text)
    assert isinstance(src, HFModelSource)
    assert (src.variant, src.subfolder, src.file) == (
        ModelRepoVariant(variant) if variant else None,
        subfolder,
        file,
    )
    assert parse_source(str(src)) == src


def test_documented_source_strings_fetch_what_they_say(cfg: DepotConfig, tmp_path: Path) -> None:
    assert planned(cfg, f"{REPO}:fp16", tmp_path) >= {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    assert planned(cfg, f"{REPO}:fp16:vae", tmp_path) == {
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    assert planned(cfg, f"{REPO}:onnx:vae", tmp_path) == {
        "vae_decoder/config.json",
        "vae_decoder/model.onnx",
        "vae_encoder/config.json",
        "vae_encoder/model.onnx",
    }
    assert planned(cfg, f"{REPO}::/checkpoints/sd4.safetensors", tmp_path) == {"checkpoints/sd4.safetensors"}
    # "an individual model file, fp16 variant" / "... default variant"
    assert planned(cfg, f"{REPO}:fp16:path/to/model.safetensors", tmp_path) == {"path/to/model.fp16.safetensors"}
    assert planned(cfg, f"{REPO}::path/to/model.safetensors", tmp_path) == {"path/to/model.safetensors"}
    # "model/name::vae -- vae submodel, using default precision": the variant "will be automatically
    # filled in with fp32 if the user has requested full precision, and fp16 otherwise" (line 455).
    assert planned(cfg, f"{REPO}::vae", tmp_path) == {"vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"}
    full = cfg.model_copy(update={"precision": "float32"})
    assert planned(full, f"{REPO}::vae", tmp_path) == {"vae/config.json", "vae/diffusion_pytorch_model.safetensors"}
    assert planned(cfg, f"{REPO}:default:vae", tmp_path) == {
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    }
    # "model/name:fp32 -- entire model, using the fp32 variant" (the unqualified files here)
    assert not any(".fp16." in p for p in planned(cfg, f"{REPO}:fp32", tmp_path))


# -- lines 577-623: HFModelSource ------------------------------------------------------------------


def test_hf_model_source_arguments_as_documented(cfg: DepotConfig, tmp_path: Path) -> None:
    src = HFModelSource(repo_id=REPO, variant="fp16", subfolder=Path("vae"), access_token="hf_secret")  # type: ignore[arg-type]
    assert src.variant is ModelRepoVariant.FP16 and src.subfolder == "vae" and str(src) == f"{REPO}:fp16:vae"
    assert "hf_secret" not in str(src) + repr(src)
    # "The variant ... Default ModelRepoVariant('fp16')": no variant given fetches the fp16 files ...
    default = plan_download(cfg, HFModelSource(repo_id=REPO), tmp_path)
    assert default.chosen_variant is ModelRepoVariant.FP16 and default.variant_reason
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in {f.path for f in default.files}
    # ... and "specifying ModelRepoVariant.DEFAULT will retrieve model files that are unqualified".
    plain = plan_download(cfg, HFModelSource(repo_id=REPO, variant=ModelRepoVariant("default")), tmp_path)
    weights = {f.path for f in plain.files if f.path.endswith(".safetensors")}
    assert weights == {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"}


def test_default_install_of_a_repo_without_fp16_files_uses_the_unqualified_ones(hub: FakeHub, tmp_path: Path) -> None:
    files = tree(factories.write_diffusers_pipeline(tmp_path / "plain"))
    hub.add_hf_repo("acme/fp32-only", files)
    half = tree(factories.write_diffusers_pipeline(tmp_path / "half", fp16=True))
    hub.add_hf_repo("acme/with-fp16", files | half)
    with ModelManager.open(
        home=tmp_path / "depot", hf_endpoint=hub.url, civitai_endpoint=hub.url, link_modes=["hardlink", "copy"]
    ) as mm:
        job = mm.install.wait_for_job(mm.install.heuristic_import("acme/fp32-only"), timeout=60)
        assert job.complete, job.error
        assert job.config_out is not None
        installed = {p.name for p in Path(job.config_out.path).rglob("*.safetensors")}
        assert installed and not any(".fp16." in n for n in installed)
        job16 = mm.install.wait_for_job(mm.install.heuristic_import("acme/with-fp16"), timeout=60)
        assert job16.complete, job16.error
        assert job16.config_out is not None
        installed16 = {p.name for p in Path(job16.config_out.path).rglob("*.safetensors")}
        assert installed16 and all(".fp16." in n for n in installed16)
        # "The ModelConfigBase stores this response in the source_api_response field as a JSON blob."
        assert job16.config_out.source_api_response is not None
        meta = ModelMetadataFetchBase.from_json(job16.config_out.source_api_response)
        assert isinstance(meta, HuggingFaceMetadata) and meta.id == "acme/with-fp16" and meta.name == "with-fp16"


# -- lines 1199-1294: metadata ---------------------------------------------------------------------


def test_metadata_example_usage(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPOT_HF_ENDPOINT", hub.url)  # the settings, as a user's installation has them
    hf = HuggingFaceMetadataFetch()
    model_metadata = hf.from_id(REPO)
    assert isinstance(model_metadata, HuggingFaceMetadata)
    assert isinstance(model_metadata, ModelMetadataBase)
    # ModelMetadataBase: name, author, tags (a set)
    assert (model_metadata.name, model_metadata.author) == ("stable-diffusion-v4", "stabilityai")
    assert model_metadata.tags == {"diffusers", "text-to-image"}
    # HuggingFaceMetadata: type, id, tag_dict, last_modified, files
    assert model_metadata.type == "huggingface" and model_metadata.id == REPO
    assert model_metadata.tag_dict == {"license": "openrail++"} and model_metadata.license == "openrail++"
    assert model_metadata.last_modified is not None
    assert Path("checkpoints/sd4.safetensors") in {f.path for f in model_metadata.files}
    assert hf.from_url(f"https://huggingface.co/{REPO}") == model_metadata


def test_from_json_returns_the_union_member(cfg: DepotConfig) -> None:
    meta = HuggingFaceMetadataFetch(config=cfg).from_id(REPO)
    text = meta.model_dump_json()
    any_meta: AnyModelRepoMetadata = ModelMetadataFetchBase.from_json(text)
    assert any_meta == meta and isinstance(any_meta, HuggingFaceMetadata)
    assert HuggingFaceMetadataFetch.from_json(text) == meta  # "overrides ... to return HuggingFaceMetadata"


def test_a_requests_session_can_be_given(cfg: DepotConfig) -> None:
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        meta = HuggingFaceMetadataFetch(session, config=cfg).from_id(REPO)
    assert meta.id == REPO


def test_civitai_install_stores_readable_metadata(hub: FakeHub, tmp_path: Path) -> None:
    emb = factories.write_textual_inversion(tmp_path / "emb.safetensors")
    hub.add_civitai_model(
        {
            "id": 7,
            "name": "Nice Embedding",
            "type": "TextualInversion",
            "creator": {"username": "maker"},
            "modelVersions": [
                {
                    "id": 70,
                    "name": "v1",
                    "baseModel": "SD 1.5",
                    "trainedWords": ["nicestyle"],
                    "files": [{"name": "nice.safetensors", "type": "Model", "primary": True, "data": emb.read_bytes()}],
                }
            ],
        }
    )
    with ModelManager.open(
        home=tmp_path / "depot", hf_endpoint=hub.url, civitai_endpoint=hub.url, link_modes=["hardlink", "copy"]
    ) as mm:
        job = mm.install.wait_for_job(mm.install.heuristic_import("civitai:70"), timeout=60)
        assert job.complete, job.error
        assert job.config_out is not None and job.config_out.source_api_response is not None
        meta = ModelMetadataFetchBase.from_json(job.config_out.source_api_response)
    assert isinstance(meta, CivitaiMetadata)
    assert (meta.version_id, meta.name, meta.author, meta.trained_words) == (
        70,
        "Nice Embedding",
        "maker",
        {"nicestyle"},
    )
