"""CivitaiClient against fakehub, plus the baseModel / type tables."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator

import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import InvalidSourceError, RemoteAccessError, RemoteNotFoundError
from modeldepot.remote import (
    CivitaiClient,
    CivitaiModelSource,
    choose_file,
    map_civitai_base,
    map_civitai_type,
    metadata_for_record,
    parse_source,
)
from modeldepot.remote.civitai import CivitaiFile, CivitaiVersion
from modeldepot.remote.sources import UnsafeSourcePathError
from modeldepot.taxonomy import BaseModelType, FluxVariantType, ModelType, SchedulerPredictionType
from modeldepot.testing.fakehub import FakeHub

TOKEN = "civitai_SECRET_987"


def _safetensors(payload: bytes) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


LORA = _safetensors(b"lora-bytes" * 100)
PRUNED = b"pruned" * 50
GATED = b"gated" * 40


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_civitai_model(
            {
                "id": 1,
                "name": "Cool LoRA",
                "type": "LORA",
                "description": "<p>Makes things <b>cool</b> &amp; shiny.</p>",
                "tags": ["style", "cool"],
                "creator": {"username": "alice"},
                "modelVersions": [
                    {
                        "id": 12,
                        "name": "v2",
                        "baseModel": "Pony",
                        "trainedWords": ["cool", "shiny"],
                        "images": [{"url": "http://img.example/12a.png"}, {"url": "http://img.example/12b.png"}],
                        "files": [
                            {"name": "cool_v2_pruned.safetensors", "type": "Pruned Model", "data": PRUNED},
                            {"name": "cool_v2.safetensors", "type": "Model", "primary": True, "data": LORA},
                        ],
                    },
                    {
                        "id": 11,
                        "name": "v1",
                        "baseModel": "SD 1.5",
                        "files": [{"name": "cool_v1.safetensors", "type": "Model", "data": b"v1" * 10}],
                    },
                ],
            }
        )
        h.add_civitai_model(
            {
                "id": 2,
                "name": "Members Only",
                "type": "Checkpoint",
                "modelVersions": [
                    {
                        "id": 21,
                        "name": "base",
                        "baseModel": "SDXL 1.0",
                        "gated_token": TOKEN,
                        "files": [{"name": "members.safetensors", "type": "Model", "primary": True, "data": GATED}],
                    }
                ],
            }
        )
        yield h


@pytest.fixture
def client(hub: FakeHub) -> Iterator[CivitaiClient]:
    with CivitaiClient(hub.url) as c:
        yield c


def test_get_version_with_model(client: CivitaiClient, hub: FakeHub) -> None:
    v = client.get_version(12)
    assert (v.id, v.model_id, v.name, v.base_model) == (12, 1, "v2", "Pony")
    assert v.trained_words == ["cool", "shiny"]
    assert v.model is not None and v.model.author == "alice" and v.model.tags == ["style", "cool"]
    assert v.model.version_ids == [12, 11]
    f = client.choose_file(v)
    assert f.name == "cool_v2.safetensors" and f.primary and f.type == "Model"
    assert f.sha256 == hashlib.sha256(LORA).hexdigest()
    assert f.size == len(LORA)
    assert f.download_url.startswith(f"{hub.url}/api/download/models/12")
    assert "token" not in f.download_url


def test_get_version_without_model_uses_the_short_form(client: CivitaiClient) -> None:
    v = client.get_version(11, with_model=False)
    assert v.model is not None and v.model.name == "Cool LoRA" and v.model.author is None
    # one file, not flagged primary by us: fakehub marks the first file primary, as Civitai does
    assert choose_file(v).name == "cool_v1.safetensors"


def test_get_model(client: CivitaiClient) -> None:
    m = client.get_model(1)
    assert m.name == "Cool LoRA" and [v.id for v in m.versions] == [12, 11]
    assert m.versions[0].model is not None and m.versions[0].model.author == "alice"
    newest = client.resolve(CivitaiModelSource(model_id=1))
    assert newest.id == 12 and newest.model is not None and newest.model.tags == ["style", "cool"]
    assert client.resolve(parse_source("civitai:11")).id == 11  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["SHA256", "sha256-lower", "AutoV2", "autov2-lower", "AutoV3", "prefixed"])
def test_lookup_by_hash(client: CivitaiClient, kind: str) -> None:
    sha = hashlib.sha256(LORA).hexdigest()
    value = {
        "SHA256": sha.upper(),
        "sha256-lower": sha,
        "AutoV2": sha[:10].upper(),
        "autov2-lower": sha[:10],
        "prefixed": f"sha256:{sha}",
    }.get(kind)
    if kind == "AutoV3":
        v12 = client.get_version(12, with_model=False)
        value = next(f for f in v12.files if f.name == "cool_v2.safetensors").hashes.get("AutoV3")
    assert value is not None
    v = client.get_version_by_hash(value)
    assert v.id == 12 and v.model is not None and v.model.author == "alice"
    matched = v.file_by_hash(value)
    assert matched is not None and matched.name == "cool_v2.safetensors"


def test_lookup_by_unknown_or_bad_hash(client: CivitaiClient) -> None:
    with pytest.raises(RemoteNotFoundError, match="ABCDEF0123"):
        client.get_version_by_hash("abcdef0123")
    with pytest.raises(InvalidSourceError, match="not a hash"):
        client.get_version_by_hash("not-hex!")


def test_not_found(client: CivitaiClient) -> None:
    with pytest.raises(RemoteNotFoundError, match="Civitai model version 999 not found"):
        client.get_version(999)
    with pytest.raises(RemoteNotFoundError, match="Civitai model 998 not found"):
        client.get_model(998)


def test_choose_file_by_name_and_errors(client: CivitaiClient) -> None:
    v = client.get_version(12, with_model=False)
    assert choose_file(v, "cool_v2_pruned.safetensors").type == "Pruned Model"
    assert choose_file(v, "COOL_V2_PRUNED.safetensors").name == "cool_v2_pruned.safetensors"
    with pytest.raises(RemoteNotFoundError) as info:
        choose_file(v, "nope.safetensors")
    assert "cool_v2.safetensors (Model)" in str(info.value) and "cool_v2_pruned.safetensors" in str(info.value)
    no_primary = v.model_copy(
        update={"files": [f.model_copy(update={"primary": False, "type": "Training Data"}) for f in v.files]}
    )
    with pytest.raises(RemoteNotFoundError, match="no primary file; pick one of"):
        choose_file(no_primary)
    evil = CivitaiVersion(id=5, files=[CivitaiFile(name="../../evil.safetensors", download_url="x", primary=True)])
    with pytest.raises(UnsafeSourcePathError):
        choose_file(evil)


def test_metadata_for_record(client: CivitaiClient) -> None:
    v = client.get_version(12)
    meta = metadata_for_record(v)
    assert meta["name"] == "Cool LoRA v2"  # the model has two versions
    assert meta["base"] is BaseModelType.StableDiffusionXL and meta["type"] is ModelType.LoRA
    assert meta["trigger_phrases"] == {"cool", "shiny"}
    assert meta["tags"] == ["style", "cool", "lineage:pony"]
    assert meta["author"] == "alice"
    assert meta["thumbnail_url"] == "http://img.example/12a.png"
    assert meta["description"] == "Makes things cool & shiny."
    raw = json.loads(meta["source_api_response"])
    assert raw["id"] == 12 and raw["model"]["creator"]["username"] == "alice"
    single = metadata_for_record(client.get_version(21))
    assert single["name"] == "Members Only" and single["type"] is ModelType.Main
    assert "trigger_phrases" not in single and "thumbnail_url" not in single
    odd = v.model_copy(update={"base_model": "Hunyuan Video", "model": v.model.model_copy(update={"type": "Poses"})})  # type: ignore[union-attr]
    unknown = metadata_for_record(odd)
    assert unknown["base"] is None and unknown["type"] is None
    assert "civitai_base:Hunyuan Video" in unknown["tags"]


def test_gated_version_needs_a_token(client: CivitaiClient, hub: FakeHub) -> None:
    v = client.get_version(21)  # metadata is public; the download is not
    f = client.choose_file(v)
    with pytest.raises(RemoteAccessError) as info:
        client.check_access(v)
    msg = str(info.value)
    assert "model version 21" in msg and "needs a logged-in account" in msg
    assert "Civitai API token" in msg and "--token" in msg and "host 'civitai.com'" in msg
    with CivitaiClient(hub.url, token="wrong") as wrong, pytest.raises(RemoteAccessError, match="refused the token"):
        wrong.check_access(f)
    cfg = DepotConfig(remote_api_tokens=[{"url_regex": "127\\.0\\.0\\.1", "token": TOKEN}], civitai_endpoint=hub.url)
    with CivitaiClient.from_config(cfg) as good:
        good.check_access(f)
        assert good.download_headers(f.download_url) == {"Authorization": f"Bearer {TOKEN}"}
        assert TOKEN not in repr(good)
    client.check_access(client.choose_file(client.get_version(12)))  # public: fine without a token


@pytest.mark.parametrize(
    ("raw", "base", "lineage"),
    [
        ("SD 1.4", BaseModelType.StableDiffusion1, None),
        ("SD 1.5", BaseModelType.StableDiffusion1, None),
        ("SD 1.5 LCM", BaseModelType.StableDiffusion1, "lcm"),
        ("SD 2.0", BaseModelType.StableDiffusion2, None),
        ("SD 2.1", BaseModelType.StableDiffusion2, None),
        ("SD 2.0 768", BaseModelType.StableDiffusion2, None),
        ("SDXL 1.0", BaseModelType.StableDiffusionXL, None),
        ("SDXL Turbo", BaseModelType.StableDiffusionXL, "turbo"),
        ("SDXL Lightning", BaseModelType.StableDiffusionXL, "lightning"),
        ("Pony", BaseModelType.StableDiffusionXL, "pony"),
        ("Illustrious", BaseModelType.StableDiffusionXL, "illustrious"),
        ("NoobAI", BaseModelType.StableDiffusionXL, "noobai"),
        ("SD 3", BaseModelType.StableDiffusion3, None),
        ("SD 3.5 Large", BaseModelType.StableDiffusion3, "sd3.5-large"),
        ("Flux.1 D", BaseModelType.Flux, None),
        ("Flux.1 S", BaseModelType.Flux, None),
        ("sdxl  1.0", BaseModelType.StableDiffusionXL, None),
        ("SDXL Something New", BaseModelType.StableDiffusionXL, "sdxl-something-new"),
    ],
)
def test_base_mapping(raw: str, base: BaseModelType, lineage: str | None) -> None:
    m = map_civitai_base(raw)
    assert (m.base, m.lineage) == (base, lineage)
    assert m.tags == ([f"lineage:{lineage}"] if lineage else [])


def test_base_mapping_extras_and_unknowns() -> None:
    assert map_civitai_base("SD 2.1 768").prediction_type is SchedulerPredictionType.VPrediction
    assert map_civitai_base("SD 2.1").prediction_type is None
    assert map_civitai_base("Flux.1 S").flux_variant is FluxVariantType.Schnell
    unknown = map_civitai_base("Hunyuan Video")
    assert unknown.base is None and unknown.tags == ["civitai_base:Hunyuan Video"]
    assert map_civitai_base(None).base is None and map_civitai_base("").tags == []


@pytest.mark.parametrize(
    ("raw", "mtype"),
    [
        ("Checkpoint", ModelType.Main),
        ("LORA", ModelType.LoRA),
        ("LoCon", ModelType.LoRA),
        ("DoRA", ModelType.LoRA),
        ("TextualInversion", ModelType.TextualInversion),
        ("VAE", ModelType.VAE),
        ("Controlnet", ModelType.ControlNet),
        ("Upscaler", ModelType.SpandrelImageToImage),
        ("Hypernetwork", None),
        ("MotionModule", None),
        (None, None),
    ],
)
def test_type_mapping(raw: str | None, mtype: ModelType | None) -> None:
    assert map_civitai_type(raw) is mtype
