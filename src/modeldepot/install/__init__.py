"""Installing models: sources -> download -> identify -> store -> record."""

from modeldepot.install._jobs import InstallStatus, ModelInstallJob
from modeldepot.install.service import ModelInstallService
from modeldepot.remote.sources import (
    CivitaiModelSource,
    HFModelSource,
    LocalModelSource,
    ModelSource,
    URLModelSource,
)

__all__ = [
    "CivitaiModelSource",
    "HFModelSource",
    "InstallStatus",
    "LocalModelSource",
    "ModelInstallJob",
    "ModelInstallService",
    "ModelSource",
    "URLModelSource",
]
