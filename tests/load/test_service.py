"""ModelLoadService: caching, per-key locking, events and errors (a private registry of fake
loaders), then seed 002's load API (lines 1303-1440: get_model_by_key, LoadedModel's config,
location and precision, the invocation ``context``) and models that are not registered."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modeldepot.config import DepotConfig
from modeldepot.configs import ModelConfigBase
from modeldepot.errors import (
    ConfigurationError,
    LoaderNotFoundError,
    ModelDepotError,
    ModelNotFoundException,
    UnknownModelException,
    UnsafePickleError,
)
from modeldepot.events import EventBus, EventRecorder
from modeldepot.load import (
    BudgetedFakeDevice,
    LoadedModel,
    ModelCache,
    ModelLoader,
    ModelLoaderRegistry,
    ModelLoadError,
    ModelLoadService,
    SubmodelRequiredError,
)
from modeldepot.load.convert_cache import ConvertCache
from modeldepot.records import ModelRecordServiceBase
from modeldepot.taxonomy import ModelType, SubModelType
from modeldepot.testing import factories


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


# Seed 002's load API on real (tiny) models ------------------------------------------------------


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


DOC_KEYS = {
    "queue_id",
    "queue_item_id",
    "queue_batch_id",
    "graph_execution_state_id",
    "model_key",
    "submodel_type",
    "hash",
    "location",
    "precision",
}


@pytest.fixture
def store(home: Path) -> ModelRecordServiceBase:
    return ModelRecordServiceBase.from_db_file(home / "records.db")


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def svc(depot_config: DepotConfig, store: ModelRecordServiceBase, bus: EventBus) -> ModelLoadService:
    return ModelLoadService(depot_config, cache=ModelCache(ram_budget_bytes=1 << 30), events=bus, record_store=store)


@pytest.fixture
def lora_record(tmp_path: Path, store: ModelRecordServiceBase, mkcfg: Any) -> ModelConfigBase:
    path = factories.write_lora(tmp_path / "detail-tweaker.safetensors")
    return store.add_model(mkcfg(path, type="lora", format="lycoris", hash="blake3:abc"))


def test_get_model_by_key_returns_the_documented_loaded_model(
    svc: ModelLoadService, lora_record: ModelConfigBase, torch: Any
) -> None:
    loaded = svc.get_model_by_key(lora_record.key)
    assert isinstance(loaded, LoadedModel)
    assert loaded.config == lora_record  # "a copy of the model's configuration record"
    assert loaded.location == lora_record.path  # where it was loaded from
    assert loaded.precision == "float32"  # auto on a CPU
    weights = {k: t for k, t in loaded.model.items() if not k.endswith(".alpha")}  # alphas stay exact
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert loaded.device == "cpu"
    with loaded as state_dict:
        assert state_dict is loaded.model
    with loaded.model_on_device() as (cpu_weights, model):
        assert model is loaded.model and set(cpu_weights) <= set(model)
    assert svc.get_model_by_key(lora_record.key).model is loaded.model  # the cache


def test_precision_is_the_dtype_the_weights_were_loaded_in(
    home: Path, store: ModelRecordServiceBase, lora_record: ModelConfigBase, torch: Any
) -> None:
    svc = ModelLoadService(DepotConfig(home=home, precision="bfloat16"), record_store=store)
    loaded = svc.get_model_by_key(lora_record.key)
    assert loaded.precision == "bfloat16"
    assert loaded.model[next(k for k in loaded.model if k.endswith(".weight"))].dtype == torch.bfloat16


def test_get_model_by_key_errors(
    svc: ModelLoadService, store: ModelRecordServiceBase, tmp_path: Path, mkcfg: Any, depot_config: DepotConfig
) -> None:
    with pytest.raises(UnknownModelException):
        svc.get_model_by_key("f13dd932c0c35c22dcb8d6cda4203764", SubModelType("vae"))
    gone = factories.write_lora(tmp_path / "gone.safetensors")
    key = store.add_model(mkcfg(gone, type="lora", format="lycoris")).key
    gone.unlink()
    with pytest.raises(ModelNotFoundException, match=r"gone\.safetensors"):
        svc.get_model_by_key(key)
    bare = ModelLoadService(depot_config, registry=ModelLoaderRegistry(), record_store=store)
    other = store.add_model(mkcfg(factories.write_lora(tmp_path / "x.safetensors"), type="lora", format="lycoris"))
    with pytest.raises(LoaderNotFoundError, match="no loader for base=sd-1, type=lora"):
        bare.get_model_by_key(other.key)
    with pytest.raises(ConfigurationError, match="record store"):
        ModelLoadService(depot_config).get_model_by_key(other.key)


def test_invokeai_constructor_keywords(
    home: Path, store: ModelRecordServiceBase, lora_record: ModelConfigBase, torch: Any
) -> None:
    config = DepotConfig(home=home)
    loader = ModelLoadService(
        app_config=config,
        ram_cache=ModelCache(ram_budget_bytes=1 << 30),
        convert_cache=ConvertCache(home / "convert", 1 << 30),
        registry=ModelLoaderRegistry,  # the class, as in the seed's example
        record_store=store,
    )
    assert loader.app_config is config
    assert isinstance(loader.load_model(lora_record).model, dict)


# The invocation context ------------------------------------------------------------------------


def _invocation_context(bus: EventBus) -> SimpleNamespace:
    """The parts of InvokeAI's InvocationContext that seed 002's load events read."""
    return SimpleNamespace(
        queue_id="default",
        queue_item_id=7,
        queue_batch_id="batch-1",
        graph_execution_state_id="session-9",
        services=SimpleNamespace(events=bus),
    )


def test_context_bus_gets_load_events_with_the_documented_payload(
    service: ModelLoadService, store: ModelRecordServiceBase, mkcfg: Any, tmp_path: Path
) -> None:
    assert service.events is not None
    service.record_store = store
    cfg = store.add_model(mkcfg(tmp_path, type="main", format="diffusers", hash="blake3:abc"))
    own = EventRecorder(service.events)
    invocation_bus = EventBus()
    theirs = EventRecorder(invocation_bus)
    context = _invocation_context(invocation_bus)
    loaded = service.load_model(cfg, SubModelType("vae"), context)  # the third positional argument
    assert theirs.names() == ["model_load_started", "model_load_completed"]
    for event in theirs.events:
        p = event.payload
        assert set(p) >= DOC_KEYS
        assert (p["queue_id"], p["queue_item_id"], p["queue_batch_id"], p["graph_execution_state_id"]) == (
            "default",
            7,
            "batch-1",
            "session-9",
        )
        assert p["model_key"] == cfg.key and p["submodel_type"] == "vae"
        assert p["hash"] == "blake3:abc" and p["location"] == str(tmp_path) == loaded.location
        assert p["precision"] == loaded.precision == "float32"
    # The service's own bus saw the load from disk too, tagged with the same ids.
    assert own.names() == ["model_load_started", "model_load_completed"]
    assert own.events[0].payload["graph_execution_state_id"] == "session-9"

    # A cache hit: reported to the invocation (it asked), not again to the service's bus.
    again = service.get_model_by_key(cfg.key, "vae", context)
    assert again.model is loaded.model and len(CountingLoader.calls) == 1
    assert theirs.names()[2:] == ["model_load_started", "model_load_completed"]
    assert theirs.events[3].payload["queue_item_id"] == 7
    assert len(own.events) == 2


def test_invokeai4_context_and_event_service_methods(service: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    started: list[dict[str, Any]] = []

    class InvokeAIEvents:
        """An event service with InvokeAI's method names and its own keyword set."""

        def emit_model_load_started(self, queue_id: str, queue_item_id: int, model_key: str, submodel: Any) -> None:
            started.append({"queue_id": queue_id, "queue_item_id": queue_item_id, "model_key": model_key})

    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    item = SimpleNamespace(queue_id="q", item_id=3, batch_id="b", session_id="s")
    context = SimpleNamespace(_data=SimpleNamespace(queue_item=item), services=SimpleNamespace(events=InvokeAIEvents()))
    service.load_model(cfg, context=context)
    assert started == [{"queue_id": "q", "queue_item_id": 3, "model_key": cfg.key}]


