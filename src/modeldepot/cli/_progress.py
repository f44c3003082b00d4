"""The one transfer progress bar of the command line (``download`` and ``install``), on stderr so
stdout keeps the lines scripts read."""

from __future__ import annotations

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from modeldepot.cli._app import err_console


def transfer_bar(show: bool = True) -> Progress:
    """Name, bar, bytes, speed, time left; one task per file or job."""
    return Progress(
        TextColumn("{task.description}", markup=False),  # a server-chosen name is not markup
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show,
        transient=False,
        # Four redraws a second read as smooth and cost half of rich's default ten: drawing takes
        # the interpreter lock from the threads moving the bytes (issue 18: progress under 1 %).
        refresh_per_second=4,
    )
