"""``ModelLoadService``: from a record to a model in the cache; ``LoadedModel``: lock it while in use.

A hit costs a dict lookup: no stat call, no pydantic work, no event. A miss takes a per-key lock
(two threads asking for the same model load it once; different models load in parallel), checks the
files, picks the loader, builds the model on the CPU and admits it to the cache, emitting
``model_load_started`` / ``model_load_completed``.

A caller may pass InvokeAI's invocation ``context`` (seed 002, "Emitting model loading events"):
its queue/session ids tag those events and, when it carries an event bus of its own, every load made
through it (cache hits too) is reported on that bus as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import ConfigurationError, LoaderNotFoundError, ModelDepotError
from modeldepot.load._context import CONTEXT_IDS, ContextEvents, load_event_payload
from modeldepot.load._errors import (
    InvalidSubmodelError,
    ModelLoadError,
    SubmodelRequiredError,
    TorchNotInstalledError,
)
from modeldepot.load._local import local_config, stamp, state_dict
from modeldepot.load.cache import CacheRecord, ModelCache
from modeldepot.load.convert_cache import DEFAULT_MAX_BYTES, ConvertCache
from modeldepot.load.devices import ExecutionDevice, TorchDevice
from modeldepot.load.registry import ModelLoaderRegistry
from modeldepot.taxonomy import ModelType, SubModelType

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase
    from modeldepot.events import EventBus
    from modeldepot.records import ModelRecordServiceBase

log = logging.getLogger(__name__)
#: Serialises model construction across every load service of the process (see _load_from_disk).
MODEL_BUILD_LOCK = threading.RLock()
GiB = 1024**3
#: ``part_of(record, submodel) -> (part id, load recipe) | None``
PartOf = Callable[["ModelConfigBase", str], "tuple[str, str] | None"]
ModelBuilder = Callable[[Path], Any]


class LoadedModel:
    """A cached model. ``with loaded as m:`` puts it on the execution device and pins it there.

    Locks are counted, so nested ``with`` blocks and several threads can use one model; it can be
    offloaded or evicted only after the last one exits.

    ``location`` is where the model was loaded from (its file or folder, as InvokeAI's
    ``ModelInfo.location``); ``device`` is where its weights are now; ``precision`` the dtype name
    they were loaded in.
    """

    __slots__ = ("_cache", "_precision", "_record", "config", "submodel_type")

    def __init__(
        self,
        config: ModelConfigBase,
        record: CacheRecord,
        cache: ModelCache,
        submodel_type: SubModelType | None,
        *,
        precision: str | None = None,
    ) -> None:
        self.config = config
        self._record = record
        self._cache = cache
        self.submodel_type = submodel_type
        self._precision = precision

    @property
    def model(self) -> Any:
        return self._record.model

    @property
    def size(self) -> int:
        """Bytes of parameters and buffers (0 for tokenizers and schedulers)."""
        return self._record.size

    @property
    def locked(self) -> bool:
        return self._record.locked

    @property
    def location(self) -> str:
        """The model's file or folder on disk (the record's ``path``)."""
        return str(self.config.path)

    @property
    def device(self) -> str:
        """Where the weights are now: the execution device (``cuda:0``) while resident there, else ``cpu``."""
        return self._cache.device.name if self._record.on_device else "cpu"

    @property
    def precision(self) -> str | None:
        """The dtype name the weights were loaded in (``float16``, ``bfloat16``, ``float32``): the model's
        own floating dtype, else the one its loader was given (tokenizers, schedulers)."""
        return _dtype_name(self._record.model) or self._precision

    def evict(self) -> bool:
        """Drop this model from the cache now (RAM and VRAM); False while someone is using it."""
        return self._cache.drop(*self._record.key)

    def __enter__(self) -> Any:
        return self._cache.lock(self._record)

    def __exit__(self, *exc: object) -> None:
        self._cache.unlock(self._record)

    @contextmanager
    def model_on_device(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """Lock on the device and yield ``(cpu_state_dict, model)``: patch the model freely, and
        restore weights from the RAM copy (never modified) instead of backing them up."""
        model = self._cache.lock(self._record)
        try:
            yield self._cache.cpu_state_dict(self._record), model
        finally:
            self._cache.unlock(self._record)

    def __repr__(self) -> str:
        sub = f":{self.submodel_type.value}" if self.submodel_type else ""
        return f"LoadedModel({self.config.key}{sub}, {type(self.model).__name__}, {self.size} bytes)"


def _dtype_name(model: Any) -> str | None:
    """``float16`` for a model whose weights are torch.float16 (a state dict: its largest floating
    tensor decides, not a scalar kept exact like a LoRA alpha); None if it has no torch weights."""
    dtype = getattr(model, "dtype", None)
    if dtype is None and isinstance(model, dict):
        floats = [
            t for t in model.values() if callable(getattr(t, "is_floating_point", None)) and t.is_floating_point()
        ]
        dtype = max(floats, key=lambda t: t.numel()).dtype if floats else None
    elif dtype is None and callable(getattr(model, "parameters", None)):
        try:
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        except (TypeError, AttributeError):
            dtype = None
    text = str(dtype) if dtype is not None else ""
    return text.removeprefix("torch.") if text.startswith("torch.") else None


def _pipeline_parts(config: ModelConfigBase) -> list[str] | None:
    """The submodels a main model has, from its ``model_index.json`` (or its family's shipped one)."""
    import json
    from importlib import resources

    if config.type != ModelType.Main:
        return None
    custom = getattr(config, "config_path", None)
    candidates = [Path(config.path), *([Path(custom)] if custom else [])]
    candidates.append(Path(str(resources.files("modeldepot.load") / "configs" / config.base.value)))
    index_path = next((c / "model_index.json" for c in candidates if (c / "model_index.json").is_file()), None)
    if index_path is None:
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    return sorted(k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0] is not None)


