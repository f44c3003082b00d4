"""HuggingFaceClient against a real local HTTP server (fakehub)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import DownloadError, RemoteAccessError, RemoteNotFoundError
from modeldepot.remote import HuggingFaceClient, hf_metadata_for_record, parse_source
from modeldepot.remote.sources import HFModelSource
from modeldepot.taxonomy import ModelRepoVariant
from modeldepot.testing.fakehub import FakeHub

TOKEN = "hf_gated_SECRET_0123"
BIG = b"\x00" * (11 * 1024)  # above fakehub's LFS threshold


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo(
            "org/sd",
            {
                "model_index.json": json.dumps(
                    {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                     "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None]}
                ).encode(),
                "README.md": b"# hi",
                "unet/config.json": b"{}",
                "unet/diffusion_pytorch_model.safetensors": BIG + b"u32",
                "unet/diffusion_pytorch_model.fp16.safetensors": BIG + b"u16",
                "vae/config.json": b"{}",
                "vae/diffusion_pytorch_model.safetensors": BIG + b"v32",
                "safety_checker/config.json": b"{}",
                "safety_checker/model.safetensors": BIG + b"s",
            },
            tags=["diffusers", "license:creativeml-openrail-m", "text-to-image"],
            card_data={"license": "openrail", "description": "A test pipeline"},
            author="org",
        )  # fmt: skip
        h.add_hf_repo(
            "org/sd",
            {
                "model_index.json": b'{"unet": ["diffusers", "UNet2DConditionModel"]}',
                "unet/config.json": b"{}",
                "unet/diffusion_pytorch_model.safetensors": BIG,
            },
            revision="fp16",
        )
        h.add_hf_repo(
            "org/many", {f"dir{i % 3}/file{i:03d}.json": b"{}" for i in range(120)} | {"model.safetensors": BIG}
        )
        h.add_hf_repo("org/gated", {"config.json": b"{}", "model.safetensors": BIG}, gated_token=TOKEN)
        h.add_hf_repo("org/private", {"model.safetensors": BIG}, gated_token=TOKEN, private=True)
        h.add_hf_repo("org/tagged", {"model.safetensors": BIG}, tags=["license:mit"])
        yield h


@pytest.fixture
def client(hub: FakeHub) -> Iterator[HuggingFaceClient]:
    with HuggingFaceClient(hub.url, use_cached_login=False) as c:
        yield c


def test_model_info(client: HuggingFaceClient) -> None:
    info = client.model_info("org/sd")
    assert info.repo_id == "org/sd" and len(info.sha or "") == 40
    assert info.author == "org" and info.license == "openrail"
    assert "text-to-image" in info.tags and info.last_modified is not None
    assert not info.is_gated
    by_path = {f.path: f for f in info.siblings}
    unet = by_path["unet/diffusion_pytorch_model.safetensors"]
    assert unet.size == len(BIG) + 3 and unet.sha256 is not None and len(unet.sha256) == 64
    assert by_path["unet/config.json"].sha256 is None and by_path["unet/config.json"].size == 2
    assert json.loads(info.raw_json())["id"] == "org/sd"
    meta = hf_metadata_for_record(info)
    assert meta["license"] == "openrail" and meta["author"] == "org" and meta["description"] == "A test pipeline"
    assert "license:creativeml-openrail-m" not in meta["tags"]
    assert json.loads(meta["source_api_response"])["sha"] == info.sha


def test_license_from_tags(client: HuggingFaceClient) -> None:
    assert client.model_info("org/tagged").license == "mit"


def test_tree_listing_follows_pagination(client: HuggingFaceClient, hub: FakeHub) -> None:
    hub.stats.reset()
    files = client.list_files("org/many", "main")
    assert len(files) == 121 and len({f.path for f in files}) == 121
    pages = [r for r in hub.stats.requests if r.path.startswith("/api/models/org/many/tree")]
    assert len(pages) >= 3  # 121 files + 3 folder entries at 50 a page
    assert {f.path for f in files if f.path.startswith("dir1/")} == {f"dir1/file{i:03d}.json" for i in range(1, 120, 3)}


def test_revision_branch(client: HuggingFaceClient) -> None:
    assert client.branch_exists("org/sd", "fp16")
    assert not client.branch_exists("org/sd", "nope")
    assert client.revision_for_variant("org/sd", ModelRepoVariant.FP16) == "fp16"
    assert client.revision_for_variant("org/many", ModelRepoVariant.FP16) is None
    branch = client.model_info("org/sd", "fp16")
    assert branch.sha != client.model_info("org/sd").sha
    assert {f.path for f in client.list_files("org/sd", "fp16")} == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    }
    with pytest.raises(RemoteNotFoundError, match="has no revision 'nope'"):
        client.model_info("org/sd", "nope")
    with pytest.raises(RemoteNotFoundError, match="'org/nme' not found"):
        client.branch_exists("org/nme", "fp16")


def test_select_files_reads_model_index_and_prefers_the_variant_branch(client: HuggingFaceClient) -> None:
    _, sel = client.select_files("org/sd", ModelRepoVariant.Default)
    assert sel.paths == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert sel.variant_reason == "variant default (the unlabelled files)"
    # No variant asked for: the fp16 files of main win (vae has none, so its default is kept, and said).
    info, pref = client.select_files("org/sd", None)
    assert info.revision is None and pref.chosen_variant == ModelRepoVariant.FP16
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in pref.paths
    assert "vae/diffusion_pytorch_model.safetensors" in pref.paths
    assert pref.variant_reason == "variant fp16 (default: the repo has fp16 files)"
    assert "no fp16 weights for vae; using default" in pref.notes
    info16, sel16 = client.select_files("org/sd", ModelRepoVariant.FP16)
    assert info16.revision == "fp16" and sel16.variant_used == ModelRepoVariant.FP16
    assert sel16.notes[0] == "using the 'fp16' branch"
    _, labelled = client.select_files("org/sd", ModelRepoVariant.FP16, revision="main")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in labelled.paths
    assert "no fp16 weights for vae; using default" in labelled.notes


def test_resolve_url(client: HuggingFaceClient, hub: FakeHub) -> None:
    url = client.resolve_url("org/sd", "refs/pr/1", "unet/a b.safetensors")
    assert url == f"{hub.url}/org/sd/resolve/refs%2Fpr%2F1/unet/a%20b.safetensors"
    assert client.resolve_url("org/sd", None, "x.json").endswith("/org/sd/resolve/main/x.json")
    # The URL a user pastes parses back to the same repo and file.
    src = parse_source(url, config=DepotConfig(hf_endpoint=hub.url))
    assert isinstance(src, HFModelSource) and src.file == "unet/a b.safetensors" and src.revision == "refs/pr/1"


def test_not_found_names_the_repo(client: HuggingFaceClient) -> None:
    with pytest.raises(RemoteNotFoundError) as info:
        client.model_info("org/nme")
    msg = str(info.value)
    assert "Hugging Face repo 'org/nme' not found" in msg and "check the spelling" in msg and "token" in msg
    with pytest.raises(RemoteNotFoundError, match=r"has no file 'missing\.bin'"):
        client.check_file_access("org/sd", "main", "missing.bin")


def test_gated_repo_needs_a_token(client: HuggingFaceClient, hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    info = client.model_info("org/gated")  # gated metadata is public
    assert info.is_gated
    with pytest.raises(RemoteAccessError) as no_token:
        client.check_file_access("org/gated", None, "model.safetensors")
    assert "--token" in str(no_token.value) and "huggingface-cli login" in str(no_token.value)
    assert "org/gated" in str(no_token.value)
    with HuggingFaceClient(hub.url, token="hf_wrong", use_cached_login=False) as wrong:
        with pytest.raises(RemoteAccessError, match="not allowed") as bad:
            wrong.check_file_access("org/gated", None, "model.safetensors")
        assert "hf_wrong" not in str(bad.value) and "hf_wrong" not in repr(wrong)
    with HuggingFaceClient(hub.url, token=TOKEN, use_cached_login=False) as good:
        good.check_file_access("org/gated", None, "model.safetensors")
        assert good.download_headers() == {"Authorization": f"Bearer {TOKEN}"}
        assert TOKEN not in repr(good)
        assert good.model_info("org/private").repo_id == "org/private"
    assert TOKEN not in caplog.text


def test_private_repo_without_token_reads_as_not_found(client: HuggingFaceClient) -> None:
    with pytest.raises(RemoteNotFoundError, match="private repos need a token"):
        client.model_info("org/private")


def test_token_resolution_order(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DepotConfig(remote_api_tokens=[{"url_regex": "127\\.0\\.0\\.1", "token": TOKEN}])
    with HuggingFaceClient.from_config(cfg.model_copy(update={"hf_endpoint": hub.url})) as c:
        c.check_file_access("org/gated", None, "model.safetensors")
        assert c.token_for(hub.url) == TOKEN
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # huggingface_hub's cached login
    with HuggingFaceClient(hub.url) as c:
        assert c.token_for(hub.url) == TOKEN
        c.check_file_access("org/gated", None, "model.safetensors")
    with HuggingFaceClient(hub.url, token="explicit", config=cfg) as c:
        assert c.token_for(hub.url) == "explicit"
    with HuggingFaceClient(hub.url, use_cached_login=False) as c:
        assert c.token_for(hub.url) is None


def test_retries_transient_errors_then_reports_them(client: HuggingFaceClient, hub: FakeHub) -> None:
    hub.faults("/api/models/org/tagged", status=503, status_times=1, retry_after=0)
    try:
        assert client.model_info("org/tagged").license == "mit"
        hub.faults("/api/models/org/tagged", status=500, status_times=0, retry_after=0)
        with pytest.raises(DownloadError, match="answered 500 for repo 'org/tagged'"):
            client.model_info("org/tagged")
    finally:
        hub.clear_faults()


def test_unreachable_endpoint_is_a_download_error() -> None:
    with (
        HuggingFaceClient("http://127.0.0.1:9", use_cached_login=False, retries=0) as c,
        pytest.raises(DownloadError, match="cannot reach Hugging Face"),
    ):
        c.model_info("org/sd")