def test_a_context_without_a_bus_or_ids_is_ignored(service: ModelLoadService, mkcfg: Any, tmp_path: Path) -> None:
    assert service.events is not None
    own = EventRecorder(service.events)
    cfg = mkcfg(tmp_path, type="vae", format="diffusers")
    assert service.load_model(cfg, None, object()).model.path == tmp_path
    assert own.events[0].payload["queue_id"] is None


# Models that are not registered ----------------------------------------------------------------


def test_load_local_model_identifies_and_caches_by_path(
    svc: ModelLoadService, store: ModelRecordServiceBase, tmp_path: Path, torch: Any
) -> None:
    path = factories.write_lora(tmp_path / "style.safetensors", seed=1)
    loaded = svc.load_local_model(path)
    assert loaded.config.type == ModelType.LoRA and loaded.config.key.startswith("local-")
    assert loaded.location == str(path) and loaded.precision == "float32"
    assert store.all_models() == []  # never registered
    hits = svc.cache.stats().hits
    assert svc.load_local_model(str(path)).model is loaded.model
    assert svc.cache.stats().hits == hits + 1
    # The file changed: read again.
    before = {k: v.clone() for k, v in loaded.model.items()}
    factories.write_lora(path, seed=2)
    changed = svc.load_local_model(path)
    assert changed.model is not loaded.model
    assert any(not torch.equal(before[k], changed.model[k]) for k in before)


def test_load_local_model_with_a_loader(svc: ModelLoadService, tmp_path: Path, torch: Any) -> None:
    path = tmp_path / "custom.bin"
    path.write_bytes(b"\x00" * 64)  # nothing we can identify
    calls: list[Path] = []

    def my_loader(p: Path) -> dict[str, Any]:
        calls.append(p)
        return {"weights": torch.zeros(2, dtype=torch.float16)}

    loaded = svc.load_local_model(path, my_loader)
    assert calls == [path] and loaded.config.type == ModelType.Unknown
    assert loaded.precision == "float16"
    assert svc.load_local_model(path, my_loader).model is loaded.model and len(calls) == 1
    other = svc.load_local_model(path, lambda p: "another loader")  # another loader reads again
    assert other.model == "another loader"
    with pytest.raises(ModelDepotError, match="not a model file"):
        svc.load_local_model(path)  # without a loader, an unidentifiable file is an error


def test_load_local_model_defaults_to_the_state_dict(svc: ModelLoadService, tmp_path: Path, torch: Any) -> None:
    path = factories.write_safetensors(tmp_path / "mystery.safetensors", {"block.weight": (2, 3)})
    loaded = svc.load_local_model(path)
    assert loaded.config.type == ModelType.Unknown
    assert set(loaded.model) == {"block.weight"} and loaded.model["block.weight"].shape == (2, 3)


def test_load_local_model_errors(svc: ModelLoadService, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundException, match="no model file or folder"):
        svc.load_local_model(tmp_path / "missing.safetensors")
    evil = factories.write_malicious_pickle(tmp_path / "evil.ckpt")
    with pytest.raises(UnsafePickleError):
        svc.load_local_model(evil)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    with pytest.raises(ModelDepotError):
        svc.load_local_model(folder)
    assert svc.load_local_model(folder, lambda p: sorted(x.name for x in p.iterdir())).model == ["a.txt"]
