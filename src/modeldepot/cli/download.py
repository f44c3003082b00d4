"""``modeldepot download URL DEST``: one plain file with a progress bar; nothing is registered.

The download itself (resumable, multi-connection, Ctrl-C pauses) is ``modeldepot.download.download_file``;
this face only draws the bar, on stderr, so stdout keeps the one ``saved PATH`` line for scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from modeldepot.cli._app import HomeOption, app, console
from modeldepot.cli._progress import transfer_bar

if TYPE_CHECKING:
    from modeldepot.download.base import DownloadJobBase


@app.command("download")
def download(
    url: Annotated[str, typer.Argument(help="URL of a file")],
    dest: Annotated[str, typer.Argument(help="Destination file, or folder (an existing one, or any path ending in /)")],
    token: Annotated[str | None, typer.Option(help="Bearer token for this download (never stored)")] = None,
    home: HomeOption = None,
) -> None:
    """Download one file (resumable, multi-connection) with a progress bar; nothing is registered."""
    from modeldepot.config import DepotConfig
    from modeldepot.download import download_file

    config = DepotConfig.load(**({"home": home} if home else {}))
    with transfer_bar() as progress:
        task = progress.add_task("connecting", total=None)

        def update(job: DownloadJobBase) -> None:
            name = job.download_path.name if job.download_path else "download"
            progress.update(task, description=name, completed=job.bytes, total=job.total_bytes or None)

        path = download_file(url, dest, config, access_token=token, on_progress=update)
    console.print(f"saved {path}", highlight=False, markup=False)


__all__ = ["download"]
