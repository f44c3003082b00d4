"""``Service``: a loaded model in, ``__call__`` with inputs, outputs out (document 000's service classes).

A service is built from what the depot hands out — a ``LoadedModel`` (``ModelManager.load_model_by_key``),
a ``ManagedModel`` (``EsrganModelManager().load(key)``) or the bare module — or with
``Service.from_key(depot, key, **options)``, which loads what it needs through the cache. While a call
runs, the cache entries behind the model are locked, so the cache neither offloads nor evicts them
mid-call, and the weights are on the execution device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from modeldepot.errors import WrongModelTypeError
from modeldepot.taxonomy import ModelType

if TYPE_CHECKING:
    from modeldepot.configs import ModelConfigBase
    from modeldepot.load import LoadedModel
    from modeldepot.manager import ModelManager


@dataclass(frozen=True)
class BoundModel:
    """A service's model: the module, its record when known, and the cache entries to lock while running.

    ``extras`` carries what a manager loaded beside the model (a CLIP processor, a pipeline's parts).
    """

    model: Any
    config: ModelConfigBase | None = None
    entries: tuple[LoadedModel, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        return self.config.key if self.config is not None else None

    @property
    def label(self) -> str:
        """How messages name the model: its record name, else its class."""
        return repr(self.config.name) if self.config is not None else type(self.model).__name__

    @contextmanager
    def running(self) -> Iterator[Any]:
        """Lock every cache entry behind the model (on the execution device) and yield the model."""
        with ExitStack() as stack:
            for entry in self.entries:
                stack.enter_context(entry)
            yield self.model


def bind(model: Any) -> BoundModel:
    """What a service was given, as a :class:`BoundModel`."""
    from modeldepot.load import LoadedModel
    from modeldepot.managers import ManagedModel

    if isinstance(model, BoundModel):
        return model
    if isinstance(model, LoadedModel):
        return BoundModel(model.model, model.config, (model,))
    if isinstance(model, ManagedModel):
        return BoundModel(model.model, model.record, tuple(model.parts.values()), dict(model.extras))
    return BoundModel(model)


class Service:
    """Base of the service classes. Subclasses name the model types they run in ``model_types``."""

    #: Record types :meth:`from_key` accepts (empty: any).
    model_types: ClassVar[tuple[ModelType, ...]] = ()

    def __init__(self, model: Any) -> None:
        self.bound = bind(model)
        if self.bound.config is not None:
            self.check_config(self.bound.config)

    @property
    def model(self) -> Any:
        return self.bound.model

    @classmethod
    def check_config(cls, config: ModelConfigBase) -> None:
        """Refuse a record whose type this service cannot run, naming what it takes."""
        if cls.model_types and config.type not in cls.model_types:
            wanted = tuple(t.value for t in cls.model_types)
            raise WrongModelTypeError(
                f"{cls.__name__} cannot use model {config.name!r}: it is a {config.type.value} model; "
                f"{cls.__name__} takes {' or '.join(wanted)} models",
                key=config.key,
                expected=wanted,
            )

    @classmethod
    def refuse(cls, model: Any, config: ModelConfigBase | None, needs: str, expected: str) -> WrongModelTypeError:
        """The error for a module this service cannot run: what it is, and what ``needs`` says would work."""
        name = repr(config.name) if config is not None else "given"
        return WrongModelTypeError(
            f"model {name} is a {type(model).__name__}; {cls.__name__} needs {needs}",
            key=config.key if config is not None else None,
            expected=(expected,),
        )

    @classmethod
    def from_key(cls, depot: ModelManager, key: str, **options: Any) -> Self:
        """Build the service from the model registered under ``key`` (a key, key prefix or name),
        loaded through the depot's cache; ``options`` go to the constructor."""
        config = depot.store.resolve(key)
        cls.check_config(config)
        return cls(depot.load_model_by_config(config), **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.bound.label})"


__all__ = ["BoundModel", "Service", "bind"]
