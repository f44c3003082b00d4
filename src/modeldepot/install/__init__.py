"""Installing models: sources -> download -> identify -> store -> record."""

from modeldepot.install.service import ModelInstallService

__all__ = ["ModelInstallService"]
