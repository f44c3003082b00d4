"""Seed 002's installer and loader examples ("Model installation", "The Lowdown on the
ModelLoadService", "The ModelManagerService object", "Invocation Context Model Manager API"), run as
written against modeldepot. The calls and names are the document's; the remote is a local fakehub.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modeldepot import DepotConfig, ModelManager
from modeldepot.download import DownloadQueueService
from modeldepot.errors import ModelDepotError, UnknownModelException
from modeldepot.events import EventBus, EventRecorder
from modeldepot.install import (
    HFModelSource,
    InstallStatus,
    LocalModelSource,
    ModelInstallJob,
    ModelInstallService,
    URLModelSource,
)
from modeldepot.load import LoadedModel
from modeldepot.records import ModelRecordServiceSQL
from modeldepot.taxonomy import BaseModelType, ModelType, SchedulerPredictionType, SubModelType
from modeldepot.testing import factories
from modeldepot.testing.fakehub import FakeHub


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub() as h:
        pipe = tree(factories.write_diffusers_pipeline(tmp_path / "pub" / "sd15"))
        pipe16 = tree(factories.write_diffusers_pipeline(tmp_path / "pub" / "sd15-fp16", fp16=True))
        h.add_hf_repo("runwayml/stable-diffusion-v1-5", pipe | {k: v for k, v in pipe16.items() if ".fp16." in k})
        sd2 = tree(factories.write_diffusers_pipeline(tmp_path / "pub" / "sd21", "sd-2", prediction_type="epsilon"))
        h.add_hf_repo("stabilityai/stable-diffusion-2-1", sd2)
        lora = factories.write_lora(tmp_path / "pub" / "detail.safetensors")
        h.add_file("api/download/models/63006", lora, content_disposition='attachment; filename="detail.safetensors"')
        yield h


@pytest.fixture
def config(tmp_path: Path, hub: FakeHub) -> DepotConfig:
    return DepotConfig(
        home=tmp_path / "invokeai-root",
        hf_endpoint=hub.url,
        allow_private_urls=True,
        link_modes=["hardlink", "copy"],
    )


@pytest.fixture
def installer(config: DepotConfig) -> Iterator[ModelInstallService]:
    """The document's initialization pattern."""
    config.home.mkdir(parents=True, exist_ok=True)
    record_store = ModelRecordServiceSQL.from_db_file(config.databases_dir / "modeldepot.db")
    queue = DownloadQueueService(config=config)
    queue.start()
    installer = ModelInstallService(app_config=config, record_store=record_store, download_queue=queue)
    installer.start()
    yield installer
    installer.stop()
    queue.stop()


@pytest.fixture
def mm(config: DepotConfig) -> Iterator[ModelManager]:
    with ModelManager(config) as m:
        yield m


# Model installation ------------------------------------------------------------------------------


def test_heuristic_import_source_forms(installer: ModelInstallService, hub: FakeHub, tmp_path: Path) -> None:
    local = factories.write_textual_inversion(tmp_path / "sushi.safetensors")
    sources = [
        str(local),  # 1. a path on the local filesystem
        f"{hub.url}/api/download/models/63006",  # 2. a URL to a single downloadable model file
        "runwayml/stable-diffusion-v1-5::vae",  # 3. a HuggingFace repo_id: the vae submodel
        "runwayml/stable-diffusion-v1-5:fp16:vae",  # the vae submodel, fp16 variant
        "runwayml/stable-diffusion-v1-5::vae/diffusion_pytorch_model.safetensors",  # one file
    ]
    jobs = [installer.heuristic_import(s) for s in sources]
    assert all(isinstance(j, ModelInstallJob) for j in jobs)
    installer.wait_for_installs(timeout=120)
    assert all(j.complete for j in jobs), [(j.source, j.error) for j in jobs]
    types = [j.config_out.type for j in jobs if j.config_out is not None]
    assert types == [ModelType.TextualInversion, ModelType.LoRA, ModelType.VAE, ModelType.VAE, ModelType.VAE]
    assert Path(jobs[0].config_out.path) != local  # type: ignore[union-attr]  # copied into the root


