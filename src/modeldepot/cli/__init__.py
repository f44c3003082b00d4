"""The ``modeldepot`` command: a thin shell over the library (no business logic here)."""

from __future__ import annotations

from modeldepot.cli._app import app, main

# Importing the command modules registers their commands on ``app``.
from modeldepot.cli import models as _models  # noqa: F401  isort: skip
from modeldepot.cli import tools as _tools  # noqa: F401  isort: skip
from modeldepot.cli import storage as _storage  # noqa: F401  isort: skip
from modeldepot.cli import install as _install  # noqa: F401  isort: skip
from modeldepot.cli import download as _download  # noqa: F401  isort: skip  (after install: its `download` wins)
from modeldepot.cli import server as _server  # noqa: F401  isort: skip
from modeldepot.cli import reference as _reference  # noqa: F401  isort: skip
from modeldepot.cli import run as _run  # noqa: F401  isort: skip
from modeldepot.cli import train as _train  # noqa: F401  isort: skip
from modeldepot.cli import fleet as _fleet  # noqa: F401  isort: skip

__all__ = ["app", "main"]
