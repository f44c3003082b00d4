"""Installing models: sources -> download -> identify -> store -> record."""

from modeldepot.install._jobs import InstallStatus, ModelInstallJob
from modeldepot.install._maintenance import cancel_persisted_job, persisted_jobs
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
    "cancel_persisted_job",
    "persisted_jobs",
]
