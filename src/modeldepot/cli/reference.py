"""Model reference commands: ``reference list | show | download | validate`` (Nataili managers).

A thin face over ``modeldepot.managers``: each command opens the depot, builds the managers of the
chosen service(s) on it, and asks them. ``--reference`` points one service (``--service``) at
another reference file or URL, so a test or a fleet can use its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from modeldepot._fs import human_size
from modeldepot.cli._app import HomeOption, JsonOption, app, console, err_console, fail, open_manager

if TYPE_CHECKING:
    from modeldepot.managers import BaseModelManager

reference_app = typer.Typer(
    help="The model reference: models each Nataili service knows, their downloads and checks.",
    no_args_is_help=True,
)
app.add_typer(reference_app, name="reference")

ServiceOption = Annotated[
    str | None,
    typer.Option("--service", help="Only this service (compvis, diffusers, clip, blip, esrgan, ...)"),
]
ReferenceOption = Annotated[
    str | None,
    typer.Option(
        "--reference", help="Read the --service's reference from this JSON file or URL instead of the shipped one"
    ),
]


@contextmanager
def _managers(
    home: Path | None, service: str | None, reference: str | None
) -> Iterator[tuple[Any, dict[str, BaseModelManager]]]:
    """The depot and the managers of ``service`` (all services when None), in routing order."""
    from modeldepot.managers import MANAGERS

    if service is not None and service not in MANAGERS:
        raise fail(escape(f"unknown service {service!r}; services: {', '.join(MANAGERS)}"), code=2)
    if reference is not None and service is None:
        raise fail("--reference needs --service: a reference file describes one service's models", code=2)
    names = [service] if service is not None else list(MANAGERS)
    with open_manager(home) as mm:
        managers = {name: MANAGERS[name](reference if name == service else None, mm) for name in names}
        try:
            yield mm, managers
        finally:
            for manager in managers.values():
                manager.close()


def _owner(managers: dict[str, BaseModelManager], key: str) -> BaseModelManager:
    """The one manager whose reference has ``key``; a key several services know needs ``--service``."""
    from modeldepot.errors import UnknownModelException

    owners = [m for m in managers.values() if key in m.models]
    if not owners:
        where = f"the {next(iter(managers))} reference" if len(managers) == 1 else "any service's reference"
        raise UnknownModelException(f"no model {key!r} in {where}; see `modeldepot reference list`", key=key)
    if len(owners) > 1:
        services = ", ".join(m.service for m in owners)
        raise fail(escape(f"model {key!r} is in several services ({services}): choose one with --service"), code=2)
    return owners[0]


def _error(message: str) -> None:
    """One red ``error:`` line; the message is shown as it is (a path or key is never markup)."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


