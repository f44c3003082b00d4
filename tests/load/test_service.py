"""ModelLoadService with a private registry of fake loaders: caching, per-key locking, events, errors."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from modeldepot.config import DepotConfig
from modeldepot.errors import LoaderNotFoundError, ModelNotFoundException
from modeldepot.events import EventBus, EventRecorder
from modeldepot.load import (
    BudgetedFakeDevice,
    ModelCache,
    ModelLoader,
    ModelLoaderRegistry,
    ModelLoadError,
    ModelLoadService,
    SubmodelRequiredError,
)
from modeldepot.taxonomy import SubModelType


class Model:
    def __init__(self, path: Path, sub: SubModelType | None) -> None:
        self.path = path
        self.sub = sub


class CountingLoader(ModelLoader):
    calls: list[tuple[Path, SubModelType | None]] = []
    gate: threading.Event | None = None
    entered: threading.Event | None = None

    def _load_model(self, path: Path, variant: Any = None, submodel_type: SubModelType | None = None) -> Any:
        cls = type(self)
        cls.calls.append((path, submodel_type))
        if cls.entered is not None:
            cls.entered.set()
        if cls.gate is not None:
            assert cls.gate.wait(timeout=10)
        if path.name == "broken.bin":
            raise RuntimeError("bad tensor data")
        return Model(path, submodel_type)


@pytest.fixture
def registry() -> ModelLoaderRegistry:
    CountingLoader.calls = []
    CountingLoader.gate = None
    CountingLoader.entered = None
    reg = ModelLoaderRegistry()
    reg.register(base="any", type="vae", format="diffusers")(CountingLoader)
    reg.register(base="any", type="main", format="diffusers")(CountingLoader)
    return reg


@pytest.fixture
def service(depot_config: DepotConfig, registry: ModelLoaderRegistry) -> ModelLoadService:
    cache = ModelCache(ram_budget_bytes=1000, device=BudgetedFakeDevice(1000))
    return ModelLoadService(depot_config, cache=cache, events=EventBus(), registry=registry)


def test_second_load_is_a_cache_hit(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    a = service.load_model(cfg)
    b = service.load_model(cfg)
    assert a.model is b.model and len(CountingLoader.calls) == 1
    assert service.cache.stats().hits == 1


def test_main_model_requires_submodel(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path, type="main", format="diffusers", name="pipe")
    with pytest.raises(SubmodelRequiredError, match=r"'pipe'.*name the submodel"):
        service.load_model(cfg)
    unet = service.load_model(cfg, "unet")
    vae = service.load_model(cfg, SubModelType.VAE)
    assert unet.model is not vae.model and unet.model.sub == SubModelType.UNet
    assert service.load_model(cfg, "unet").model is unet.model


def test_missing_files_raise_model_not_found(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path / "gone", type="vae", format="diffusers", name="lost")
    with pytest.raises(ModelNotFoundException, match="'lost'") as info:
        service.load_model(cfg)
    assert isinstance(info.value, FileNotFoundError) and info.value.path == tmp_path / "gone"


def test_unknown_triple(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path, type="lora", format="lycoris")
    with pytest.raises(LoaderNotFoundError, match="any/main/diffusers"):
        service.load_model(cfg)


def test_foreign_errors_are_translated(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    (tmp_path / "broken.bin").write_bytes(b"x")
    cfg = mkcfg(tmp_path / "broken.bin", type="vae", format="diffusers", name="bad")
    with pytest.raises(ModelLoadError, match=r"'bad'.*bad tensor data"):
        service.load_model(cfg)


def test_events_on_load_not_on_hit(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    assert service.events is not None
    rec = EventRecorder(service.events)
    cfg = mkcfg(tmp_path, type="main", format="diffusers", hash="blake3:abc")
    service.load_model(cfg, "vae")
    service.load_model(cfg, "vae")
    assert rec.names() == ["model_load_started", "model_load_completed"]
    done = rec.events[1].payload
    assert done["key"] == cfg.key and done["submodel"] == "vae" and done["hash"] == "blake3:abc"
    assert done["location"] == str(tmp_path) and done["precision"] == "float32"


def test_two_threads_load_once(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    CountingLoader.gate = threading.Event()
    CountingLoader.entered = threading.Event()
    results: list[Any] = []

    def load() -> None:
        results.append(service.load_model(cfg).model)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    assert CountingLoader.entered.wait(timeout=10)
    CountingLoader.gate.set()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert len(CountingLoader.calls) == 1


def test_changed_record_reloads(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    (tmp_path / "v2").mkdir()
    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    first = service.load_model(cfg).model
    moved = cfg.model_copy(update={"path": str(tmp_path / "v2")})
    second = service.load_model(moved).model
    assert first is not second and second.path == tmp_path / "v2"
    assert len(service.cache) == 1


def test_loaded_model_context_locks(mkcfg: Any, service: ModelLoadService, tmp_path: Path) -> None:
    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    loaded = service.load_model(cfg)
    with loaded as m:
        assert m is loaded.model and loaded.locked
        with loaded:
            assert service.cache.stats().locked == 1
        assert loaded.locked
    assert not loaded.locked


def test_settings_budgets(home: Path) -> None:
    cfg = DepotConfig(home=home, ram_cache_gb=1.5, vram_cache_gb=0.5, device="cpu")
    svc = ModelLoadService(cfg)
    assert svc.cache.budget.ram_bytes == int(1.5 * 1024**3)
    assert svc.cache.budget.vram_bytes == 0  # CPU: no device tier
    assert svc.convert_cache.root == home / "convert_cache"
