"""Contract names (DESIGN.md §2) exist, and every package's __all__ is importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "modeldepot.taxonomy",
    "modeldepot.configs",
    "modeldepot.errors",
    "modeldepot.records",
    "modeldepot.download",
    "modeldepot.install",
    "modeldepot.storage",
    "modeldepot.load",
    "modeldepot.identify",
    "modeldepot.remote",
    "modeldepot.reference",
    "modeldepot.managers",
    "modeldepot.services",
    "modeldepot.train",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ lists {attr} but it does not exist"


def test_nataili_contract_names() -> None:
    from modeldepot import managers, reference

    assert callable(reference.ModelReference.load)
    for name in (
        "BaseModelManager",
        "CompVisModelManager",
        "DiffusersModelManager",
        "ClipModelManager",
        "BlipModelManager",
        "EsrganModelManager",
        "GfpganModelManager",
        "CodeFormerModelManager",
        "SafetyCheckerModelManager",
        "ControlNetModelManager",
        "SuperModelManager",
    ):
        cls = getattr(managers, name)
        for meth in (
            "load",
            "unload_model",
            "download_model",
            "download_all",
            "validate_model",
            "taint_model",
            "is_available",
            "cuda_available",
        ):
            assert callable(getattr(cls, meth, None)), f"{name}.{meth}"
        for attr in ("available_models", "tainted_models", "loaded_models", "models"):
            assert attr in dir(cls) or attr in cls.__init__.__code__.co_names, f"{name}.{attr}"


def test_contract_names() -> None:
    import modeldepot
    from modeldepot import download, errors, install, load, storage, taxonomy

    assert {"any", "sd-1", "sd-2", "sdxl", "sdxl-refiner", "sd-3", "flux"} <= {b.value for b in taxonomy.BaseModelType}
    for cls in (
        "UnknownModelException",
        "DuplicateModelException",
        "InvalidModelConfigException",
        "ModelNotFoundException",
        "UnknownJobIDException",
    ):
        assert issubclass(getattr(errors, cls), errors.ModelDepotError)
    assert issubclass(errors.UnknownModelException, KeyError)
    # The record store's methods are checked in tests/records/test_records_api.py.
    for meth in (
        "start",
        "stop",
        "download",
        "create_download_job",
        "submit_download_job",
        "join",
        "wait_for_job",
        "list_jobs",
        "id_to_job",
        "prune_jobs",
        "start_job",
        "pause_job",
        "cancel_job",
        "start_all_jobs",
        "pause_all_jobs",
        "cancel_all_jobs",
    ):
        assert hasattr(download.DownloadQueueService, meth), meth
    assert {s.value for s in download.DownloadJobStatus} == {
        "idle",
        "enqueued",
        "running",
        "paused",
        "completed",
        "error",
        "cancelled",
    }
    for meth in (
        "start",
        "stop",
        "heuristic_import",
        "import_model",
        "wait_for_installs",
        "wait_for_job",
        "list_jobs",
        "get_job_by_source",
        "get_job_by_id",
        "cancel_job",
        "prune_jobs",
        "register_path",
        "install_path",
        "unregister",
        "delete",
        "unconditionally_delete",
        "download_and_cache",
        "sync_to_config",
        "scan_folder",
    ):
        assert hasattr(install.ModelInstallService, meth), meth
    for name in (
        "ModelInstallJob",
        "InstallStatus",
        "LocalModelSource",
        "URLModelSource",
        "HFModelSource",
        "CivitaiModelSource",
    ):
        assert hasattr(install, name), name
    for name in ("ModelLoadService", "LoadedModel", "ModelCache", "ModelLoaderRegistry", "ModelLoader"):
        assert hasattr(load, name), name
    assert hasattr(storage, "ContentStore") and hasattr(storage, "NormalizedStore")
    for meth in ("load_model_by_key", "load_model_by_attr", "load_model_by_config", "close", "open"):
        assert hasattr(modeldepot.ModelManager, meth), meth
    assert modeldepot.DepotConfig is not None


def test_service_contract_names() -> None:
    pytest.importorskip("torch")
    from modeldepot import services

    names = ("Upscaler", "FaceRestorer", "ClipEmbedder", "ClipInterrogator", "BlipCaptioner")
    names += ("Txt2Img", "Img2Img", "Inpaint", "Depth2Img", "SafetyChecker")
    for name in names:
        cls = getattr(services, name)
        assert issubclass(cls, services.Service) and callable(cls.from_key), name
        if name == "ClipEmbedder":  # the shape: .image(images) and .text(texts)
            assert callable(cls.image) and callable(cls.text) and callable(cls.similarity)
        else:
            assert any("__call__" in vars(b) for b in cls.__mro__[:-1]), name


def test_train_contract_names() -> None:
    pytest.importorskip("torch")
    import inspect

    from modeldepot import train
    from modeldepot.train import predictor

    assert callable(train.CaptionedImageDataset)
    for fn in (train.train_lora, train.train_dreambooth_lora):
        params = inspect.signature(fn).parameters
        assert {"base", "rank", "alpha", "steps", "seed", "output_name"} <= set(params), fn
    assert "data" in inspect.signature(train.train_lora).parameters
    assert {"instance_prompt", "class_prompt", "prior_preservation", "num_class_images"} <= set(
        inspect.signature(train.train_dreambooth_lora).parameters
    )
    # document 001's predictor verbs
    assert callable(predictor.prepare) and callable(predictor.predict)
    assert predictor.train is predictor.train_predictor
