"""Installing models: plan (remote) -> fetch (download) -> ingest -> record -> materialise."""

from modeldepot.install._jobs import InstallStatus, ModelInstallJob
from modeldepot.install.service import ModelInstallService, cancel_persisted_job, persisted_jobs
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
