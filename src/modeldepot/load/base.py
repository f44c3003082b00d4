"""``ModelLoadService``: from a record to a model in the cache; ``LoadedModel``: lock it while in use.

A hit costs a dict lookup: no stat call, no pydantic work, no event. A miss takes a per-key lock
(two threads asking for the same model load it once; different models load in parallel), checks the
files, picks the loader, builds the model on the CPU and admits it to the cache, emitting
``model_load_started`` / ``model_load_completed``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldepot.errors import ModelDepotError
from modeldepot.load._errors import (
    InvalidSubmodelError,
    ModelLoadError,
    SubmodelRequiredError,
    TorchNotInstalledError,
)
from modeldepot.load.cache import CacheRecord, ModelCache
from modeldepot.load.convert_cache import DEFAULT_MAX_BYTES, ConvertCache
from modeldepot.load.devices import ExecutionDevice, TorchDevice
from modeldepot.load.registry import ModelLoaderRegistry
from modeldepot.taxonomy import ModelType, SubModelType

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase
    from modeldepot.events import EventBus

log = logging.getLogger(__name__)
#: Serialises model construction across every load service of the process (see _load_from_disk).
MODEL_BUILD_LOCK = threading.RLock()
GiB = 1024**3


class LoadedModel:
    """A cached model. ``with loaded as m:`` puts it on the execution device and pins it there.

    Locks are counted, so nested ``with`` blocks and several threads can use one model; it can be
    offloaded or evicted only after the last one exits.
    """

    __slots__ = ("_cache", "_record", "config", "submodel_type")

    def __init__(
        self, config: ModelConfigBase, record: CacheRecord, cache: ModelCache, submodel_type: SubModelType | None
    ) -> None:
        self.config = config
        self._record = record
        self._cache = cache
        self.submodel_type = submodel_type

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
        config: settings (``ram_cache_gb``, ``vram_cache_gb``, ``device``, ``precision``, ``home``).
        cache: a shared cache; default one sized from settings and the machine.
        events: where ``model_load_started`` / ``model_load_completed`` go.
        registry: loader registry; default the process-wide one with the built-in loaders.
        device: execution device; default from ``config.device`` (CUDA when present on ``auto``).
    """

    def __init__(
        self,
        config: DepotConfig,
        cache: ModelCache | None = None,
        events: EventBus | None = None,
        registry: ModelLoaderRegistry | None = None,
        *,
        device: ExecutionDevice | None = None,
        convert_cache: ConvertCache | None = None,
        convert_cache_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.app_config = config
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
        self._registry = registry
        self.convert_cache = convert_cache or ConvertCache(config.home / "convert_cache", convert_cache_max_bytes)
        self._precision: str | None = None
        self._locks: dict[tuple[str, str | None], tuple[threading.Lock, int]] = {}
        self._locks_guard = threading.Lock()

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
        self, config: ModelConfigBase, submodel_type: SubModelType | str | None = None, *, partial: bool = False
    ) -> LoadedModel:
        """The model (or one part of a pipeline) for ``config``, from the cache or from disk.

        Loads are exact: a file that lacks weights of the model, holds tensors the model has no place
        for, or has other shapes raises :class:`ModelLoadError` naming the first keys. ``partial=True``
        is the explicit opt-out for missing and extra keys (missing weights keep their random
        initialisation, a warning is logged; shape mismatches still raise). Partial loads are cached
        apart from exact ones.

        Raises:
            SubmodelRequiredError: a main model without ``submodel_type``.
            InvalidSubmodelError: ``submodel_type`` is not a submodel name at all.
            ModelNotFoundException: the model's files are missing.
            LoaderNotFoundError: no loader for its (base, type, format).
            ModelLoadError: the files exist but the model could not be built exactly from them.
        """
        submodel_type = parse_submodel(submodel_type, config)
        key = config.key
        sub = submodel_type.value if submodel_type is not None else None
        if partial:
            sub = f"{sub or ''}+partial"
        fp = (config.path, config.hash)
        rec = self.cache.get(key, sub, fp)
        if rec is not None:
            return LoadedModel(config, rec, self.cache, submodel_type)
        if submodel_type is None and config.type == ModelType.Main:
            raise SubmodelRequiredError(
                f"model {config.name!r} ({key}) is a pipeline: name the submodel to load"
                " (unet, transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, ...)",
                key=key,
            )
        with self._key_lock((key, sub)):
            rec = self.cache.peek(key, sub)
            if rec is None or rec.fingerprint != fp:
                rec = self._load_from_disk(config, submodel_type, fp, partial=partial)
        return LoadedModel(config, rec, self.cache, submodel_type)

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
        fp: tuple[str, str | None],
        *,
        partial: bool = False,
    ) -> CacheRecord:
        loader_cls, _ = self.registry.get_implementation(config)
        try:
            precision = self.precision
        except ImportError as exc:
            raise TorchNotInstalledError(
                "loading models needs the torch extra: pip install 'modeldepot[torch]'"
            ) from exc
        payload = {
            "key": config.key,
            "model_name": config.name,
            "submodel": submodel_type.value if submodel_type else None,
            "hash": config.hash,
            "location": str(config.path),
            "precision": precision,
        }
        self._emit("model_load_started", payload)
        start = time.perf_counter()
        loader = loader_cls(self.app_config, self.convert_cache, self.device, precision)
        try:
            # Building on the meta device (ours and diffusers' single-file path) patches torch's
            # parameter registration process-wide: two constructions at once could restore each
            # other's patch. Loads of different models therefore build one at a time.
            with MODEL_BUILD_LOCK:
                model = loader.load_model(config, submodel_type, partial=partial)
        except ModelDepotError:
            raise
        except ImportError as exc:
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
        for sib_type, sib in ({} if partial else loader.siblings).items():
            if sib_type != submodel_type and self.cache.peek(config.key, sib_type.value) is None:
                self.cache.put(config.key, sib, submodel=sib_type.value, fingerprint=fp)
        rec = self.cache.put(config.key, model, submodel=sub, fingerprint=fp)
        elapsed = time.perf_counter() - start
        self._emit(
            "model_load_completed",
            {**payload, "bytes": rec.size, "seconds": round(elapsed, 4), "class": type(model).__name__},
        )
        log.info("loaded %s%s in %.2fs (%d MiB)", config.name, f":{sub}" if sub else "", elapsed, rec.size >> 20)
        return rec

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.emit(name, **payload)

    def stats(self) -> dict[str, Any]:
        return self.cache.stats().to_dict()

    def path_exists(self, config: ModelConfigBase) -> bool:
        return Path(config.path).exists()


__all__ = ["LoadedModel", "ModelLoadService", "parse_submodel"]
