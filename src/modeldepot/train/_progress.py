"""The training progress: the caller's callback, or the step bar with the last loss (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

from modeldepot._stepbar import step_bar as _bar

#: ``callback(step, steps, loss)``: what the loop reports after each step
StepCallback = Callable[[int, int, float], None]


@contextmanager
def step_bar(description: str, progress: bool | StepCallback) -> Iterator[StepCallback | None]:
    """The loop's callback for ``progress``: itself when callable, a bar when True, nothing when False."""
    if callable(progress):
        yield progress
        return
    if not progress:
        yield None
        return
    with _bar(description, Console(stderr=True), loss=True) as update:
        yield update
