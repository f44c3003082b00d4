"""The one bar of steps (denoising steps, training steps, epochs): name, bar, done/total, optionally the
last loss, time elapsed and left. The transfer bar of downloads is ``cli/_progress.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def step_bar(name: str, console: Console, *, loss: bool = False) -> Iterator[Callable[..., None]]:
    """A ``progress(step, total[, loss])`` callback drawing a rich bar on ``console``. The bar appears at
    the first step, so an error raised before any step prints nothing but its one line."""
    columns: list[ProgressColumn] = [TextColumn(name, markup=False), BarColumn(), MofNCompleteColumn()]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    # Four redraws a second read as smooth and take the interpreter lock less often than rich's ten.
    progress = Progress(*columns, console=console, refresh_per_second=4)
    tasks: list[Any] = []

    def update(step: int, total: int, value: float | None = None) -> None:
        if not tasks:
            progress.start()
            tasks.append(progress.add_task(name, total=total or None, loss="-"))
        if value is not None:
            progress.update(tasks[0], loss=f"{value:.4f}")
        progress.update(tasks[0], completed=step, total=total or None)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