def test_import_model_with_sources_and_job_attributes(
    installer: ModelInstallService, hub: FakeHub, tmp_path: Path
) -> None:
    file_model = factories.write_lora(tmp_path / "opt" / "sushi.safetensors", seed=3)
    folder_model = factories.write_diffusers_vae(tmp_path / "opt" / "sushi_diffusers")
    source1 = LocalModelSource(path=file_model)  # a local safetensors file
    source2 = LocalModelSource(path=folder_model, inplace=True)  # a local diffusers folder, in place
    source4 = HFModelSource(repo_id="runwayml/stable-diffusion-v1-5", subfolder="vae")  # a subfolder
    source5 = HFModelSource(repo_id="runwayml/stable-diffusion-v1-5", variant="fp16", subfolder="unet")
    source7 = URLModelSource(url=f"{hub.url}/api/download/models/63006")  # model located at a URL
    sources = [source1, source2, source4, source5, source7]
    for source in sources:
        installer.import_model(source)
    jobs = installer.wait_for_installs(timeout=120)
    assert len(jobs) == len(sources)
    for source in sources:
        (job,) = installer.get_job_by_source(source)
        assert job.complete, (source, job.error_type, job.error)
        assert job.status == InstallStatus.COMPLETED and job.in_terminal_state
        assert not (job.waiting or job.downloading or job.running or job.errored or job.cancelled)
        model_config = job.config_out
        assert model_config is not None and installer.record_store.get_model(model_config.key) == model_config
        assert isinstance(job.id, int) and job.config_in == {} and job.local_path is not None
    (inplace_job,) = installer.get_job_by_source(source2)
    assert inplace_job.inplace and inplace_job.config_out.path == str(folder_model)  # type: ignore[union-attr]
    (unet_job,) = installer.get_job_by_source(source5)
    assert any(".fp16." in name for name in tree(Path(unet_job.config_out.path)))  # type: ignore[union-attr]
    assert installer.get_job_by_id(unet_job.id) is unet_job
    assert {j.id for j in installer.list_jobs()} == {j.id for j in jobs}
    installer.prune_jobs()
    assert installer.list_jobs() == []
    # installer.app_config, installer.record_store, installer.event_bus
    assert isinstance(installer.app_config, DepotConfig) and isinstance(installer.event_bus, EventBus)
    assert isinstance(installer.record_store, ModelRecordServiceSQL)


def test_config_overrides_probed_values(installer: ModelInstallService) -> None:
    install_job = installer.import_model(
        source=HFModelSource(repo_id="stabilityai/stable-diffusion-2-1", variant="fp32"),
        config=dict(
            prediction_type=SchedulerPredictionType("v_prediction"),
            name="stable diffusion 2 base model",
        ),
    )
    installer.wait_for_job(install_job, timeout=120)
    assert install_job.complete, install_job.error
    config = install_job.config_out
    assert config is not None and config.name == "stable diffusion 2 base model"
    assert getattr(config, "prediction_type", None) == SchedulerPredictionType.VPrediction
    assert config.base == BaseModelType.StableDiffusion2


