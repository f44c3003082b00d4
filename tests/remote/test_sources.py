"""Source strings -> typed sources, canonical strings, and the errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import InvalidSourceError, ModelDepotError, UnsafePathError
from modeldepot.remote import (
    CivitaiModelSource,
    HFModelSource,
    LocalModelSource,
    UnsafeSourcePathError,
    URLModelSource,
    parse_source,
)
from modeldepot.taxonomy import ModelRepoVariant, ModelSourceType

FP16 = ModelRepoVariant.FP16

HF_CASES = [
    ("org/name", dict(repo_id="org/name"), "org/name"),
    ("org/name:fp16", dict(repo_id="org/name", variant=FP16), "org/name:fp16"),
    ("org/name:fp16:vae", dict(repo_id="org/name", variant=FP16, subfolder="vae"), "org/name:fp16:vae"),
    ("org/name::vae", dict(repo_id="org/name", subfolder="vae"), "org/name::vae"),
    ("org/name::vae/", dict(repo_id="org/name", subfolder="vae"), "org/name::vae"),
    (
        "org/name:fp16:path/to/file.safetensors",
        dict(repo_id="org/name", variant=FP16, file="path/to/file.safetensors"),
        "org/name:fp16:path/to/file.safetensors",
    ),
    ("org/name::path/file.safetensors", dict(repo_id="org/name", file="path/file.safetensors"), None),
    ("org/name::model.ckpt", dict(repo_id="org/name", file="model.ckpt"), None),
    ("org/name::text_encoder+tokenizer", dict(repo_id="org/name", subfolder="text_encoder+tokenizer"), None),
    ("org/name:FP16", dict(repo_id="org/name", variant=FP16), "org/name:fp16"),
    ("Org-1/Name_v2.0", dict(repo_id="Org-1/Name_v2.0"), None),
    ("org/name@refs/pr/3", dict(repo_id="org/name", revision="refs/pr/3"), "org/name@refs/pr/3"),
    ("org/name@v2::unet", dict(repo_id="org/name", revision="v2", subfolder="unet"), "org/name@v2::unet"),
    ("https://huggingface.co/org/name", dict(repo_id="org/name"), "org/name"),
    ("https://hf.co/org/name/", dict(repo_id="org/name"), "org/name"),
    ("huggingface.co/org/name", dict(repo_id="org/name"), "org/name"),
    ("https://huggingface.co/org/name/tree/main", dict(repo_id="org/name", revision="main"), "org/name@main"),
    (
        "https://huggingface.co/org/name/tree/fp16/unet",
        dict(repo_id="org/name", revision="fp16", subfolder="unet"),
        "org/name@fp16::unet",
    ),
    (
        "https://huggingface.co/org/name/resolve/main/v1-5.safetensors?download=true",
        dict(repo_id="org/name", revision="main", file="v1-5.safetensors"),
        "org/name@main::v1-5.safetensors",
    ),
    (
        "https://huggingface.co/org/name/blob/main/unet/config.json",
        dict(repo_id="org/name", revision="main", file="unet/config.json"),
        None,
    ),
    (
        "https://huggingface.co/org/name/resolve/refs%2Fpr%2F1/a%20b.safetensors",
        dict(repo_id="org/name", revision="refs/pr/1", file="a b.safetensors"),
        None,
    ),
]


@pytest.mark.parametrize(("text", "fields", "canonical"), HF_CASES, ids=[c[0] for c in HF_CASES])
def test_hf_forms(text: str, fields: dict[str, object], canonical: str | None) -> None:
    src = parse_source(text)
    assert isinstance(src, HFModelSource)
    expected = {"variant": None, "subfolder": None, "file": None, "revision": None, **fields}
    for key, value in expected.items():
        assert getattr(src, key) == value, key
    if canonical is not None:
        assert str(src) == canonical
    again = parse_source(str(src))
    assert str(again) == str(src)
    if src.file is None or src.file.endswith(".safetensors"):
        assert again == src
    else:  # a non-weight file reads back as a "subfolder"; selection treats a file path the same way
        assert again.subpath == src.subpath  # type: ignore[union-attr]
    assert src.type == ModelSourceType.HFRepoID


CIVITAI_CASES = [
    ("https://civitai.com/models/4201", None, 4201, "civitai:model/4201"),
    ("https://civitai.com/models/4201/realistic-vision", None, 4201, "civitai:model/4201"),
    ("https://civitai.com/models/4201?modelVersionId=130072", 130072, 4201, "civitai:130072"),
    ("https://www.civitai.com/models/4201/slug?modelVersionId=130072", 130072, 4201, "civitai:130072"),
    ("https://civitai.com/api/download/models/130072", 130072, None, "civitai:130072"),
    ("https://civitai.com/api/download/models/130072?type=Model&format=SafeTensor", 130072, None, "civitai:130072"),
    ("civitai.com/api/v1/model-versions/130072", 130072, None, "civitai:130072"),
    ("https://civitai.com/api/v1/models/4201", None, 4201, "civitai:model/4201"),
    ("civitai:130072", 130072, None, "civitai:130072"),
    ("CIVITAI:130072", 130072, None, "civitai:130072"),
    ("civitai:model/4201", None, 4201, "civitai:model/4201"),
    ("urn:air:sd1:checkpoint:civitai:4201@130072", 130072, 4201, "civitai:130072"),
]


@pytest.mark.parametrize(("text", "version", "model", "canonical"), CIVITAI_CASES, ids=[c[0] for c in CIVITAI_CASES])
def test_civitai_forms(text: str, version: int | None, model: int | None, canonical: str) -> None:
    src = parse_source(text)
    assert isinstance(src, CivitaiModelSource)
    assert (src.version_id, src.model_id, src.file_name) == (version, model, None)
    assert str(src) == canonical
    assert str(parse_source(str(src))) == canonical


def test_civitai_file_name_round_trips() -> None:
    src = CivitaiModelSource(version_id=11, file_name="cool v2.safetensors")
    assert str(src) == "civitai:11?file=cool+v2.safetensors"
    assert parse_source(str(src)) == src


def test_civitai_token_in_url_is_taken_out_of_the_string() -> None:
    src = parse_source("https://civitai.com/api/download/models/5?token=SEKRIT123")
    assert isinstance(src, CivitaiModelSource)
    assert src.access_token is not None and src.access_token.get_secret_value() == "SEKRIT123"
    assert "SEKRIT123" not in str(src) + repr(src) + src.model_dump_json()


def test_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    src = parse_source(str(f))
    assert isinstance(src, LocalModelSource) and src.path == f and str(src) == f.as_posix()
    assert parse_source(f).path == f  # type: ignore[union-attr]
    assert parse_source(f"file://{f}") == src
    # A folder named like a repo id: the existing path wins.
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    local = parse_source("org/name")
    assert isinstance(local, LocalModelSource) and local.path == tmp_path / "org" / "name"
    # ~ is expanded.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_source("~/model.safetensors") == src
    # Relative and dotted paths are made absolute without following symlinks.
    link = tmp_path / "link.safetensors"
    link.symlink_to(f)
    (tmp_path / "sub").mkdir()
    assert parse_source("./sub/../link.safetensors").path == link  # type: ignore[union-attr]


def test_plain_urls() -> None:
    src = parse_source("https://Example.com/files/model.safetensors?x=1")
    assert isinstance(src, URLModelSource)
    assert str(src) == "https://example.com/files/model.safetensors?x=1"
    assert src.type == ModelSourceType.Url
    # Hosts that look like ours only by name are plain URLs.
    assert isinstance(parse_source("https://nothuggingface.co/org/name"), URLModelSource)


def test_configured_endpoints_are_recognised() -> None:
    cfg = DepotConfig(hf_endpoint="http://127.0.0.1:8123", civitai_endpoint="http://127.0.0.1:8123")
    hf = parse_source("http://127.0.0.1:8123/org/name/resolve/main/x.safetensors", config=cfg)
    assert isinstance(hf, HFModelSource) and hf.file == "x.safetensors" and hf.revision == "main"
    civ = parse_source("http://127.0.0.1:8123/api/download/models/11", config=cfg)
    assert isinstance(civ, CivitaiModelSource) and civ.version_id == 11
    civ2 = parse_source("http://127.0.0.1:8123/models/1?modelVersionId=11", config=cfg)
    assert isinstance(civ2, CivitaiModelSource) and civ2.version_id == 11
    plain = parse_source("http://127.0.0.1:8123/files/x.bin", config=cfg)
    assert isinstance(plain, URLModelSource)
    # Without the config, the same URL is a plain download; another port is not the endpoint.
    assert isinstance(parse_source("http://127.0.0.1:8123/org/name/resolve/main/x.safetensors"), URLModelSource)
    assert isinstance(
        parse_source("http://127.0.0.1:9999/org/name/resolve/main/x.safetensors", config=cfg), URLModelSource
    )


def test_endpoint_with_a_path_prefix() -> None:
    cfg = DepotConfig(hf_endpoint="https://mirror.example/hf")
    src = parse_source("https://mirror.example/hf/org/name/tree/main/vae", config=cfg)
    assert isinstance(src, HFModelSource) and src.subfolder == "vae"


def test_tokens_are_secret_everywhere() -> None:
    src = parse_source("org/name:fp16", access_token="hf_TOPSECRET")
    assert isinstance(src, HFModelSource)
    assert src.token_value() == "hf_TOPSECRET"
    for text in (str(src), repr(src), src.model_dump_json(), str(src.model_dump())):
        assert "hf_TOPSECRET" not in text
    assert "access_token" not in src.model_dump()


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("not a source", "recognise"),
    ("justaname", "recognise"),
    ("a/b/c", "recognise"),
    ("org/name:vae", "unknown variant 'vae'"),
    ("org/name:fp16:vae:extra", "too many"),
    ("/definitely/missing/model.safetensors", "no such file"),
    ("missing/model.safetensors", "no such file"),
    ("civitai:abc", "civitai:VERSION_ID"),
    ("https://civitai.com/images/123", "names no model"),
    ("https://civitai.com/models/12?modelVersionId=x", "not a number"),
    ("https://huggingface.co/datasets/org/name", "names no model repo"),
    ("https://huggingface.co/org/name/resolve/main", "must name a file"),
    ("ftp://example.com/model.safetensors", "scheme"),
    ("https://user:pw@example.com/model.safetensors", "credentials"),
    ("org/na..me", "not a valid Hugging Face repo id"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD, ids=[b[0] or "<empty>" for b in BAD])
def test_bad_sources_name_the_string_and_the_forms(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSourceError) as info:
        parse_source(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text) in message
    assert "Accepted forms" in message and "civitai:VERSION_ID" in message
    assert isinstance(info.value, ModelDepotError) and isinstance(info.value, ValueError)


TRAVERSAL = [
    "org/name::../../x",
    "org/name:fp16:../x.safetensors",
    "org/name::vae/../../etc",
    "org/name::/../etc/passwd",
    "org/name:fp16:/vae/../../x.safetensors",
    "https://huggingface.co/org/name/resolve/main/..%2F..%2Fx.safetensors",
    "https://huggingface.co/org/name/tree/main/a/%2E%2E/%2E%2E/b",
    "civitai:5?file=../../x.safetensors",
]


@pytest.mark.parametrize("text", TRAVERSAL)
def test_path_traversal_is_refused(text: str) -> None:
    with pytest.raises(UnsafeSourcePathError) as info:
        parse_source(text)
    assert isinstance(info.value, InvalidSourceError) and isinstance(info.value, UnsafePathError)


def test_sources_validate_when_built_directly() -> None:
    with pytest.raises(InvalidSourceError):
        CivitaiModelSource()
    src = HFModelSource(repo_id="org/name", variant="fp16")  # type: ignore[arg-type]
    assert src.variant is FP16
    assert str(LocalModelSource(path=Path("/x/y"))) == "/x/y"


@pytest.mark.parametrize(
    "fields",
    [
        {"repo_id": "../x"},
        {"repo_id": "org/na..me"},
        {"repo_id": "org/name", "subfolder": "../vae"},
        {"repo_id": "org/name", "subfolder": "vae+../x"},
        {"repo_id": "org/name", "file": "/etc/passwd"},
    ],
)
def test_hf_sources_built_from_json_are_checked(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidSourceError):
        HFModelSource(**fields)  # type: ignore[arg-type]
