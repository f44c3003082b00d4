"""Server-side paths a client may name: only inside the home folder or the configured roots."""

from __future__ import annotations

from pathlib import Path

from modeldepot.errors import NotAllowedError
from modeldepot.manager import ModelManager


def allowed_roots(mm: ModelManager, extra: list[Path]) -> list[Path]:
    roots = [mm.config.home, mm.config.models_path, *extra]
    return [Path(r).expanduser().resolve() for r in roots]


def check_inside_roots(mm: ModelManager, path: str, extra: list[Path]) -> Path:
    """The resolved ``path`` (symlinks followed) when it lies inside an allowed root.

    Raises:
        NotAllowedError: the path (after resolving ``..`` and symlinks) is outside every root.
    """
    if "\x00" in path:
        raise NotAllowedError("a path may not contain a NUL byte")
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise NotAllowedError(f"{path!r} cannot be resolved: {exc}") from exc
    for root in allowed_roots(mm, extra):
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise NotAllowedError(
        f"{path} is outside the folders this server may read (the depot home and --allow-root folders)"
    )
