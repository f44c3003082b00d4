"""``SuperModelManager``: several service managers behind one object (document 001's ``super.py``).

Built with a flag per service (``SuperModelManager(compvis=True, esrgan=True)``); every manager
shares one depot. ``load``, ``download_model``, ``validate_model``, ``taint_model`` and
``unload_model`` go to the first enabled manager (in document 001's order) whose reference has
the key, as the Stable Horde worker expects.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from modeldepot.errors import UnknownModelException
from modeldepot.managers.base import BaseModelManager, ManagedModel
from modeldepot.managers.hf_models import BlipModelManager, ClipModelManager, SafetyCheckerModelManager
from modeldepot.managers.image_models import (
    CodeFormerModelManager,
    ControlNetModelManager,
    EsrganModelManager,
    GfpganModelManager,
)
from modeldepot.managers.stable_diffusion import CompVisModelManager, DiffusersModelManager

if TYPE_CHECKING:
    from modeldepot.manager import ModelManager
    from modeldepot.reference import ModelReference

#: Service name -> manager class, in routing order.
MANAGERS: dict[str, type[BaseModelManager]] = {
    "compvis": CompVisModelManager,
    "diffusers": DiffusersModelManager,
    "clip": ClipModelManager,
    "blip": BlipModelManager,
    "esrgan": EsrganModelManager,
    "gfpgan": GfpganModelManager,
    "codeformer": CodeFormerModelManager,
    "safety_checker": SafetyCheckerModelManager,
    "controlnet": ControlNetModelManager,
}


class SuperModelManager:
    """The enabled managers (``.managers[service]``, also ``.esrgan``...) over one shared depot.

    Args:
        references: per service, a path, URL or ``ModelReference`` (default: the shipped ones).
        depot, cache_home: as for :class:`BaseModelManager`; one depot is opened for all when None.
    """

    def __init__(
        self,
        compvis: bool = False,
        diffusers: bool = False,
        clip: bool = False,
        blip: bool = False,
        esrgan: bool = False,
        gfpgan: bool = False,
        codeformer: bool = False,
        safety_checker: bool = False,
        controlnet: bool = False,
        *,
        depot: ModelManager | None = None,
        references: dict[str, str | os.PathLike[str] | ModelReference] | None = None,
        cache_home: str | os.PathLike[str] | None = None,
    ) -> None:
        wanted = {
            "compvis": compvis,
            "diffusers": diffusers,
            "clip": clip,
            "blip": blip,
            "esrgan": esrgan,
            "gfpgan": gfpgan,
            "codeformer": codeformer,
            "safety_checker": safety_checker,
            "controlnet": controlnet,
        }
        refs = references or {}
        unknown = set(refs) - set(MANAGERS)
        if unknown:
            raise UnknownModelException(f"no service {sorted(unknown)[0]!r}; services: {', '.join(MANAGERS)}")
        self._owns_depot = depot is None
        if depot is None:
            from modeldepot.manager import ModelManager

            depot = ModelManager()
        self.depot = depot
        self.managers: dict[str, BaseModelManager] = {
            name: cls(refs.get(name), depot, cache_home=cache_home)
            for name, cls in MANAGERS.items()
            if wanted[name] or name in refs
        }

    def __getattr__(self, name: str) -> BaseModelManager:
        managers = self.__dict__.get("managers", {})
        if name in managers:
            return managers[name]  # type: ignore[no-any-return]
        raise AttributeError(f"SuperModelManager has no enabled manager {name!r}; enabled: {', '.join(managers)}")

    def __enter__(self) -> SuperModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
        if self._owns_depot:
            self.depot.close()

    def owner(self, key: str) -> BaseModelManager:
        """The manager whose reference has ``key`` (the first in routing order)."""
        for manager in self.managers.values():
            if key in manager.models:
                return manager
        raise UnknownModelException(
            f"no enabled manager knows model {key!r} (enabled: {', '.join(self.managers) or 'none'})", key=key
        )

    @property
    def models(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for manager in self.managers.values():
            for key, entry in manager.models.items():
                merged.setdefault(key, entry)
        return merged

    @property
    def available_models(self) -> list[str]:
        return [k for m in self.managers.values() for k in m.available_models]

    @property
    def loaded_models(self) -> dict[str, ManagedModel]:
        return {k: v for m in self.managers.values() for k, v in m.loaded_models.items()}

    @property
    def tainted_models(self) -> list[str]:
        return [k for m in self.managers.values() for k in m.tainted_models]

    def load(self, key: str, half_precision: bool = True, gpu_id: int = 0, cpu_only: bool = False) -> ManagedModel:
        return self.owner(key).load(key, half_precision=half_precision, gpu_id=gpu_id, cpu_only=cpu_only)

    def download_model(self, key: str) -> bool:
        return self.owner(key).download_model(key)

    def validate_model(self, key: str, skip_checksum: bool = False) -> bool:
        return self.owner(key).validate_model(key, skip_checksum)

    def taint_model(self, key: str) -> None:
        self.owner(key).taint_model(key)

    def taint_models(self, keys: list[str]) -> None:
        for key in keys:
            self.taint_model(key)

    def unload_model(self, key: str) -> bool:
        return self.owner(key).unload_model(key)

    def is_available(self, key: str) -> bool:
        return self.owner(key).is_available(key)

    def download_all(self) -> list[str]:
        """Every enabled manager's ``download_all``; returns the keys downloaded."""
        return [k for m in self.managers.values() for k in m.download_all()]

    @staticmethod
    def cuda_available() -> bool:
        return BaseModelManager.cuda_available()


__all__ = ["MANAGERS", "SuperModelManager"]
