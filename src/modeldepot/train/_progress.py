"""The training progress bar: steps done, the last loss, time left (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    bar = Progress(
        TextColumn("{task.description}", markup=False),  # a user's output name is not markup
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
    )
    with bar:
        task = bar.add_task(description, total=None, loss="-")

        def update(step: int, steps: int, loss: float) -> None:
            bar.update(task, completed=step, total=steps, loss=f"{loss:.4f}")

        yield update
