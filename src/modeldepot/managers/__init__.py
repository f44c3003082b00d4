"""Nataili-style per-service model managers (documents 000/001): ``EsrganModelManager().load(key)``.

Each manager reads its service's model reference, downloads entries through the depot (so every
byte is deduplicated and recorded, tagged ``nataili``, ``service:<s>``, ``reference:<key>``),
validates them against the reference's digests, links them into ``<cache>/nataili/<service>/``,
and loads them through the load service's cache into ``loaded_models[key]``.
"""

from modeldepot.managers._files import nataili_home
from modeldepot.managers.base import TAG, BaseModelManager, ManagedModel, service_tags
from modeldepot.managers.hf_models import BlipModelManager, ClipModelManager, SafetyCheckerModelManager
from modeldepot.managers.image_models import (
    CodeFormerModelManager,
    ControlNetModelManager,
    EsrganModelManager,
    GfpganModelManager,
)
from modeldepot.managers.stable_diffusion import CompVisModelManager, DiffusersModelManager
from modeldepot.managers.super import MANAGERS, SuperModelManager

__all__ = [
    "MANAGERS",
    "TAG",
    "BaseModelManager",
    "BlipModelManager",
    "ClipModelManager",
    "CodeFormerModelManager",
    "CompVisModelManager",
    "ControlNetModelManager",
    "DiffusersModelManager",
    "EsrganModelManager",
    "GfpganModelManager",
    "ManagedModel",
    "SafetyCheckerModelManager",
    "SuperModelManager",
    "nataili_home",
    "service_tags",
]