@reference_app.command("list")
def list_reference(
    service: ServiceOption = None,
    available: Annotated[
        bool, typer.Option("--available", help="Only models whose files are present and valid")
    ] = False,
    reference: ReferenceOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the models the reference knows, per service, with size and availability."""
    with _managers(home, service, reference) as (_, managers):
        rows = [m.describe(key) for m in managers.values() for key in m.models if not available or m.is_available(key)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(header_style="bold")

    # Keys are what the other commands take: every column but the description keeps its width,
    # and the description gives way (cut with an ellipsis) on a narrow terminal.
    def width(field: str, cap: int) -> int:
        return min(cap, max((len(str(r[field])) for r in rows), default=0))

    widths = {"service": width("service", 14), "key": width("key", 40), "type": width("type", 12), "size": 9}
    widths["available"] = 9
    for col, w in widths.items():
        table.add_column(col, min_width=w, overflow="fold", justify="right" if col == "size" else "left")
    # 3 cells of padding and border per column, plus the closing border.
    rest = console.width - sum(widths.values()) - 3 * (len(widths) + 1) - 1
    table.add_column("name / description", no_wrap=True, overflow="ellipsis", max_width=max(12, rest))
    for row in rows:
        named = row["name"] if row["name"] != row["key"] else None
        text = ": ".join(t for t in (named, row["description"]) if t)
        # Text cells: names and descriptions come from a reference file, never markup.
        cells = (row["service"], row["key"], row["type"], human_size(row["size_on_disk_bytes"]))
        table.add_row(
            *(Text(c) for c in (*cells, "yes" if row["available"] else "no", text)),
            style=None if row["available"] else "dim",
        )
    console.print(table)
    console.print(f"{len(rows)} model(s)", style="dim")


@reference_app.command("show")
def show_reference(
    key: Annotated[str, typer.Argument(help="Reference key (see `modeldepot reference list`)")],
    service: ServiceOption = None,
    reference: ReferenceOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show every field of one reference entry, its files with their expected digests and where
    they are in the Nataili folder, whether it is available, and its depot record."""
    with _managers(home, service, reference) as (_, managers):
        m = _owner(managers, key)
        entry = m.models[key]
        data: dict[str, Any] = {
            **entry.dump(),
            **m.describe(key),
            "folder": str(m.path),
            "files": [
                {
                    "path": f.path,
                    "location": str(m.path / f.path),
                    "present": (m.path / f.path).exists(),
                    "sha256sum": f.sha256sum,
                    "md5sum": f.md5sum,
                }
                for f in entry.files
            ],
        }
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for field, value in data.items():
        if field in ("files", "config") or value in (None, [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        table.add_row(field, Text(str(value)))  # Text: a description's "[...]" is not markup
    console.print(table, highlight=False)
    console.print("files:", style="bold")
    for f in data["files"]:
        digest = f"sha256 {f['sha256sum']}" if f["sha256sum"] else f"md5 {f['md5sum']}" if f["md5sum"] else "no digest"
        state = "present" if f["present"] else "missing"
        console.print(f"  {f['path']}  ({digest})  {state} at {f['location']}", highlight=False, markup=False)
    for d in entry.config.download:
        how = d.file_url or ("by hand" if d.manual else "symlink" if d.symlink else "inline content")
        console.print(f"  download {d.relpath} from {how}", highlight=False, markup=False)


def _download_with_progress(mm: Any, manager: BaseModelManager, key: str) -> None:
    """``download_model`` in a thread; the queue's jobs for the entry's URLs drive the bars."""
    from modeldepot.cli._progress import transfer_bar

    urls = {d.file_url for d in manager.models[key].config.download if d.file_url}
    before = {j.id for j in mm.downloads.list_jobs()}
    outcome: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            manager.download_model(key)
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=run, name=f"reference-download-{key}", daemon=True)
    worker.start()
    with transfer_bar() as progress:
        tasks: dict[int, Any] = {}
        try:
            while True:
                finished = done.wait(0.25)
                for job in mm.downloads.list_jobs():
                    if job.id in before or getattr(job, "url", job.source) not in urls:
                        continue
                    if job.id not in tasks:
                        name = Path(str(job.dest)).name
                        tasks[job.id] = progress.add_task(name, total=job.total_bytes or None)
                    progress.update(tasks[job.id], completed=job.bytes, total=job.total_bytes or None)
                if finished:
                    break
        except KeyboardInterrupt:
            for job in mm.downloads.list_jobs():
                if job.id not in before and getattr(job, "url", job.source) in urls:
                    mm.downloads.cancel_job(job)
            worker.join()
            err_console.print("interrupted; run the same command again to download it")
            raise typer.Exit(130) from None
    worker.join()
    if outcome:
        raise outcome[0]


@reference_app.command("download")
def download_reference(
    key: Annotated[str | None, typer.Argument(help="Reference key to download (or use --all)")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Download every entry marked download_all of the chosen service(s)")
    ] = False,
    service: ServiceOption = None,
    reference: ReferenceOption = None,
    home: HomeOption = None,
) -> None:
    """Download reference models into the depot (checked against the reference's digests),
    recorded with the tags nataili, service:S and reference:KEY, and linked into the Nataili folder."""
    from modeldepot.errors import ModelDepotError

    if (key is None) == (not all_):
        raise fail("give a reference KEY or --all (not both)", code=2)
    with _managers(home, service, reference) as (mm, managers):
        if key is not None:
            todo = [(_owner(managers, key), key)]
        else:
            todo = [(m, k) for m in managers.values() for k, e in m.models.items() if e.download_all]
            if not todo:
                console.print("no entry is marked download_all", highlight=False)
        failures = 0
        for manager, k in todo:
            if manager.is_available(k):
                console.print(f"{k} ({manager.service}) is already available", highlight=False, markup=False)
                continue
            try:
                _download_with_progress(mm, manager, k)
            except ModelDepotError as exc:
                if key is not None:
                    raise
                failures += 1
                _error(f"{k} ({manager.service}): {exc}")
                continue
            where = manager.path / manager.models[k].files[0].path if manager.models[k].files else manager.path
            console.print(
                f"downloaded {k} ({manager.service}) to {where}, record {manager.describe(k)['record_key']}",
                highlight=False,
                markup=False,
            )
    if failures:
        raise typer.Exit(1)


@reference_app.command("validate")
def validate_reference(
    key: Annotated[str | None, typer.Argument(help="Only this reference key (default: every model present)")] = None,
    service: ServiceOption = None,
    reference: ReferenceOption = None,
    home: HomeOption = None,
) -> None:
    """Check the files of downloaded reference models against the reference's sha256 (else md5).

    Prints one line per model; exits 1 when any is missing a file or does not match.
    """
    with _managers(home, service, reference) as (_, managers):
        if key is not None:
            m = _owner(managers, key)
            todo = [(m, key)]
        else:
            todo = [
                (m, k)
                for m in managers.values()
                for k, e in m.models.items()
                if any((m.path / f.path.rstrip("/")).exists() for f in e.files)
            ]
        failures = 0
        for m, k in todo:
            problems = m.problems(k)
            if problems:
                failures += 1
                _error(f"{k} ({m.service}) is not valid: {'; '.join(problems)}")
            else:
                console.print(f"ok {k} ({m.service})", highlight=False, markup=False)
    if not todo:
        console.print("no reference model is downloaded yet", highlight=False)
    if failures:
        raise typer.Exit(1)
