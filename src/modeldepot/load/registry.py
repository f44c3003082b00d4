"""Loader registry: which ``ModelLoader`` class builds a (base, type, format).

Loader classes register themselves with a decorator, several triples per class::

    @ModelLoaderRegistry.register(base=BaseModelType.Any, type=ModelType.VAE, format=ModelFormat.Diffusers)
    class VAELoader(ModelLoader): ...

``BaseModelType.Any`` is a wildcard: an exact base match wins over it. Registering the same triple
twice raises. ``register`` works on the class (the process-wide default registry) and on an
instance (a private registry, for tests and plugins).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from modeldepot.errors import LoaderNotFoundError, ModelNotFoundException
from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType

if TYPE_CHECKING:
    from modeldepot.config import DepotConfig
    from modeldepot.configs import ModelConfigBase
    from modeldepot.load.convert_cache import ConvertCache
    from modeldepot.load.devices import ExecutionDevice

Triple = tuple[BaseModelType, ModelType, ModelFormat]
L = TypeVar("L", bound="type[ModelLoader]")
R = TypeVar("R")


class ModelLoader:
    """Builds one model (or one submodel) from its files, on the CPU, in the configured dtype.

    Subclasses implement :meth:`_load_model`; they may also implement :meth:`_needs_conversion` and
    :meth:`_convert_model` to convert a file once into the size-capped conversion cache (a pickle
    ``.ckpt`` turned into ``.safetensors``), after which :meth:`_load_model` gets the converted path.
    Torch and friends are imported inside the methods, never at module level.
    """

    def __init__(
        self,
        app_config: DepotConfig,
        convert_cache: ConvertCache,
        device: ExecutionDevice,
        precision: str,
    ) -> None:
        self.app_config = app_config
        self.convert_cache = convert_cache
        self.device = device
        #: dtype name ("float16", "bfloat16", "float32") resolved for the device.
        self.precision = precision
        self.config: ModelConfigBase | None = None
        #: Other submodels built as a side effect (a single-file checkpoint yields them all);
        #: the service admits them to the cache so later requests need no second read.
        self.siblings: dict[SubModelType, Any] = {}
        #: Accept a file that lacks weights of the model or has extra ones (see ``load_model``).
        self.partial = False

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.precision)

    # ----- the template method -------------------------------------------------------------
    def load_model(
        self, config: ModelConfigBase, submodel_type: SubModelType | None = None, *, partial: bool = False
    ) -> Any:
        """Build the model of ``config`` (one ``submodel_type`` of a pipeline).

        Loads are exact: weights missing from the files, extra tensors in them, or shapes that differ
        from the model raise :class:`~modeldepot.errors.ModelLoadError` naming the keys. ``partial=True``
        accepts missing and extra keys (missing weights keep their initialisation; shape mismatches
        still raise), for a caller that knows it is loading an incomplete file on purpose.
        """
        self.config = config
        self.partial = partial
        path = Path(config.path)
        if not path.exists():
            raise ModelNotFoundException(f"files of model {config.name!r} ({config.key}) are missing: {path}", path)
        if self._needs_conversion(config, path):
            path = self._converted_path(config, path)
        variant = getattr(config, "repo_variant", None)
        return self._load_model(path, variant, submodel_type)

    def _converted_path(self, config: ModelConfigBase, path: Path) -> Path:
        name = self._conversion_name(config, path)
        hit = self.convert_cache.get(name)
        if hit is not None:
            return hit
        return self.convert_cache.put(name, lambda dest: self._convert_model(config, path, dest))

    def _conversion_name(self, config: ModelConfigBase, path: Path) -> str:
        # Named by content (or file identity), not by record key: two records of one file share it.
        if config.hash:
            identity = config.hash.replace(":", "-")
        else:
            st = path.stat()
            where = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:16]
            identity = f"{where}-{st.st_size}-{st.st_mtime_ns}"
        return f"{identity}{self._conversion_suffix}"

    _conversion_suffix = ".safetensors"

    # ----- hooks ---------------------------------------------------------------------------
    def _load_model(
        self, path: Path, variant: ModelRepoVariant | None = None, submodel_type: SubModelType | None = None
    ) -> Any:
        raise NotImplementedError

    def _needs_conversion(self, config: ModelConfigBase, path: Path) -> bool:
        return False

    def _convert_model(self, config: ModelConfigBase, path: Path, dest: Path) -> None:
        """Write the converted model to ``dest`` (a temp path the cache renames into place)."""
        raise NotImplementedError


class _RegistryMethod(Generic[R]):
    """Bind to the instance, or to the default registry when called on the class."""

    def __init__(self, func: Callable[..., R]) -> None:
        self.func = func

    @overload
    def __get__(self, obj: None, owner: type[ModelLoaderRegistry]) -> Callable[..., R]: ...
    @overload
    def __get__(self, obj: ModelLoaderRegistry, owner: type[ModelLoaderRegistry]) -> Callable[..., R]: ...

    def __get__(self, obj: ModelLoaderRegistry | None, owner: type[ModelLoaderRegistry]) -> Callable[..., R]:
        target = obj if obj is not None else owner.default()
        func = self.func

        def bound(*args: Any, **kwargs: Any) -> R:
            return func(target, *args, **kwargs)

        bound.__doc__ = func.__doc__
        return bound


class ModelLoaderRegistry:
    """Maps (base, type, format) to loader classes."""

    _default: ModelLoaderRegistry | None = None
    _default_lock = threading.Lock()

    def __init__(self) -> None:
        self._loaders: dict[Triple, type[ModelLoader]] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> ModelLoaderRegistry:
        """The process-wide registry the built-in loaders register into."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def _register(
        self, *, base: BaseModelType | str, type: ModelType | str, format: ModelFormat | str
    ) -> Callable[[L], L]:
        triple = (BaseModelType(base), ModelType(type), ModelFormat(format))

        def decorator(cls: L) -> L:
            with self._lock:
                existing = self._loaders.get(triple)
                if existing is not None:
                    raise ValueError(
                        f"a loader for base={triple[0].value}, type={triple[1].value}, format={triple[2].value}"
                        f" is already registered: {existing.__module__}.{existing.__qualname__}"
                    )
                self._loaders[triple] = cls
            return cls

        return decorator

    register = _RegistryMethod(_register)

    def _get_implementation(self, config: ModelConfigBase) -> tuple[type[ModelLoader], Triple]:
        """The loader class for ``config``: exact base first, then the ``any`` wildcard."""
        exact = (config.base, config.type, config.format)
        with self._lock:
            cls = self._loaders.get(exact)
            if cls is not None:
                return cls, exact
            wild = (BaseModelType.Any, config.type, config.format)
            cls = self._loaders.get(wild)
            if cls is not None:
                return cls, wild
            known = ", ".join(f"{b.value}/{t.value}/{f.value}" for b, t, f in sorted(self._loaders))
        raise LoaderNotFoundError(
            f"no loader for base={config.base.value}, type={config.type.value}, format={config.format.value}"
            f" (model {config.name!r}); registered (base/type/format): {known or 'none'}"
        )

    get_implementation = _RegistryMethod(_get_implementation)

    def _registered(self) -> list[Triple]:
        with self._lock:
            return sorted(self._loaders)

    registered = _RegistryMethod(_registered)

    def _unregister(self, *, base: BaseModelType | str, type: ModelType | str, format: ModelFormat | str) -> None:
        with self._lock:
            self._loaders.pop((BaseModelType(base), ModelType(type), ModelFormat(format)), None)

    unregister = _RegistryMethod(_unregister)


__all__ = ["ModelLoader", "ModelLoaderRegistry", "Triple"]