def test_errored_job_reports_error_type_and_error(installer: ModelInstallService, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    job = installer.wait_for_job(installer.heuristic_import(str(notes)), timeout=60)
    assert job.errored and job.error_type == "InvalidSourceError"
    assert "is not a model file" in (job.error or "")
    print(f"{job.source}: {job.error_type}.\nStack trace:\n{job.traceback}")


def test_register_install_unregister_delete(installer: ModelInstallService, tmp_path: Path) -> None:
    registered = factories.write_lora(tmp_path / "mine" / "a.safetensors", seed=11)
    installed = factories.write_lora(tmp_path / "mine" / "b.safetensors", seed=12)
    key1 = installer.register_path(registered, {"name": "mine-a"})
    key2 = installer.install_path(installed)
    store = installer.record_store
    assert store.get_model(key1).path == str(registered)  # registered in place
    copied = Path(store.get_model(key2).path)
    assert copied != installed and installer.app_config.home in copied.parents and installed.exists()

    installer.unregister(key1)  # equivalent to record_store.del_model(key)
    assert not store.exists(key1) and registered.exists()
    installer.delete(key2)  # inside the models directory: its files go too
    assert not store.exists(key2) and not copied.exists() and installed.exists()

    key3 = installer.register_path(registered)
    installer.delete(key3)  # outside the models directory: kept
    assert registered.exists()
    key4 = installer.register_path(registered)
    installer.unconditionally_delete(key4)  # deleted wherever it is
    assert not store.exists(key4) and not registered.exists()
    with pytest.raises(UnknownModelException):
        installer.unregister(key4)


def test_download_and_cache(installer: ModelInstallService, hub: FakeHub) -> None:
    path = installer.download_and_cache(f"{hub.url}/api/download/models/63006", timeout=60)
    assert path.name == "detail.safetensors" and installer.record_store.all_models() == []
    hub.stats.reset()
    assert installer.download_and_cache(f"{hub.url}/api/download/models/63006", None, 60) == path
    assert hub.stats.bytes_sent_total == 0  # "found in the cache, its path will be returned"


# Loading -------------------------------------------------------------------------------------------


@pytest.fixture
def torch() -> Any:
    pytest.importorskip("diffusers")
    return pytest.importorskip("torch")


def test_loader_get_model_by_key_and_loaded_model_in_inference(mm: ModelManager, tmp_path: Path, torch: Any) -> None:
    from modeldepot.testing.factories import torch_models

    pipeline = factories.write_diffusers_pipeline(tmp_path / "sd15")
    shutil.rmtree(pipeline / "vae")
    torch_models.tiny_vae(pipeline / "vae")  # initialised weights: a decode gives finite pixels
    key = mm.install.register_path(pipeline, {"name": "sd15"})
    loader = mm.load
    loaded_model = loader.get_model_by_key(key, SubModelType("vae"))
    assert isinstance(loaded_model, LoadedModel) and loaded_model.config.key == key
    latents = torch.randn(1, 4, 8, 8)
    with loaded_model as vae, torch.no_grad():
        image = vae.decode(latents)[0]
    assert image.shape[:2] == (1, 3) and torch.isfinite(image).all()
    with loaded_model.model_on_device() as (state_dict, vae), torch.no_grad():
        image2 = vae.decode(latents)[0]
        assert state_dict is not None and "decoder.conv_out.weight" in state_dict
    assert torch.allclose(image, image2)


def test_model_manager_service_shortcuts(mm: ModelManager, tmp_path: Path, torch: Any) -> None:
    key = mm.install.register_path(factories.write_diffusers_pipeline(tmp_path / "sd15"), {"name": "sd15"})
    configs = mm.store.get_model_by_attr(name="sd15")
    assert len(configs) > 0
    by_config = mm.load_model_by_config(configs[0], SubModelType.VAE)
    by_key = mm.load_model_by_key(key, "vae")
    by_attr = mm.load_model_by_attr("sd15", BaseModelType.StableDiffusion1, ModelType.Main, SubModelType.VAE)
    assert by_config.model is by_key.model is by_attr.model
    with pytest.raises(UnknownModelException):
        mm.load_model_by_attr("nope", BaseModelType.StableDiffusion1, ModelType.Main, SubModelType.VAE)

    # ValueError -- more than one model matches this combination of base/type/name
    other = factories.write_diffusers_pipeline(tmp_path / "other", unet_seed=5)
    mm.install.register_path(other, {"name": "sd15"})
    with pytest.raises(ValueError, match="more than one") as info:
        mm.load_model_by_attr("sd15", BaseModelType.StableDiffusion1, ModelType.Main, SubModelType.VAE)
    assert isinstance(info.value, ModelDepotError)


def test_context_triggers_model_load_events(mm: ModelManager, tmp_path: Path, torch: Any) -> None:
    key = mm.install.register_path(factories.write_diffusers_vae(tmp_path / "vae"), {"name": "tiny-vae"})
    invocation_events = EventBus()
    rec = EventRecorder(invocation_events)
    context = SimpleNamespace(
        queue_id="default",
        queue_item_id=1,
        queue_batch_id="b",
        graph_execution_state_id="g",
        services=SimpleNamespace(events=invocation_events),
    )
    loaded = mm.load_model_by_key(key, None, context)
    assert rec.names() == ["model_load_started", "model_load_completed"]
    payload = rec.events[0].payload
    assert payload["model_key"] == key and payload["queue_item_id"] == 1
    assert payload["location"] == str(loaded.location) and payload["precision"] == str(loaded.precision)


def test_invocation_context_local_and_remote_models(mm: ModelManager, hub: FakeHub, tmp_path: Path, torch: Any) -> None:
    path = mm.download_and_cache_model("runwayml/stable-diffusion-v1-5:fp16:vae")
    assert path.is_dir() and (path / "diffusion_pytorch_model.fp16.safetensors").is_file()

    vae = mm.load_local_model(path).model
    assert type(vae).__name__ == "AutoencoderKL"

    calls: list[Path] = []

    def loader(model_path: Path) -> Any:
        from diffusers import AutoencoderKL

        calls.append(model_path)
        return AutoencoderKL.from_pretrained(model_path, variant="fp16", torch_dtype=torch.float16)

    remote = mm.load_remote_model("runwayml/stable-diffusion-v1-5:fp16:vae", loader)
    assert calls == [path] and remote.model.dtype == torch.float16 and remote.precision == "float16"
    lora = mm.load_remote_model(f"{hub.url}/api/download/models/63006")
    assert isinstance(lora.model, dict) and lora.config.type == ModelType.LoRA
    assert mm.store.all_models() == []  # nothing was registered
