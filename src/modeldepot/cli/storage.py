"""Storage commands: du, verify, export, gc, view, scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from modeldepot._fs import human_size
from modeldepot._jsonable import plain
from modeldepot.cli._app import HomeOption, JsonOption, app, console, open_manager

view_app = typer.Typer(help="Build folder trees for other programs (A1111, ComfyUI) from links.", no_args_is_help=True)
app.add_typer(view_app, name="view")


@app.command("du")
def du(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Disk usage: logical bytes of all models, physical bytes, bytes saved by dedup, per model."""
    with open_manager(home) as mm:
        report = mm.storage.du()
        names = {m.key: m.name for m in mm.store.all_models()}
        split_on = mm.config.split_single_files
    if as_json:
        console.print_json(json.dumps(plain(report)))
        return
    console.print(
        f"logical {human_size(report.logical_bytes)} · physical {human_size(report.physical_bytes)} · "
        f"saved by dedup {human_size(report.saved_bytes)}",
        highlight=False,
    )
    if report.split_savings_bytes:
        what = "splitting the rest would save" if split_on else "split_single_files would save"
        console.print(
            f"{what} {human_size(report.split_savings_bytes)}: {report.split_shared_parts} part(s) "
            "stored whole in several single-file checkpoints",
            highlight=False,
        )
    table = Table(header_style="bold")
    for col in ("model", "key", "logical", "only here"):
        table.add_column(col, overflow="fold")
    for key, usage in sorted(report.per_model.items(), key=lambda kv: -kv[1].logical):
        table.add_row(names.get(key, "?"), key, human_size(usage.logical), human_size(usage.unique_bytes))
    console.print(table)


@app.command("verify")
def verify(
    key_or_name: Annotated[
        str | None, typer.Argument(help="Only this model, by key or name (default: every blob and model)")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Re-link damaged files from good blobs; fetch what has no good copy from its source"
        ),
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-hash blobs and materialised files; report corrupt or missing ones and the models affected.

    Exits non-zero while anything is damaged (with --repair: anything the repair could not heal).
    """
    from modeldepot.cli.models import _resolve

    with open_manager(home) as mm:
        key = _resolve(mm, key_or_name).key if key_or_name is not None else None
        report = mm.install.repair_storage(key) if repair else mm.storage.verify(key=key)
    if as_json:
        console.print_json(json.dumps(plain(report)))
    else:
        console.print(
            f"checked {report.blobs_checked} blob(s), {report.files_checked} file(s): "
            + ("all good" if report.ok else "[red]problems found[/red]")
        )
        for digest in report.corrupt_blobs:
            console.print(f"  corrupt blob {digest}")
        for digest in report.missing_blobs:
            console.print(f"  missing blob {digest}")
        for path in report.damaged_files:
            console.print(f"  damaged file {path}", highlight=False)
        for k, what in report.affected_models.items():
            console.print(f"  model {k}: {', '.join(what)}", highlight=False)
        for item in report.repaired:
            console.print(f"  repaired {item}", highlight=False)
        if report.repair_attempted and not report.ok:
            if report.remaining:
                console.print(f"[red]still damaged after repair ({len(report.remaining)}):[/red]")
                for item in report.remaining:
                    console.print(f"  {item}", highlight=False)
            else:
                console.print("everything found was repaired")
    if not report.healthy:
        raise typer.Exit(1)


@app.command("export")
def export(
    key_or_name: Annotated[str, typer.Argument(help="The model, by key or unique name")],
    destination: Annotated[Path, typer.Argument(help="Folder to write it into (created if missing)")],
    home: HomeOption = None,
) -> None:
    """Write a model out in its native layout, byte-identical to what was installed (a checkpoint
    stored as parts with split_single_files is rebuilt into its single file)."""
    from modeldepot.cli.models import _resolve

    with open_manager(home) as mm:
        out = mm.normalized.export_record(_resolve(mm, key_or_name), destination)
    console.print(f"exported to {out}", highlight=False)


@app.command("gc")
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove blobs no model references (recent ones are kept for installs in progress)."""
    with open_manager(home) as mm:
        report = mm.storage.gc(dry_run=dry_run)
    if as_json:
        console.print_json(json.dumps(plain(report)))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(report.removed)} blob(s), {human_size(report.bytes_freed)}")
    for path in report.unexpected_files:
        console.print(f"  unexpected file left alone: {path}", highlight=False)


def _view(kind: Literal["a1111", "comfyui"], dest: Path, home: Path | None) -> None:
    from modeldepot.storage import build_view

    with open_manager(home) as mm:
        models = mm.store.all_models()
        report = build_view(kind, dest, models)
    names = {m.key: m.name for m in models}
    console.print(
        f"{kind} view at {dest}: {len(report.created)} link(s) made, {len(report.removed)} stale removed, "
        f"{len(report.skipped)} skipped",
        highlight=False,
    )
    for what, why in report.skipped:
        console.print(f"  skipped {names.get(what, what)}: {why}", highlight=False)


@view_app.command("a1111")
def view_a1111(
    dest: Annotated[Path, typer.Argument(help="Folder to build (Stable Diffusion WebUI layout)")],
    home: HomeOption = None,
) -> None:
    """Build or refresh an A1111 / Forge folder tree of links to installed models."""
    _view("a1111", dest, home)


@view_app.command("comfyui")
def view_comfyui(
    dest: Annotated[Path, typer.Argument(help="Folder to build (ComfyUI layout)")],
    home: HomeOption = None,
) -> None:
    """Build or refresh a ComfyUI folder tree of links to installed models."""
    _view("comfyui", dest, home)


@app.command("scan")
def scan(
    folder: Annotated[Path, typer.Argument(help="A models folder (e.g. an A1111 or ComfyUI tree)")],
    inplace: Annotated[bool, typer.Option("--inplace", help="Register without moving anything (the default)")] = True,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register every model file in a folder tree, in place: nothing is moved or copied."""
    with open_manager(home) as mm:
        result = mm.install.scan_and_register(folder, inplace=inplace)
    if as_json:
        console.print_json(json.dumps(result))
        return
    for entry in result:
        status = entry["status"]
        console.print(
            f"{status:>10}  {entry['path']}" + (f"  ({entry['detail']})" if entry.get("detail") else ""),
            highlight=False,
            markup=False,
        )
    counts = {s: sum(1 for e in result if e["status"] == s) for s in ("registered", "present", "known", "duplicate")}
    skipped = sum(1 for e in result if e["status"] == "skipped")
    console.print(
        f"{counts['registered']} registered, {counts['present'] + counts['known']} already known, "
        f"{counts['duplicate']} duplicate(s) of registered models, {skipped} skipped",
        style="dim",
    )
