"""``download_and_cache``: URLs and Hugging Face ids with seed 002's variant/subfolder/file syntax,
served from the cache the second time, and never half-published (seed 002 lines 818-842, 1609-1628)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modeldepot.errors import (
    DownloadError,
    IntegrityError,
    InvalidSourceError,
    ModelDepotError,
    RemoteNotFoundError,
)
from modeldepot.manager import ModelManager
from modeldepot.remote import HFModelSource, URLModelSource
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pipeline_repo(hub: FakeHub, tmp_path: Path) -> dict[str, bytes]:
    """``acme/tiny-sd``: a pipeline with default (fp32) and fp16 weights, plus a README."""
    files = tree(factories.write_diffusers_pipeline(tmp_path / "pipe"))
    fp16 = tree(factories.write_diffusers_pipeline(tmp_path / "pipe16", fp16=True))
    files |= {k: v for k, v in fp16.items() if ".fp16." in k}
    files["README.md"] = b"# tiny\n"
    hub.add_hf_repo("acme/tiny-sd", files)
    return files


def test_hf_variant_subfolder_is_a_folder_of_that_variant(
    mm: ModelManager, hub: FakeHub, pipeline_repo: dict[str, bytes]
) -> None:
    path = mm.install.download_and_cache("acme/tiny-sd:fp16:vae", timeout=60)
    assert path.is_dir() and path.name == "vae" and mm.config.home in path.parents
    got = tree(path)
    assert set(got) == {"config.json", "diffusion_pytorch_model.fp16.safetensors"}
    for name, data in got.items():
        assert data == pipeline_repo[f"vae/{name}"]
    assert mm.store.all_models() == []  # cached, not registered

    hub.stats.reset()
    assert mm.install.download_and_cache("acme/tiny-sd:fp16:vae", timeout=60) == path
    assert hub.stats.requests == []  # not even the repo listing is asked again


def test_hf_default_variant_subfolder_and_whole_repo(
    mm: ModelManager, hub: FakeHub, pipeline_repo: dict[str, bytes]
) -> None:
    vae = mm.install.download_and_cache("acme/tiny-sd::vae", timeout=60)
    assert vae.is_dir() and vae.name == "vae" and "config.json" in tree(vae)
    assert not any(name.startswith("unet") for name in tree(vae))
    whole = mm.install.download_and_cache("acme/tiny-sd:fp32", timeout=60)
    got = tree(whole)
    assert "model_index.json" in got and "unet/config.json" in got and "README.md" not in got
    assert got["unet/diffusion_pytorch_model.safetensors"] == pipeline_repo["unet/diffusion_pytorch_model.safetensors"]
    assert whole != vae  # different sources, different cache entries


@pytest.mark.parametrize(
    "source",
    [
        "acme/tiny-sd::vae/diffusion_pytorch_model.safetensors",
        # Seed 002's own example writes the file from the repo root: ::/checkpoints/sd4.safetensors.
        "acme/tiny-sd::/vae/diffusion_pytorch_model.safetensors",
    ],
)
def test_hf_single_file_is_that_file(
    mm: ModelManager, hub: FakeHub, pipeline_repo: dict[str, bytes], source: str
) -> None:
    path = mm.install.download_and_cache(source, timeout=60)
    assert path.is_file() and path.name == "diffusion_pytorch_model.safetensors"
    assert path.read_bytes() == pipeline_repo["vae/diffusion_pytorch_model.safetensors"]
    hub.stats.reset()
    assert mm.install.download_and_cache(source, timeout=60) == path
    assert hub.stats.requests == []


def test_typed_sources_and_a_repo_of_one_file(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    hub.add_hf_repo("acme/loras", {"style.safetensors": lora.read_bytes(), "README.md": b"# hi"})
    path = mm.install.download_and_cache(HFModelSource(repo_id="acme/loras"), timeout=60)
    assert path.is_file() and path.read_bytes() == lora.read_bytes()  # a lone weights file is the model
    hub.stats.reset()
    assert mm.download_and_cache_model("acme/loras") == path  # the same source, spelled as a string
    assert hub.stats.requests == []

    url = hub.add_file("files/cfg/thing.yaml", b"model: tiny\n")
    got = mm.install.download_and_cache(URLModelSource(url=url), timeout=60)
    assert got.name == "thing.yaml" and got.read_bytes() == b"model: tiny\n"


def test_concurrent_calls_download_once(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    data = factories.write_vae(tmp_path / "vae.safetensors").read_bytes()
    url = hub.add_file("files/vae/tiny-vae.safetensors", data)
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(mm.install.download_and_cache(url, timeout=60))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert results[0].read_bytes() == data
    assert hub.stats.bytes_sent_by_path["/files/vae/tiny-vae.safetensors"] == len(data)


def test_a_failed_download_publishes_nothing_and_the_next_call_works(
    mm: ModelManager, hub: FakeHub, pipeline_repo: dict[str, bytes]
) -> None:
    source = "acme/tiny-sd::vae"
    hub.faults("/cdn/*", corrupt_byte_at=100)  # the weights (LFS files) arrive damaged
    with pytest.raises(IntegrityError):
        mm.install.download_and_cache(source, timeout=60)
    cache = mm.config.home / "download_cache"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []
    hub.clear_faults()
    path = mm.install.download_and_cache(source, timeout=60)
    for name, data in tree(path).items():
        assert data == pipeline_repo[f"vae/{name}"]


def test_bad_sources_raise_clear_errors(mm: ModelManager, hub: FakeHub, pipeline_repo: dict[str, bytes]) -> None:
    with pytest.raises(InvalidSourceError, match="unknown variant 'fp99'"):
        mm.install.download_and_cache("acme/tiny-sd:fp99:vae")
    with pytest.raises(RemoteNotFoundError, match=r"no file 'nope\.safetensors'"):
        mm.install.download_and_cache("acme/tiny-sd::nope.safetensors", timeout=60)
    url = hub.add_file("files/gone.safetensors", b"x")
    hub.faults("files/gone.safetensors", status=404, status_times=0)
    with pytest.raises(DownloadError) as info:
        mm.install.download_and_cache(url, timeout=60)
    assert isinstance(info.value, ModelDepotError)


def test_local_path_is_returned_as_is(mm: ModelManager, tmp_path: Path) -> None:
    lora = factories.write_lora(tmp_path / "mine.safetensors")
    assert mm.install.download_and_cache(str(lora)) == lora


def test_least_recently_used_entries_are_evicted_over_the_cap(tmp_path: Path, hub: FakeHub) -> None:
    a = hub.add_file("files/a.bin", b"a" * 1000)
    b = hub.add_file("files/b.bin", b"b" * 1000)
    with ModelManager.open(home=tmp_path / "d", allow_private_urls=True, download_cache_gb=1500 / 1024**3) as mm:
        first = mm.install.download_and_cache(a, timeout=60)
        second = mm.install.download_and_cache(b, timeout=60)
        assert second.read_bytes() == b"b" * 1000 and not first.exists()


def test_civitai_version_is_its_primary_file(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    emb = factories.write_textual_inversion(tmp_path / "emb.safetensors")
    hub.add_civitai_model(
        {
            "id": 7,
            "name": "Nice Embedding",
            "type": "TextualInversion",
            "modelVersions": [
                {
                    "id": 70,
                    "name": "v1",
                    "baseModel": "SD 1.5",
                    "files": [{"name": "nice.safetensors", "type": "Model", "primary": True, "data": emb.read_bytes()}],
                }
            ],
        }
    )
    path = mm.install.download_and_cache("civitai:70", timeout=60)
    assert path.name == "nice.safetensors" and path.read_bytes() == emb.read_bytes()
    hub.stats.reset()
    assert mm.install.download_and_cache(f"{hub.url}/models/7?modelVersionId=70", timeout=60) == path
    assert hub.stats.requests == []
