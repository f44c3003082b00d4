"""What a local register or install actually did, in words a user can read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["registered", "installed", "already_registered", "already_installed"]


@dataclass(frozen=True)
class PathResult:
    """The key of the model and what happened: a new record, or content already known.

    ``repaired`` lists what a reinstall of already-installed content healed (blobs that failed
    verification, replaced by the freshly read bytes; model folders rebuilt).
    """

    key: str
    outcome: Outcome
    name: str
    message: str
    repaired: tuple[str, ...] = ()

    @property
    def created(self) -> bool:
        return self.outcome in ("registered", "installed")
