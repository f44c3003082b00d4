"""Remote installs against the local fakehub: Hugging Face, Civitai, plain URLs, and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modeldepot.errors import BlockedAddressError, InvalidSourceError
from modeldepot.events import EventRecorder
from modeldepot.manager import ModelManager
from modeldepot.taxonomy import BaseModelType, ModelType
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def publish_pipeline(hub: FakeHub, tmp_path: Path, repo: str = "acme/tiny-sd", **kw: object) -> dict[str, bytes]:
    folder = factories.write_diffusers_pipeline(tmp_path / "src" / repo.replace("/", "_"))
    files = tree(folder)
    hub.add_hf_repo(repo, files, **kw)  # type: ignore[arg-type]
    return files


def test_hf_repo_install_end_to_end(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    files = publish_pipeline(hub, tmp_path, tags=["diffusers"], card_data={"license": "openrail"}, author="acme")
    rec = EventRecorder(mm.events)
    job = mm.install.heuristic_import("acme/tiny-sd")
    mm.install.wait_for_job(job, timeout=60)
    assert job.complete, job.error
    config = job.config_out
    assert config is not None
    assert (config.type, config.base, config.name) == (ModelType.Main, BaseModelType.StableDiffusion1, "tiny-sd")
    assert config.source == "acme/tiny-sd" and config.author == "acme" and config.license == "openrail"
    assert config.source_api_response and "acme/tiny-sd" in config.source_api_response
    installed = tree(Path(config.path))
    weights = {k for k in files if k.endswith((".safetensors", ".json"))}
    assert weights <= set(installed)
    for k in weights:
        assert installed[k] == files[k]
    names = rec.names()
    assert names[0] == "model_install_waiting" and "model_install_downloading" in names
    assert names[-1] == "model_install_completed" and "model_install_running" in names
    parts_events = [e for e in rec.events if e.name == "model_install_downloading" and e.payload["parts"]]
    assert parts_events and all("path" in p for p in parts_events[-1].payload["parts"])
    # staging is cleaned
    assert not any((mm.config.tmp_dir / "install").glob("*/*"))


def test_second_install_of_same_repo_downloads_nothing(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    publish_pipeline(hub, tmp_path)
    first = mm.install.wait_for_job(mm.install.heuristic_import("acme/tiny-sd"), timeout=60)
    assert first.complete
    hub.stats.reset()
    second = mm.install.wait_for_job(mm.install.heuristic_import("acme/tiny-sd"), timeout=60)
    assert second.complete and second.config_out is not None
    assert second.config_out.key == first.config_out.key  # type: ignore[union-attr]
    assert hub.stats.bytes_sent_total == 0
    assert len(mm.store.all_models()) == 1


def test_single_file_from_a_repo_and_civitai(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "style.safetensors")
    hub.add_hf_repo("acme/loras", {"style.safetensors": lora.read_bytes(), "README.md": b"# hi"})
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/loras::style.safetensors"), timeout=60)
    assert job.complete, job.error
    assert job.config_out is not None and job.config_out.type == ModelType.LoRA
    assert job.config_out.base == BaseModelType.StableDiffusionXL

    emb = factories.write_textual_inversion(tmp_path / "emb.safetensors")
    hub.add_civitai_model(
        {
            "id": 7,
            "name": "Nice Embedding",
            "type": "TextualInversion",
            "tags": ["style"],
            "creator": {"username": "maker"},
            "modelVersions": [
                {
                    "id": 70,
                    "name": "v1",
                    "baseModel": "SD 1.5",
                    "trainedWords": ["nicestyle"],
                    "images": [{"url": f"{hub.url}/img.png"}],
                    "files": [{"name": "nice.safetensors", "type": "Model", "primary": True, "data": emb.read_bytes()}],
                }
            ],
        }
    )
    job = mm.install.wait_for_job(mm.install.heuristic_import("civitai:70"), timeout=60)
    assert job.complete, job.error
    c = job.config_out
    assert c is not None and c.type == ModelType.TextualInversion and c.base == BaseModelType.StableDiffusion1
    assert c.trigger_phrases == {"nicestyle"} and c.author == "maker" and "style" in c.tags
    assert c.thumbnail_url == f"{hub.url}/img.png"
    assert Path(c.path).read_bytes() == emb.read_bytes()


def test_plain_url_named_by_content_disposition(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    vae = factories.write_vae(tmp_path / "v.safetensors")
    url = hub.add_file(
        "files/dl/12345", vae.read_bytes(), content_disposition='attachment; filename="good-vae.safetensors"'
    )
    job = mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60)
    assert job.complete, job.error
    assert job.config_out is not None and job.config_out.name == "good-vae"
    assert job.config_out.type == ModelType.VAE
    assert (
        hashlib.sha256(Path(job.config_out.path).read_bytes()).hexdigest()
        == hashlib.sha256(vae.read_bytes()).hexdigest()
    )


def test_html_page_is_refused(mm: ModelManager, hub: FakeHub) -> None:
    url = hub.add_file("files/x/login.safetensors", b"<!DOCTYPE html><html><body>Please log in</body></html>")
    job = mm.install.wait_for_job(mm.install.heuristic_import(url), timeout=60)
    assert job.errored and "web page" in (job.error or "")
    assert mm.store.all_models() == []


def test_typo_repo_and_gated_repo_errors(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/nope-typo"), timeout=60)
    assert job.errored and "acme/nope-typo" in (job.error or "")
    publish_pipeline(hub, tmp_path, repo="acme/gated", gated_token="hf_secret_123")
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/gated"), timeout=60)
    assert job.errored and "token" in (job.error or "").lower()
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/gated", access_token="hf_secret_123"), timeout=60)
    assert job.complete, job.error
    assert "hf_secret_123" not in job.model_dump_json() and "hf_secret_123" not in str(job.to_public())
    db = mm.config.db_url
    assert b"hf_secret_123" not in Path(db).read_bytes()


def test_same_source_twice_at_once_is_one_job(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    publish_pipeline(hub, tmp_path)
    hub.faults("*", speed_limit_bps=2_000_000)
    a = mm.install.heuristic_import("acme/tiny-sd")
    b = mm.install.heuristic_import("acme/tiny-sd")
    assert a is b
    mm.install.wait_for_job(a, timeout=60)
    assert len(mm.store.all_models()) == 1


def test_bad_sources(mm: ModelManager) -> None:
    with pytest.raises(InvalidSourceError):
        mm.install.heuristic_import("this is not a model source at all!")
    with pytest.raises(InvalidSourceError):
        mm.install.heuristic_import("acme/repo::../../etc/passwd")


def test_private_urls_refused_unless_trusted(tmp_path: Path, hub: FakeHub) -> None:
    publish_pipeline(hub, tmp_path)
    with FakeHub(host="127.0.0.2") as other, ModelManager.open(home=tmp_path / "d2", hf_endpoint=hub.url) as mm2:
        url = other.add_file("files/a/m.safetensors", b"x" * 10)
        with pytest.raises(BlockedAddressError, match=r"refused: private address 127\.0\.0\.2"):
            mm2.install.heuristic_import(url)
        with pytest.raises(BlockedAddressError, match="private address"):
            mm2.install.heuristic_import("http://localhost:1/x.safetensors")
        assert other.stats.max_concurrent_connections == 0  # refused before any connection
        assert mm2.install.list_jobs() == []
        # The configured hf_endpoint is the user's choice: trusted although it is on loopback.
        job = mm2.install.wait_for_job(mm2.install.heuristic_import("acme/tiny-sd"), timeout=120)
        assert job.complete, job.error


def test_repo_with_one_weight_file_installs_that_file(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    lora = factories.write_sdxl_lora(tmp_path / "only.safetensors")
    hub.add_hf_repo("acme/one-lora", {"only.safetensors": lora.read_bytes(), "README.md": b"# x"})
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/one-lora"), timeout=60)
    assert job.complete, job.error
    c = job.config_out
    assert c is not None and (c.type, c.base) == (ModelType.LoRA, BaseModelType.StableDiffusionXL)
    assert Path(c.path).is_file() and c.name == "one-lora"


def test_pause_then_resume_right_away_completes(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    publish_pipeline(hub, tmp_path)
    hub.faults("*", speed_limit_bps=300_000)  # slow enough to pause mid-download
    job = mm.install.heuristic_import("acme/tiny-sd")
    import threading

    started = threading.Event()
    unsubscribe = mm.events.subscribe(lambda e: started.set(), {"model_install_downloading"})
    assert started.wait(30)
    unsubscribe()
    mm.install.pause_job(job)
    assert job.status.value == "paused"
    hub.clear_faults()
    mm.install.resume_job(job)
    mm.install.wait_for_job(job, timeout=60)
    assert job.complete, job.error


def test_fp16_variant_downloads_only_fp16_weights(mm: ModelManager, hub: FakeHub, tmp_path: Path) -> None:
    folder = factories.write_diffusers_pipeline(tmp_path / "plain")
    fp16 = factories.write_diffusers_pipeline(tmp_path / "fp16", fp16=True)
    files = {**tree(folder), **tree(fp16)}
    assert any(".fp16." in k for k in files) and any(".fp16." not in k and k.endswith(".safetensors") for k in files)
    hub.add_hf_repo("acme/both", files)
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/both:fp16"), timeout=60)
    assert job.complete, job.error
    c = job.config_out
    assert c is not None and str(getattr(c, "repo_variant", "")) == "fp16"
    weights = [p for p in Path(c.path).rglob("*.safetensors")]
    assert weights and all(".fp16." in p.name for p in weights)
    fetched = {r.path for r in hub.stats.requests}
    assert not any(p.endswith("diffusion_pytorch_model.safetensors") for p in fetched)


def test_default_variant_is_fp16_when_the_repo_has_it_and_the_job_says_so(
    mm: ModelManager, hub: FakeHub, tmp_path: Path
) -> None:
    """Seed 002: an HFModelSource with no variant prefers fp16, falling back to the plain files."""
    fp16 = factories.write_diffusers_pipeline(tmp_path / "fp16", fp16=True)
    hub.add_hf_repo("acme/both", {**tree(factories.write_diffusers_pipeline(tmp_path / "plain")), **tree(fp16)})
    job = mm.install.wait_for_job(mm.install.heuristic_import("acme/both"), timeout=60)
    assert job.complete, job.error
    assert job.variant == "fp16" and job.variant_reason and "fp16" in job.variant_reason
    assert any("fp16" in n for n in job.notes)
    assert job.config_out is not None
    assert all(".fp16." in p.name for p in Path(job.config_out.path).rglob("*.safetensors"))
    publish_pipeline(hub, tmp_path, "acme/plain")
    plain = mm.install.wait_for_job(mm.install.heuristic_import("acme/plain"), timeout=60)
    assert plain.complete, plain.error
    assert plain.variant == "default" and plain.variant_reason and "no fp16" in plain.variant_reason
