"""Hugging Face routes, checked with plain httpx and with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from modeldepot.testing.fakehub import FakeHub

WEIGHTS = os.urandom(200_000)
UNET = os.urandom(50_000)
FP16 = os.urandom(100_000)
CONFIG = b'{"_class_name": "UNet2DConditionModel"}'
REPO = "org/tiny-model"
TOKEN = "hf_gated_secret"


def _files() -> dict[str, bytes | Path]:
    return {
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
        "unet/config.json": CONFIG,
        "unet/diffusion_pytorch_model.safetensors": UNET,
        "text_encoder/model.safetensors": WEIGHTS,
        "tokenizer/vocab.txt": b"a\nb\nc\n",
    }


# One keep-alive client for the module: a fresh httpx.get() per call costs an SSL context each time.
HTTP = httpx.Client(timeout=60)


def teardown_module() -> None:
    HTTP.close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def repo(hub: FakeHub) -> tuple[str, str]:
    main = hub.add_hf_repo(REPO, _files(), tags=["diffusers", "text-to-image"], card_data={"license": "mit"})
    fp16 = hub.add_hf_repo(
        REPO,
        {"model_index.json": b"{}", "unet/diffusion_pytorch_model.fp16.safetensors": FP16},
        revision="fp16",
    )
    return main, fp16


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_model_info(hub: FakeHub, repo: tuple[str, str]) -> None:
    main, fp16 = repo
    assert re.fullmatch(r"[0-9a-f]{40}", main) and main != fp16
    info = HTTP.get(f"{hub.url}/api/models/{REPO}").json()
    assert info["id"] == info["modelId"] == REPO
    assert info["sha"] == main
    assert info["author"] == "org"
    assert info["tags"] == ["diffusers", "text-to-image"]
    assert info["cardData"] == {"license": "mit"}
    assert info["library_name"] == "diffusers"
    assert info["gated"] is False and info["private"] is False
    assert {"lastModified", "downloads", "likes"} <= set(info)
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(_files())
    assert all(set(s) == {"rfilename"} for s in info["siblings"])
    assert HTTP.get(f"{hub.url}/api/models/{REPO}/revision/fp16").json()["sha"] == fp16
    assert HTTP.get(f"{hub.url}/api/models/{REPO}/revision/{fp16}").json()["sha"] == fp16


def test_model_info_blobs(hub: FakeHub, repo: tuple[str, str]) -> None:
    info = HTTP.get(f"{hub.url}/api/models/{REPO}", params={"blobs": "true"}).json()
    by_name = {s["rfilename"]: s for s in info["siblings"]}
    te = by_name["text_encoder/model.safetensors"]
    assert te["size"] == len(WEIGHTS)
    assert te["lfs"]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert te["lfs"]["size"] == len(WEIGHTS)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{te['lfs']['sha256']}\nsize {len(WEIGHTS)}\n"
    assert te["lfs"]["pointerSize"] == len(pointer)
    assert te["blobId"] == _git_sha1(pointer.encode())
    cfg = by_name["unet/config.json"]
    assert cfg == {"rfilename": "unet/config.json", "size": len(CONFIG), "blobId": _git_sha1(CONFIG)}


def test_errors_carry_x_error_code(hub: FakeHub, repo: tuple[str, str]) -> None:
    r = HTTP.get(f"{hub.url}/api/models/org/missing")
    assert (r.status_code, r.headers["x-error-code"]) == (401, "RepoNotFound")  # as the hub: 401 without token
    assert "error" in r.json()
    r = HTTP.get(f"{hub.url}/api/models/org/missing", headers={"Authorization": "Bearer x"})
    assert (r.status_code, r.headers["x-error-code"]) == (404, "RepoNotFound")
    r = HTTP.get(f"{hub.url}/api/models/{REPO}/revision/nope")
    assert (r.status_code, r.headers["x-error-code"]) == (404, "RevisionNotFound")
    r = HTTP.head(f"{hub.url}/{REPO}/resolve/main/missing.bin")
    assert (r.status_code, r.headers["x-error-code"]) == (404, "EntryNotFound")
    assert r.headers["x-repo-commit"] == repo[0]
    assert HTTP.get(f"{hub.url}/{REPO}/resolve/main/missing.bin").json() == {"error": "Entry not found"}
    r = HTTP.get(f"{hub.url}/org/missing/resolve/main/x.bin")
    assert (r.status_code, r.headers["x-error-code"]) == (401, "RepoNotFound")
    r = HTTP.get(f"{hub.url}/{REPO}/resolve/nope/model_index.json")
    assert r.headers["x-error-code"] == "RevisionNotFound"


def test_tree_recursive_and_paginated(hub: FakeHub, repo: tuple[str, str]) -> None:
    hub.hf.tree_page_size = 2
    url: str | None = f"{hub.url}/api/models/{REPO}/tree/main?recursive=true"
    entries: list[dict[str, object]] = []
    pages = 0
    while url:
        r = HTTP.get(url)
        assert r.status_code == 200
        entries += r.json()
        pages += 1
        url = r.links.get("next", {}).get("url")
        if url:
            assert urlsplit(url).netloc == urlsplit(hub.url).netloc and "cursor=" in url
    files = {e["path"]: e for e in entries if e["type"] == "file"}
    dirs = {e["path"] for e in entries if e["type"] == "directory"}
    assert set(files) == set(_files())
    assert dirs == {"unet", "text_encoder", "tokenizer"}
    assert pages == 4  # 8 entries, 2 per page
    lfs = files["text_encoder/model.safetensors"]["lfs"]
    assert lfs == {"oid": hashlib.sha256(WEIGHTS).hexdigest(), "size": len(WEIGHTS), "pointerSize": lfs["pointerSize"]}  # type: ignore[index]
    assert files["unet/config.json"]["oid"] == _git_sha1(CONFIG)


def test_tree_of_a_folder_and_not_recursive(hub: FakeHub, repo: tuple[str, str]) -> None:
    top = HTTP.get(f"{hub.url}/api/models/{REPO}/tree/main").json()
    assert {(e["type"], e["path"]) for e in top} == {
        ("file", "model_index.json"),
        ("directory", "unet"),
        ("directory", "text_encoder"),
        ("directory", "tokenizer"),
    }
    sub = HTTP.get(f"{hub.url}/api/models/{REPO}/tree/main/unet", params={"recursive": "true"}).json()
    assert {e["path"] for e in sub} == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
    r = HTTP.get(f"{hub.url}/api/models/{REPO}/tree/main/nothing")
    assert r.headers["x-error-code"] == "EntryNotFound"


def test_refs(hub: FakeHub, repo: tuple[str, str]) -> None:
    refs = HTTP.get(f"{hub.url}/api/models/{REPO}/refs").json()
    assert {b["name"]: b["targetCommit"] for b in refs["branches"]} == {"main": repo[0], "fp16": repo[1]}


def test_resolve_small_file(hub: FakeHub, repo: tuple[str, str]) -> None:
    url = f"{hub.url}/{REPO}/resolve/main/unet/config.json"
    h = HTTP.head(url)
    assert h.status_code == 200
    assert h.headers["etag"] == f'"{_git_sha1(CONFIG)}"'
    assert h.headers["x-repo-commit"] == repo[0]
    assert h.headers["content-length"] == str(len(CONFIG))
    assert h.headers["accept-ranges"] == "bytes"
    assert "x-linked-etag" not in h.headers
    assert h.content == b""
    assert HTTP.get(url).content == CONFIG
    r = HTTP.get(url, headers={"Range": "bytes=2-5"})
    assert (r.status_code, r.content) == (206, CONFIG[2:6])
    assert HTTP.get(url, headers={"Range": "bytes=9999-"}).status_code == 416


def test_resolve_lfs_redirects_to_a_signed_cdn_url(hub: FakeHub, repo: tuple[str, str]) -> None:
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    url = f"{hub.url}/{REPO}/resolve/main/text_encoder/model.safetensors"
    h = HTTP.head(url)
    assert h.status_code == 302
    assert h.headers["x-linked-etag"] == f'"{sha}"'
    assert h.headers["x-linked-size"] == str(len(WEIGHTS))
    assert h.headers["x-repo-commit"] == repo[0]
    assert h.headers["etag"] == f'"{sha}"'
    location = h.headers["location"]
    assert urlsplit(location).path == f"/cdn/{sha}"
    r = HTTP.get(location, headers={"Range": "bytes=100-199"})
    assert (r.status_code, r.content) == (206, WEIGHTS[100:200])
    assert r.headers["etag"] == f'"{sha}"'
    assert 'filename="model.safetensors"' in r.headers["content-disposition"]
    assert HTTP.get(url, follow_redirects=True).content == WEIGHTS
    tampered = location.replace("Signature=", "Signature=0")
    assert HTTP.get(tampered).status_code == 403
    assert HTTP.get(f"{hub.url}/cdn/{'0' * 64}").status_code == 404


def test_expired_cdn_url(hub: FakeHub, repo: tuple[str, str]) -> None:
    hub.hf.cdn_url_ttl = -10
    location = HTTP.head(f"{hub.url}/{REPO}/resolve/main/text_encoder/model.safetensors").headers["location"]
    r = HTTP.get(location)
    assert r.status_code == 403 and b"expired" in r.content


def test_lfs_served_directly_when_redirect_off(hub: FakeHub, repo: tuple[str, str]) -> None:
    hub.hf.redirect_lfs = False
    r = HTTP.get(f"{hub.url}/{REPO}/resolve/{repo[1]}/unet/diffusion_pytorch_model.fp16.safetensors")
    assert r.status_code == 200 and r.content == FP16
    assert r.headers["x-linked-etag"] == f'"{hashlib.sha256(FP16).hexdigest()}"'


def test_gated_repo(hub: FakeHub) -> None:
    hub.add_hf_repo("org/gated", {"w.safetensors": WEIGHTS}, gated_token=TOKEN)
    url = f"{hub.url}/org/gated/resolve/main/w.safetensors"
    r = HTTP.head(url)
    assert (r.status_code, r.headers["x-error-code"]) == (401, "GatedRepo")
    r = HTTP.head(url, headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.headers["x-error-code"]) == (403, "GatedRepo")
    r = HTTP.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=True)
    assert r.content == WEIGHTS
    info = HTTP.get(f"{hub.url}/api/models/org/gated").json()  # metadata stays public
    assert info["gated"] == "manual"


def test_private_repo(hub: FakeHub) -> None:
    hub.add_hf_repo("org/private", {"a.txt": b"x"}, private=True, gated_token=TOKEN)
    r = HTTP.get(f"{hub.url}/api/models/org/private")
    assert (r.status_code, r.headers["x-error-code"]) == (401, "RepoNotFound")
    r = HTTP.get(f"{hub.url}/api/models/org/private", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 404
    r = HTTP.get(f"{hub.url}/api/models/org/private", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.json()["private"] is True


def test_updating_a_branch_keeps_old_commits(hub: FakeHub) -> None:
    first = hub.add_hf_repo("org/u", {"a.txt": b"one"})
    second = hub.add_hf_repo("org/u", {"a.txt": b"two"})
    assert first != second
    assert HTTP.get(f"{hub.url}/org/u/resolve/main/a.txt").content == b"two"
    assert HTTP.get(f"{hub.url}/org/u/resolve/{first}/a.txt").content == b"one"


def test_path_data_and_repo_id_validation(hub: FakeHub, tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    p.write_bytes(WEIGHTS)
    hub.add_hf_repo("org/p", {"big.bin": p})
    assert HTTP.get(f"{hub.url}/org/p/resolve/main/big.bin", follow_redirects=True).content == WEIGHTS
    from modeldepot.errors import ConfigurationError

    for bad in ("", "a/b/c", "../x"):
        with pytest.raises(ConfigurationError):
            hub.add_hf_repo(bad, {"a": b"x"})
    with pytest.raises(ConfigurationError):
        hub.add_hf_repo("org/q", {"../escape": b"x"})


# -- the real client ------------------------------------------------------------------------------


def _tree(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_huggingface_hub_snapshot_download_both_revisions(hub: FakeHub, repo: tuple[str, str], tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    cache = tmp_path / "cache"
    main_dir = snapshot_download(REPO, cache_dir=cache, endpoint=hub.url)
    assert _tree(main_dir) == _files()
    assert Path(main_dir).name == repo[0]
    fp16_dir = snapshot_download(REPO, revision="fp16", cache_dir=cache, endpoint=hub.url)
    assert _tree(fp16_dir) == {"model_index.json": b"{}", "unet/diffusion_pytorch_model.fp16.safetensors": FP16}
    # the cache names blobs by the hub's etags: sha256 for LFS files, git blob sha1 for small ones
    blobs = {p.name for p in (cache / "models--org--tiny-model" / "blobs").iterdir()}
    assert hashlib.sha256(WEIGHTS).hexdigest() in blobs
    assert _git_sha1(CONFIG) in blobs
    assert (cache / "models--org--tiny-model" / "refs" / "fp16").read_text() == repo[1]


def test_huggingface_hub_hf_hub_download_and_commit_revision(
    hub: FakeHub, repo: tuple[str, str], tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(REPO, "text_encoder/model.safetensors", cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == WEIGHTS
    path = hf_hub_download(REPO, "model_index.json", revision=repo[1], cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == b"{}"


def test_huggingface_hub_gated_repo_with_token(hub: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError

    files = {"w.safetensors": WEIGHTS, "config.json": CONFIG}
    hub.add_hf_repo("org/gated", files, gated_token=TOKEN)
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "w.safetensors", cache_dir=tmp_path / "a", endpoint=hub.url, token=False)
    folder = snapshot_download("org/gated", cache_dir=tmp_path / "b", endpoint=hub.url, token=TOKEN)
    assert _tree(folder) == files


def test_huggingface_hub_with_a_foreign_cdn_host(tmp_path: Path) -> None:
    """With the CDN on another origin the client reads metadata from the 302 and drops the token."""
    from huggingface_hub import snapshot_download

    with FakeHub(cdn_host="localhost") as hub:
        hub.add_hf_repo("org/gated", {"w.safetensors": WEIGHTS, "c.json": CONFIG}, gated_token=TOKEN)
        folder = snapshot_download("org/gated", cache_dir=tmp_path, endpoint=hub.url, token=TOKEN)
        assert _tree(folder) == {"w.safetensors": WEIGHTS, "c.json": CONFIG}
        cdn = [r for r in hub.stats.requests if r.path.startswith("/cdn/")]
        assert [r.method for r in cdn] == ["GET"]  # no HEAD followed to the CDN
        authorized = hub.stats.authorized_paths
        assert any("/resolve/" in p for p in authorized)
        assert not any(p.startswith("/cdn/") for p in authorized)  # the token stayed on the hub host


def test_huggingface_hub_missing_entry(hub: FakeHub, repo: tuple[str, str], tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "model_index.json", revision="nope", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/none", "model_index.json", cache_dir=tmp_path, endpoint=hub.url)


def test_huggingface_hub_resumes_a_dropped_cdn_transfer_with_range(hub: FakeHub, tmp_path: Path) -> None:
    """The real client's retry path works against the CDN route after a dropped connection.

    (huggingface_hub buffers 10 MiB chunks, so after a drop inside the first chunk it retries from 0.)
    """
    from huggingface_hub import hf_hub_download

    hub.add_hf_repo("org/drop", {"w.safetensors": WEIGHTS})
    hub.faults("/cdn/*", drop_after_bytes=60_000, times=1)
    path = hf_hub_download("org/drop", "w.safetensors", cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == WEIGHTS
    gets = [r for r in hub.stats.requests if r.path.startswith("/cdn/") and r.method == "GET"]
    assert len(gets) == 2 and gets[0].status == 200 and gets[1].status in (200, 206)
    assert hub.stats.bytes_sent_by_path[gets[0].path] >= 60_000 + len(WEIGHTS) - (60_000 if gets[1].range else 0)
