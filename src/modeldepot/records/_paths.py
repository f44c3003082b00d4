"""Record paths relative to the models folder, as the seed doc has them.

A store told its ``models_dir`` writes a path that lies under it relative (POSIX), so a home can
move (or a fleet worker keep its models elsewhere) without rewriting records, and hands every
path back absolute, so whoever reads a record (load, verify, views, API, CLI) gets a usable path.
A relative path a user gives is taken to be relative to ``models_dir``. Without a ``models_dir``
paths are kept exactly as given.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path


def resolve_model_path(path: str | Path, models_dir: str | Path | None) -> Path:
    """The absolute path a record's ``path`` names: a relative one is relative to ``models_dir``
    (kept as is when there is none); ``~`` is expanded."""
    p = Path(path).expanduser()
    if p.is_absolute() or models_dir is None:
        return p
    return Path(models_dir).expanduser() / p


def _prefix(folder: str) -> str:
    return folder if folder.endswith("/") else folder + "/"


@dataclass(frozen=True)
class ModelPaths:
    """How one store spells paths: relative to ``models_dir`` inside, absolute outside."""

    models_dir: Path | None = None
    #: ``models_dir`` with a trailing slash, computed once: ``readable`` runs on every record read.
    _root: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if self.models_dir is not None:
            object.__setattr__(self, "_root", _prefix(str(self.models_dir)))

    @classmethod
    def of(cls, models_dir: str | Path | None) -> ModelPaths:
        if models_dir is None:
            return cls(None)
        return cls(Path(os.path.normpath(Path(models_dir).expanduser().absolute())))

    def _prefixes(self) -> tuple[str, ...]:
        root = str(self.models_dir)
        real = os.path.realpath(root)
        # Paths may come in through the models folder's real location (a symlinked home).
        return (self._root,) if real == root else (self._root, _prefix(real))

    def stored(self, path: str) -> str:
        """The form written to the store."""
        if self.models_dir is None:
            return path
        p = Path(path).expanduser()
        if not p.is_absolute():
            rel = posixpath.normpath(p.as_posix())
            if rel not in (".", "..") and not rel.startswith("../"):
                return rel
            p = self.models_dir / p  # escapes models_dir: keep it absolute
        norm = os.path.normpath(p)
        for prefix in self._prefixes():
            if norm.startswith(prefix) and len(norm) > len(prefix):
                return norm[len(prefix) :]
        # Outside models_dir: an absolute path stays exactly as given (as before relative paths).
        return path if path.startswith("/") else norm

    def readable(self, stored: str) -> str:
        """The form handed out: absolute whenever a ``models_dir`` is known."""
        if not self._root or stored.startswith("/"):
            return stored
        return self._root + stored

    def forms(self, path: str | Path) -> tuple[str, ...]:
        """Every stored spelling that names ``path``: its stored form and its absolute form (a
        database written before paths were stored relative holds that)."""
        text = str(path)
        stored = self.stored(text)
        return tuple(dict.fromkeys((stored, self.readable(stored))))


__all__ = ["ModelPaths", "resolve_model_path"]
