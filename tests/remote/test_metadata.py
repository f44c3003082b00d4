"""Metadata fetchers (seed 002, "This Meta be Good") against fakehub, and the JSON they store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import ConfigurationError, InvalidSourceError, ModelDepotError, RemoteNotFoundError
from modeldepot.remote import (
    AnyModelRepoMetadataValidator,
    CivitaiClient,
    CivitaiMetadata,
    CivitaiMetadataFetch,
    HuggingFaceClient,
    HuggingFaceMetadata,
    HuggingFaceMetadataFetch,
    InvalidMetadataError,
    ModelMetadataFetchBase,
    RemoteModelFile,
    UnknownMetadataException,
    hf_metadata_for_record,
    metadata_for_record,
)
from modeldepot.remote.metadata import METADATA_KEY, metadata_json_for_record
from modeldepot.taxonomy import ModelRepoVariant
from modeldepot.testing.fakehub import FakeHub

BIG = b"\x00" * (11 * 1024)  # above fakehub's LFS threshold, so the listing carries sha256
UNET32 = BIG + b"u32"
UNET16 = BIG + b"u16"
LORA = BIG + b"lora"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_hf_repo(
            "org/sd",
            {
                "model_index.json": b'{"unet": ["diffusers", "UNet2DConditionModel"]}',
                "README.md": b"# sd",
                "unet/config.json": b"{}",
                "unet/diffusion_pytorch_model.safetensors": UNET32,
                "unet/diffusion_pytorch_model.fp16.safetensors": UNET16,
            },
            tags=["diffusers", "license:openrail", "text-to-image"],
            card_data={"license": "openrail", "description": "A tiny pipeline", "pipeline_tag": "text-to-image"},
            author="someone",
        )
        h.add_hf_repo(
            "org/sd", {"model_index.json": b"{}", "unet/diffusion_pytorch_model.safetensors": UNET16}, revision="fp16"
        )
        h.add_civitai_model(
            {
                "id": 1,
                "name": "Cool LoRA",
                "type": "LORA",
                "nsfw": True,
                "description": "<p>Makes things <b>cool</b>.</p>",
                "tags": ["style", "cool"],
                "creator": {"username": "alice"},
                "allowNoCredit": False,
                "allowDerivatives": False,
                "allowCommercialUse": ["Image", "Sell"],
                "modelVersions": [
                    {
                        "id": 12,
                        "name": "v2",
                        "baseModel": "SDXL 1.0",
                        "trainedWords": ["cool", "shiny"],
                        "images": [{"url": "http://img.example/12.png"}],
                        "files": [{"name": "cool_v2.safetensors", "type": "Model", "primary": True, "data": LORA}],
                    },
                    {"id": 11, "name": "v1", "files": [{"name": "cool_v1.safetensors", "data": b"v1" * 10}]},
                ],
            }
        )
        yield h


@pytest.fixture(scope="module")
def cfg(hub: FakeHub) -> DepotConfig:
    return DepotConfig(hf_endpoint=hub.url, civitai_endpoint=hub.url)


# -- Hugging Face -----------------------------------------------------------------------------------


def test_hf_from_id(cfg: DepotConfig, hub: FakeHub) -> None:
    meta = HuggingFaceMetadataFetch(config=cfg).from_id("org/sd")
    assert isinstance(meta, HuggingFaceMetadata) and meta.type == "huggingface"
    assert (meta.id, meta.name, meta.author, meta.license) == ("org/sd", "sd", "someone", "openrail")
    assert meta.tags == {"diffusers", "license:openrail", "text-to-image"}
    assert meta.tag_dict["description"] == "A tiny pipeline" and meta.description == "A tiny pipeline"
    assert meta.last_modified is not None and meta.last_modified.tzinfo is not None
    assert meta.sha is not None and len(meta.sha) == 40
    by_path = {f.path: f for f in meta.files}
    assert set(by_path) == {
        Path("model_index.json"),
        Path("README.md"),
        Path("unet/config.json"),
        Path("unet/diffusion_pytorch_model.safetensors"),
        Path("unet/diffusion_pytorch_model.fp16.safetensors"),
    }
    unet = by_path[Path("unet/diffusion_pytorch_model.safetensors")]
    assert unet.size == len(UNET32) and unet.sha256 == hashlib.sha256(UNET32).hexdigest()
    # The URL is on the configured endpoint, pinned to the commit, and it downloads the file.
    assert unet.url == f"{hub.url}/org/sd/resolve/{meta.sha}/unet/diffusion_pytorch_model.safetensors"
    with httpx.Client(follow_redirects=True) as http:
        assert http.get(unet.url).content == UNET32


def test_hf_from_url_and_variant_branch(cfg: DepotConfig, hub: FakeHub) -> None:
    fetch = HuggingFaceMetadataFetch(config=cfg)
    main = fetch.from_id("org/sd")
    # A huggingface.co URL is answered by the configured endpoint (a mirror, here the fakehub).
    assert fetch.from_url("https://huggingface.co/org/sd") == main
    assert fetch.from_url(f"{hub.url}/org/sd/tree/main") == main.model_copy(update={"revision": "main"})
    branch = fetch.from_id("org/sd", variant=ModelRepoVariant.FP16)
    assert branch.revision == "fp16" and branch.sha != main.sha
    assert {f.path.as_posix() for f in branch.files} == {"model_index.json", "unet/diffusion_pytorch_model.safetensors"}
    assert fetch.from_id("org/sd@fp16") == branch


def test_hf_download_urls_follow_the_install_rules(cfg: DepotConfig) -> None:
    meta = HuggingFaceMetadataFetch(config=cfg).from_id("org/sd")
    default = {f.path.as_posix() for f in meta.download_urls()}
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in default  # fp16 preferred when none is asked for
    assert "README.md" not in default
    plain = {f.path.as_posix() for f in meta.download_urls(variant=ModelRepoVariant.Default)}
    assert "unet/diffusion_pytorch_model.safetensors" in plain and not any(".fp16." in p for p in plain)
    unet = {f.path.as_posix() for f in meta.download_urls(variant="fp16", subfolder=Path("unet"))}  # type: ignore[arg-type]
    assert unet == {"unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"}


def test_endpoints_come_from_the_settings_without_config(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPOT_HF_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELDEPOT_CIVITAI_ENDPOINT", hub.url)
    hub.stats.reset()
    assert HuggingFaceMetadataFetch().from_id("org/sd").author == "someone"
    assert CivitaiMetadataFetch().from_id("12").version_id == 12
    assert any(r.path.startswith("/api/models/org/sd") for r in hub.stats.requests)
    assert any(r.path.startswith("/api/v1/model-versions/12") for r in hub.stats.requests)


def test_unknown_repo_and_version(cfg: DepotConfig) -> None:
    with pytest.raises(UnknownMetadataException, match="'org/nope' not found") as info:
        HuggingFaceMetadataFetch(config=cfg).from_id("org/nope")
    assert isinstance(info.value, RemoteNotFoundError) and isinstance(info.value, ModelDepotError)
    with pytest.raises(UnknownMetadataException, match="version 999 not found"):
        CivitaiMetadataFetch(config=cfg).from_id(999)
    with pytest.raises(UnknownMetadataException, match="has no revision 'nope'"):
        HuggingFaceMetadataFetch(config=cfg).from_id("org/sd@nope")


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c: HuggingFaceMetadataFetch(config=c).from_id("not a repo"), "not a Hugging Face repo id"),
        (lambda c: HuggingFaceMetadataFetch(config=c).from_url("https://civitai.com/models/1"), "not a Hugging Face"),
        (lambda c: CivitaiMetadataFetch(config=c).from_id("abc"), "not a Civitai model version id"),
        (lambda c: CivitaiMetadataFetch(config=c).from_url("https://huggingface.co/org/sd"), "not a Civitai"),
    ],
)
def test_ids_and_urls_of_the_wrong_kind_are_refused(cfg: DepotConfig, call: object, fragment: str) -> None:
    with pytest.raises(InvalidSourceError, match=fragment):
        call(cfg)  # type: ignore[operator]


# -- Civitai ----------------------------------------------------------------------------------------


def test_civitai_from_id_and_urls(cfg: DepotConfig, hub: FakeHub) -> None:
    fetch = CivitaiMetadataFetch(config=cfg)
    meta = fetch.from_id("12")
    assert isinstance(meta, CivitaiMetadata) and meta.type == "civitai"
    assert (meta.id, meta.version_id, meta.version_name, meta.name) == (1, 12, "v2", "Cool LoRA")
    assert meta.author == "alice" and meta.tags == {"style", "cool"} and meta.nsfw
    assert meta.trained_words == {"cool", "shiny"} and meta.base_model == meta.base_model_trained_on == "SDXL 1.0"
    assert meta.model_type == "LORA" and meta.description == "Makes things cool."
    assert meta.thumbnail_url == "http://img.example/12.png"
    assert meta.download_url is not None and meta.download_url.startswith(f"{hub.url}/api/download/models/12")
    assert meta.files == [
        RemoteModelFile(
            url=meta.files[0].url,
            path=Path("cool_v2.safetensors"),
            size=len(LORA),
            sha256=hashlib.sha256(LORA).hexdigest(),
        )
    ]
    assert meta.last_modified is not None and meta.published is not None
    assert meta.credit_required and meta.allow_commercial_use and not meta.allow_derivatives
    # A model page URL means its newest version; ?modelVersionId= picks one.
    assert fetch.from_url("https://civitai.com/models/1/cool-lora") == meta
    assert fetch.from_url(f"{hub.url}/models/1?modelVersionId=11").version_id == 11
    assert fetch.from_id("civitai:model/1") == meta
    assert fetch.from_civitai_modelid(1) == meta and fetch.from_civitai_versionid(12) == meta


# -- JSON -------------------------------------------------------------------------------------------


def test_from_json_round_trips_and_picks_the_class(cfg: DepotConfig) -> None:
    hf = HuggingFaceMetadataFetch(config=cfg).from_id("org/sd")
    civ = CivitaiMetadataFetch(config=cfg).from_id(12)
    for meta in (hf, civ):
        again = ModelMetadataFetchBase.from_json(meta.model_dump_json())
        assert again == meta and type(again) is type(meta)
        assert AnyModelRepoMetadataValidator.validate_json(meta.model_dump_json()) == meta
    assert HuggingFaceMetadataFetch.from_json(hf.model_dump_json()) == hf
    assert CivitaiMetadataFetch.from_json(civ.model_dump_json()) == civ
    with pytest.raises(InvalidMetadataError, match="not Hugging Face metadata"):
        HuggingFaceMetadataFetch.from_json(civ.model_dump_json())
    with pytest.raises(InvalidMetadataError, match="not Civitai metadata"):
        CivitaiMetadataFetch.from_json(hf.model_dump_json())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "must be JSON"),
        ("[1, 2]", "JSON object, not list"),
        ('{"hello": "world"}', "not model metadata"),
        ('{"type": "huggingface", "name": "x"}', "invalid huggingface metadata: id"),
        ('{"type": "civitai", "name": "x", "version_id": "seven"}', "version_id"),
    ],
)
def test_from_json_refuses_what_is_not_metadata(text: str, fragment: str) -> None:
    with pytest.raises(InvalidMetadataError, match=fragment) as info:
        ModelMetadataFetchBase.from_json(text)
    assert isinstance(info.value, ModelDepotError) and isinstance(info.value, ValueError)


def test_stored_api_answers_read_back(hub: FakeHub, cfg: DepotConfig) -> None:
    # What records held before the metadata key existed: the remotes' raw answers.
    with HuggingFaceClient.from_config(cfg) as client:
        info = client.model_info("org/sd")
    old_hf = ModelMetadataFetchBase.from_json(hf_metadata_for_record(info)["source_api_response"])
    fetched = HuggingFaceMetadataFetch(config=cfg).from_id("org/sd")
    assert isinstance(old_hf, HuggingFaceMetadata)
    assert old_hf.model_dump(exclude={"files"}) == fetched.model_dump(exclude={"files"})
    assert [f.path for f in old_hf.files] == [f.path for f in fetched.files]
    assert old_hf.files[0].url.startswith("https://huggingface.co/org/sd/resolve/")  # no endpoint was stored
    with CivitaiClient.from_config(cfg) as civitai:
        version = civitai.get_version(12)
    old_civ = ModelMetadataFetchBase.from_json(metadata_for_record(version)["source_api_response"])
    assert isinstance(old_civ, CivitaiMetadata)
    assert (old_civ.version_id, old_civ.name, old_civ.author, old_civ.trained_words) == (
        12,
        "Cool LoRA",
        "alice",
        {"cool", "shiny"},
    )
    # The record's form: the raw answer with the metadata beside it, exactly restorable.
    stored = metadata_json_for_record(info.raw_json(), fetched)
    assert json.loads(stored)["sha"] == info.sha and METADATA_KEY in json.loads(stored)
    assert ModelMetadataFetchBase.from_json(stored) == fetched


# -- sessions ---------------------------------------------------------------------------------------


def test_a_requests_session_carries_the_requests(cfg: DepotConfig) -> None:
    requests = pytest.importorskip("requests")
    calls: list[str] = []

    class Recording(requests.Session):  # type: ignore[misc, name-defined]
        def request(self, method: str, url: str, *args: object, **kwargs: object) -> object:
            calls.append(f"{method} {url}")
            return super().request(method, url, *args, **kwargs)

    with Recording() as session:
        meta = HuggingFaceMetadataFetch(session=session, config=cfg).from_id("org/sd")
        civ = CivitaiMetadataFetch(session=session, config=cfg).from_id(12)
    assert meta == HuggingFaceMetadataFetch(config=cfg).from_id("org/sd")
    assert civ.version_id == 12
    assert any("/api/models/org/sd" in c for c in calls) and any("/model-versions/12" in c for c in calls)


def test_an_httpx_client_or_transport_carries_the_requests(cfg: DepotConfig) -> None:
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]}) as http:
        assert HuggingFaceMetadataFetch(session=http, config=cfg).from_id("org/sd").id == "org/sd"
    assert seen and all("/org/sd" in u for u in seen)

    # A mock transport answers without any server: the offline testing the seed describes.
    answer = {"id": "acme/offline", "author": "acme", "sha": "a" * 40, "tags": ["x"], "siblings": []}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "hub.invalid"
        return httpx.Response(200, json=answer)

    offline = DepotConfig(hf_endpoint="https://hub.invalid")
    meta = HuggingFaceMetadataFetch(session=httpx.MockTransport(handler), config=offline).from_id("acme/offline")
    assert (meta.id, meta.author, meta.tags, meta.files) == ("acme/offline", "acme", {"x"}, [])


def test_an_unusable_session_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"session must be a requests\.Session, an httpx\.Client"):
        HuggingFaceMetadataFetch(session=object(), config=DepotConfig())