def parse_submodel(submodel: SubModelType | str | None, config: ModelConfigBase | None = None) -> SubModelType | None:
    """``submodel`` as a :class:`SubModelType`; a name that is none raises :class:`InvalidSubmodelError`
    listing the valid ones."""
    if submodel is None or isinstance(submodel, SubModelType):
        return submodel
    try:
        return SubModelType(submodel)
    except ValueError:
        parts = _pipeline_parts(config) if config is not None else None
        valid = ", ".join(parts or [s.value for s in SubModelType])
        whose = f" of model {config.name!r}" if config is not None else ""
        raise InvalidSubmodelError(
            f"{submodel!r} is not a submodel{whose}; submodels are: {valid}",
            key=config.key if config is not None else None,
            submodel=str(submodel),
        ) from None


class ModelLoadService:
    """Loads models through the registry into the cache.

    Args:
        config: settings (``ram_cache_gb``, ``vram_cache_gb``, ``device``, ``precision``, ``home``);
            default ``DepotConfig.load()``. Also accepted as InvokeAI's ``app_config``.
        cache: a shared cache (or InvokeAI's ``ram_cache``); default one sized from the settings.
        events: where ``model_load_started`` / ``model_load_completed`` go.
        registry: loader registry; default the process-wide one with the built-in loaders (also
            when given the class itself, as in ``registry=ModelLoaderRegistry``).
        record_store: where :meth:`get_model_by_key` looks keys up.
        device: execution device; default from ``config.device`` (CUDA when present on ``auto``).
    """

    def __init__(
        self,
        config: DepotConfig | None = None,
        cache: ModelCache | None = None,
        events: EventBus | None = None,
        registry: ModelLoaderRegistry | type[ModelLoaderRegistry] | None = None,
        *,
        app_config: DepotConfig | None = None,
        ram_cache: ModelCache | None = None,
        record_store: ModelRecordServiceBase | None = None,
        part_of: PartOf | None = None,
        before_load: Callable[[ModelConfigBase], None] | None = None,
        device: ExecutionDevice | None = None,
        convert_cache: ConvertCache | None = None,
        convert_cache_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        config = config if config is not None else app_config
        if config is None:
            from modeldepot.config import DepotConfig

            config = DepotConfig.load()
        self.app_config = config
        cache = cache if cache is not None else ram_cache
        if cache is None:
            device = device if device is not None else TorchDevice.from_setting(config.device)
            cache = ModelCache(
                ram_budget_bytes=None if config.ram_cache_gb is None else int(config.ram_cache_gb * GiB),
                vram_budget_bytes=None if config.vram_cache_gb is None else int(config.vram_cache_gb * GiB),
                device=device,
            )
        self.cache = cache
        self.device = cache.device
        self.events = events
        self.record_store = record_store
        #: Which shared part a submodel is (``NormalizedStore.part_identity``): models whose
        #: submodel is the same part, loaded the same way, share one cache entry (one copy in RAM).
        self.part_of = part_of
        #: Called with the record before each load (a fleet worker pulls a model it lacks).
        self.before_load = before_load
        self._part_memo: dict[tuple[str, str | None, str], tuple[str, str] | None] = {}
        self._registry = registry if isinstance(registry, ModelLoaderRegistry) else None
        self.convert_cache = convert_cache or ConvertCache(config.home / "convert_cache", convert_cache_max_bytes)
        self._precision: str | None = None
        self._locks: dict[tuple[str, str | None], tuple[threading.Lock, int]] = {}
        self._locks_guard = threading.Lock()
        self._local_configs: dict[tuple[str, bool], tuple[tuple[int, int], ModelConfigBase]] = {}

    @property
    def registry(self) -> ModelLoaderRegistry:
        if self._registry is None:
            # Importing the loaders package registers the built-in loaders (no torch import).
            import modeldepot.load.loaders  # noqa: F401

            self._registry = ModelLoaderRegistry.default()
        return self._registry

    @property
    def precision(self) -> str:
        """The dtype models load in, from ``config.precision`` and the device (see devices.py)."""
        if self._precision is None:
            self._precision = self.device.resolve_precision(self.app_config.precision)
        return self._precision

    def load_model(
        self,
        config: ModelConfigBase,
        submodel_type: SubModelType | str | None = None,
        context: Any = None,
        *,
        partial: bool = False,
    ) -> LoadedModel:
        """The model (or one part of a pipeline) for ``config``, from the cache or from disk.

        Loads are exact: a file that lacks weights of the model, holds tensors the model has no place
        for, or has other shapes raises :class:`ModelLoadError` naming the first keys. ``partial=True``
        is the explicit opt-out for missing and extra keys (missing weights keep their random
        initialisation, a warning is logged; shape mismatches still raise). Partial loads are cached
        apart from exact ones.

        ``context`` is InvokeAI's invocation context, optional and duck-typed (any object): its
        ``queue_id``, ``queue_item_id``, ``queue_batch_id`` and ``graph_execution_state_id`` (or
        InvokeAI 4's ``queue_item`` ids) are added to the load events, and its event bus
        (``context.events`` or ``context.services.events``) receives ``model_load_started`` /
        ``model_load_completed`` for every call, cache hits included. What it lacks is ignored.

        Raises:
            SubmodelRequiredError: a main model without ``submodel_type``.
            InvalidSubmodelError: ``submodel_type`` is not a submodel name at all.
            ModelNotFoundException: the model's files are missing.
            LoaderNotFoundError: no loader for its (base, type, format).
            ModelLoadError: the files exist but the model could not be built exactly from them.
        """
        if self.before_load is not None:
            self.before_load(config)
        return self._load(config, submodel_type, context, (config.path, config.hash), partial=partial)

    def submodels(self, config: ModelConfigBase) -> list[str] | None:
        """The submodel names a main model has (from its ``model_index.json`` or its base's shipped
        one); None for models that are not pipelines."""
        return _pipeline_parts(config)

    def get_model_by_key(
        self,
        key: str,
        submodel_type: SubModelType | str | None = None,
        context: Any = None,
        *,
        partial: bool = False,
    ) -> LoadedModel:
        """The model registered under ``key`` (one part of it for a pipeline); see :meth:`load_model`.

        Raises:
            UnknownModelException: no record with that key.
            ModelNotFoundException: the record's files are missing.
            LoaderNotFoundError: no loader for its type (InvokeAI's ``NotImplementedException``).
            ConfigurationError: this service was built without a ``record_store``.
        """
        if self.record_store is None:
            raise ConfigurationError(
                "this ModelLoadService has no record store to look keys up in: build it with record_store=..."
                " (ModelManager.load has one)"
            )
        return self.load_model(self.record_store.get_model(key), submodel_type, context, partial=partial)

    def load_local_model(
        self,
        model_path: str | Path,
        loader: ModelBuilder | None = None,
        *,
        submodel_type: SubModelType | str | None = None,
        context: Any = None,
    ) -> LoadedModel:
        """Load a model file or folder that is not registered, through the cache.

        Identified as an install would (headers only) and built by the registry's loader; a file
        no loader handles comes back as its state dict (InvokeAI's default). ``loader(path) -> model``
        replaces both. ``LoadedModel.config`` is an unregistered record (key ``local-<path digest>``,
        type ``unknown`` when a custom loader got a file we cannot identify). Cached by resolved
        path; files whose size or mtime changed, or another ``loader`` object, mean a new load.

        Raises:
            ModelNotFoundException: nothing at ``model_path``.
            UnsafePickleError / IdentificationError: a file that cannot be read safely (no ``loader``).
            LoaderNotFoundError: a folder no loader handles (no ``loader``).
            SubmodelRequiredError: a pipeline without ``submodel_type`` (no ``loader``).
        """
        path = Path(model_path).expanduser().resolve()
        stamp_ = stamp(path)
        config = self._local_config(path, stamp_, tolerant=loader is not None)
        build = loader
        if build is None and not self._has_loader(config):
            if path.is_dir():
                raise LoaderNotFoundError(
                    f"no loader for the folder {path} (identified as {config.type.value}/{config.format.value});"
                    " pass loader=<callable(path) -> model>"
                )
            build = state_dict
        # The loader object is part of the fingerprint (kept alive by the cache entry, so its id
        # cannot be reused by another function): another loader for the same path reloads.
        fingerprint = (str(path), *stamp_, loader)
        return self._load(config, submodel_type, context, fingerprint, build=build)

    #: InvokeAI 4's name for :meth:`load_local_model`.
    load_model_from_path = load_local_model

    def _local_config(self, path: Path, stamp_: tuple[int, int], *, tolerant: bool) -> ModelConfigBase:
        key = (str(path), tolerant)
        with self._locks_guard:
            known = self._local_configs.get(key)
        if known is not None and known[0] == stamp_:
            return known[1]
        config = local_config(path, tolerant=tolerant)
        with self._locks_guard:
            self._local_configs[key] = (stamp_, config)
        return config

    def _has_loader(self, config: ModelConfigBase) -> bool:
        try:
            self.registry.get_implementation(config)
        except LoaderNotFoundError:
            return False
        return True

    def _load(
        self,
        config: ModelConfigBase,
        submodel_type: SubModelType | str | None,
        context: Any,
        fp: tuple[Any, ...],
        *,
        partial: bool = False,
        build: ModelBuilder | None = None,
    ) -> LoadedModel:
        submodel_type = parse_submodel(submodel_type, config)
        key = config.key
        sub = submodel_type.value if submodel_type is not None else None
        if partial:
            sub = f"{sub or ''}+partial"
        sink = ContextEvents(context, self.events) if context is not None else None
        shared = self._shared_part(config, sub) if not partial and build is None and sub is not None else None
        if shared is not None:
            key, fp = f"part:{shared[0]}:{shared[1][:16]}", ("part", *shared)
        rec = self.cache.get(key, sub, fp)
        if rec is None:
            if submodel_type is None and config.type == ModelType.Main and build is None:
                self.registry.get_implementation(config)  # no loader at all (ONNX) says so first
                raise SubmodelRequiredError(
                    f"model {config.name!r} ({key}) is a pipeline: name the submodel to load"
                    " (unet, transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, ...)",
                    key=key,
                )
            with self._key_lock((key, sub)):
                rec = self.cache.peek(key, sub)
                if rec is None or rec.fingerprint != fp:
                    rec = self._load_from_disk(
                        config, submodel_type, fp, partial=partial, sink=sink, build=build, cache_as=key
                    )
                    sink = None  # the context's bus has seen this load's events
        loaded = LoadedModel(config, rec, self.cache, submodel_type, precision=self._precision)
        if sink is not None and sink.bus is not None:
            payload = load_event_payload(config, submodel_type, loaded.precision, sink.ids)
            sink.emit("model_load_started", payload)
            sink.emit("model_load_completed", {**payload, "bytes": rec.size, "seconds": 0.0, "cached": True})
        return loaded

    def _shared_part(self, config: ModelConfigBase, sub: str) -> tuple[str, str] | None:
        """(part id, load recipe) of ``config``'s submodel ``sub``, memoised per content hash."""
        if self.part_of is None:
            return None
        memo = (config.key, config.hash, sub)
        if memo not in self._part_memo:
            try:
                self._part_memo[memo] = self.part_of(config, sub)
            except ModelDepotError as exc:  # no part rows to go by: load it as its own
                log.debug("no shared part for %s:%s: %s", config.key, sub, exc)
                self._part_memo[memo] = None
        return self._part_memo[memo]

    @contextmanager
    def _key_lock(self, ck: tuple[str, str | None]) -> Iterator[None]:
        with self._locks_guard:
            lock, users = self._locks.get(ck, (threading.Lock(), 0))
            self._locks[ck] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:
                lock, users = self._locks[ck]
                if users <= 1:
                    del self._locks[ck]
                else:
                    self._locks[ck] = (lock, users - 1)

    def _load_from_disk(
        self,
        config: ModelConfigBase,
        submodel_type: SubModelType | None,
        fp: tuple[Any, ...],
        *,
        partial: bool = False,
        sink: ContextEvents | None = None,
        build: ModelBuilder | None = None,
        cache_as: str | None = None,
    ) -> CacheRecord:
        loader_cls = self.registry.get_implementation(config)[0] if build is None else None
        try:
            precision: str | None = self.precision
        except ImportError as exc:
            if loader_cls is not None:
                raise TorchNotInstalledError(
                    "loading models needs the torch extra: pip install 'modeldepot[torch]'"
                ) from exc
            precision = None  # a caller's own loader may not need torch at all
        payload = load_event_payload(config, submodel_type, precision, sink.ids if sink is not None else None)
        self._emit("model_load_started", payload, sink)
        start = time.perf_counter()
        siblings: dict[SubModelType, Any] = {}
        try:
            # Building on the meta device (ours and diffusers' single-file path) patches torch's
            # parameter registration process-wide: two constructions at once could restore each
            # other's patch. Loads of different models therefore build one at a time.
            with MODEL_BUILD_LOCK:
                if loader_cls is None:
                    assert build is not None
                    model = build(Path(config.path))
                else:
                    loader = loader_cls(self.app_config, self.convert_cache, self.device, precision or "float32")
                    model = loader.load_model(config, submodel_type, partial=partial)
                    siblings = loader.siblings
        except ModelDepotError:
            raise
        except ImportError as exc:
            if loader_cls is None:
                raise ModelLoadError(
                    f"the loader given for {config.path} failed: ImportError: {exc}", key=config.key, path=config.path
                ) from exc
            raise TorchNotInstalledError(
                f"loading {config.name!r} needs the torch extra: pip install 'modeldepot[torch]' ({exc})"
            ) from exc
        except Exception as exc:
            # The one boundary where foreign errors become ours: diffusers, transformers and torch
            # raise everything from ValueError to the bare Exception of the tokenizers library.
            raise ModelLoadError(
                f"cannot load model {config.name!r} ({config.key}) from {config.path}: {type(exc).__name__}: {exc}",
                key=config.key,
                path=str(config.path),
            ) from exc
        sub = submodel_type.value if submodel_type else None
        if partial:
            sub = f"{sub or ''}+partial"
        # Siblings of a partial load may be incomplete too: they are not cached as exact loads.
        for sib_type, sib in ({} if partial else siblings).items():
            if sib_type != submodel_type and self.cache.peek(config.key, sib_type.value) is None:
                self.cache.put(config.key, sib, submodel=sib_type.value, fingerprint=fp)
        rec = self.cache.put(cache_as or config.key, model, submodel=sub, fingerprint=fp)
        elapsed = time.perf_counter() - start
        self._emit(
            "model_load_completed",
            {**payload, "bytes": rec.size, "seconds": round(elapsed, 4), "class": type(model).__name__},
            sink,
        )
        log.info("loaded %s%s in %.2fs (%d MiB)", config.name, f":{sub}" if sub else "", elapsed, rec.size >> 20)
        return rec

    def _emit(self, name: str, payload: dict[str, Any], sink: ContextEvents | None = None) -> None:
        if self.events is not None:
            self.events.emit(name, **payload)
        if sink is not None:
            sink.emit(name, payload)

    def stats(self) -> dict[str, Any]:
        return self.cache.stats().to_dict()

    def path_exists(self, config: ModelConfigBase) -> bool:
        return Path(config.path).exists()


__all__ = ["CONTEXT_IDS", "LoadedModel", "ModelLoadService", "parse_submodel"]
