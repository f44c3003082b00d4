"""Record commands: register, list, show, rename, tag, rm."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from modeldepot._fs import human_size
from modeldepot.cli._app import HomeOption, JsonOption, app, console, open_manager, parse_enum

tag_app = typer.Typer(help="Add or remove tags on a model.", no_args_is_help=True)
app.add_typer(tag_app, name="tag")


def _resolve(mm: Any, key_or_name: str) -> Any:
    """A record by key, else by unique name (any base/type), else by a unique key prefix of at
    least 6 characters (``ModelRecordServiceBase.resolve``: an indexed lookup in every store)."""
    return mm.store.resolve(key_or_name)


def _iso_time(timestamp: float, timespec: str = "auto") -> str:
    """An epoch time as ISO 8601 in the local time zone, with its UTC offset."""
    return datetime.fromtimestamp(timestamp, tz=UTC).astimezone().isoformat(timespec=timespec)


def _dump(config: Any, timespec: str = "auto") -> dict[str, Any]:
    """A record as JSON-able data; times (``*_at`` fields, epoch seconds in the record) become
    ISO 8601 strings with a UTC offset, in the table and in ``--json`` alike."""
    data: dict[str, Any] = config.model_dump(mode="json")
    data["compatible_bases"] = sorted(data.get("compatible_bases") or [])
    for field, value in data.items():
        if field.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
            data[field] = _iso_time(value, timespec)
    return data


@app.command("register")
def register(
    path: Annotated[Path, typer.Argument(help="Model file or folder to register in place (never moved)")],
    name: Annotated[str | None, typer.Option(help="Name (default: file or folder name)")] = None,
    base: Annotated[str | None, typer.Option(help="Override the identified base, e.g. sd-1, sdxl, flux")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Override the identified type, e.g. main, lora")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Override the identified format")] = None,
    description: Annotated[str | None, typer.Option(help="Free text description")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Register even a file that is not a model (a README, a script)")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an existing model file or folder in place: identified, hashed, recorded, never moved.

    Content already registered makes no second record: the command names the existing model and
    remembers this path as another location of it.
    """
    from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

    parse_enum(BaseModelType, base, "--base")
    parse_enum(ModelType, type, "--type")
    parse_enum(ModelFormat, format, "--format")
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"name": name, "base": base, "type": type, "format": format, "description": description}.items()
        if v is not None
    }
    with open_manager(home) as mm:
        result = mm.install.register_path_result(path, overrides or None, force=force)
        config = mm.store.get_model(result.key)
    if as_json:
        console.print_json(json.dumps({**_dump(config), "outcome": result.outcome, "message": result.message}))
    elif result.created:
        console.print(
            f"registered [bold]{config.name}[/bold] ({config.base}/{config.type}/{config.format}) key {config.key}"
        )
    else:
        console.print(result.message, highlight=False, markup=False)


@app.command("list")
def list_models(
    base: Annotated[str | None, typer.Option(help="Only this base (also matches compatible bases)")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only this model type")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Only this format")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Only models with this tag (repeatable: all must match)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only models with this exact name")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Full keys, every column, nothing truncated (may exceed the terminal)")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List registered models as a table that fits the terminal (or JSON). Tags match in any case."""
    from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

    b = parse_enum(BaseModelType, base, "--base")
    t = parse_enum(ModelType, type, "--type")
    f = parse_enum(ModelFormat, format, "--format")
    with open_manager(home) as mm:
        models = mm.store.search_models(name=name, base=b, type=t, format=f, tag=tag or None)
        # A fleet's records are every worker's: say which ones have their files on this one.
        fleet = mm.config.blob_remote is not None
    if as_json:
        console.print_json(
            json.dumps([{**_dump(m), **({"local": Path(m.path).exists()} if fleet else {})} for m in models])
        )
        return
    if wide:
        table = _list_table(models, wide=True, local=fleet)
        natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
        # console.print never goes beyond the terminal's width: print on a console as wide as the table.
        Console(
            file=console.file,
            width=max(natural, console.width),
            color_system=console.color_system,  # type: ignore[arg-type]
            force_terminal=console.is_terminal,
            no_color=console.no_color,
        ).print(table, crop=False)
    else:
        console.print(_list_table(models, wide=False, width=console.width, local=fleet))
    here = f", {sum(Path(m.path).exists() for m in models)} local to this worker" if fleet else ""
    console.print(f"{len(models)} model(s){here}", style="dim")


#: ``list`` shows this many characters of a key; any 6 or more work wherever a key does.
SHORT_KEY = 8
_GAP = 2  # columns apart in the list table


#: In the narrow table a name gets at least this many characters (all it needs, if fewer) before
#: the optional columns give way.
_NAME_MIN = 24
#: Columns the narrow table drops, in this order, when names would otherwise be cut short.
_OPTIONAL = ("format", "tags")


def _list_table(models: list[Any], *, wide: bool, width: int | None = None, local: bool = False) -> Table:
    """One line per model. Narrow: short keys; the name and tags columns share the width left by
    the others, cut with an ellipsis, and the format (then tags) column is left out when names
    would otherwise be cut short; wide: everything, in full. ``local`` (a fleet worker): a column
    saying whether the model's files are on this worker."""
    head = ("key", "name", "base", "type", "format", "size", *(("local",) if local else ()), "tags") + (
        ("hash", "path") if wide else ()
    )
    rows = [
        (
            m.key if wide else m.key[:SHORT_KEY],
            m.name,
            m.base.value,
            m.type.value,
            m.format.value,
            human_size(m.file_size),
            *(("yes" if Path(m.path).exists() else "no",) if local else ()),
            ",".join(m.tags),
            *((m.hash or "-", m.path) if wide else ()),
        )
        for m in models
    ]
    limits: dict[str, int] = {}
    if not wide and width is not None:
        natural = {h: max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(head)}
        shown = list(head)

        def room() -> int:
            fixed = sum(natural[h] for h in shown if h not in ("name", "tags"))
            return width - _GAP * (len(shown) - 1) - fixed - (min(natural["tags"], 4) if "tags" in shown else 0)

        for optional in _OPTIONAL:
            if room() >= min(natural["name"], _NAME_MIN):
                break
            shown.remove(optional)
        left = width - _GAP * (len(shown) - 1) - sum(natural[h] for h in shown if h not in ("name", "tags"))
        tags_w = natural["tags"] if "tags" in shown else 0
        if natural["name"] + tags_w > left:
            # Names get what they need up to the room left once tags have a few characters.
            name_w = max(4, min(natural["name"], left - (min(tags_w, 4) if tags_w else 0)))
            limits = {"name": name_w, "tags": max(4, left - name_w)}
        keep = [head.index(h) for h in shown]
        head = tuple(shown)
        rows = [tuple(r[i] for i in keep) for r in rows]
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False, collapse_padding=True)
    for h in head:
        table.add_column(
            h, no_wrap=True, overflow="ellipsis", max_width=limits.get(h), justify="right" if h == "size" else "left"
        )
    for row in rows:
        table.add_row(*row)
    return table


@app.command("show")
def show(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one model's record, and whether its files are present."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
    present = Path(config.path).exists()
    if as_json:
        data = _dump(config)
        data["files_present"] = present
        console.print_json(json.dumps(data))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for field, value in _dump(config, timespec="seconds").items():
        if field in ("source_api_response", "identification") or value in (None, [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(field, str(value))
    table.add_row("files", "present" if present else "[red]MISSING: the file or folder no longer exists[/red]")
    console.print(table)


@app.command("rename")
def rename(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    new_name: Annotated[str, typer.Argument(help="The new name")],
    home: HomeOption = None,
) -> None:
    """Rename a model."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        mm.store.rename_model(config.key, new_name)
    console.print(f"renamed {config.name!r} to {new_name!r}")


@tag_app.command("add")
def tag_add(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    tags: Annotated[list[str], typer.Argument(help="Tags to add")],
    home: HomeOption = None,
) -> None:
    """Add tags to a model."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        # The store drops tags already present in another case, keeping the first spelling.
        new = mm.store.update_model(config.key, {"tags": [*config.tags, *tags]}).tags
    console.print(f"{config.name}: tags {', '.join(new)}", highlight=False, markup=False)


@tag_app.command("rm")
def tag_rm(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    tags: Annotated[list[str], typer.Argument(help="Tags to remove")],
    home: HomeOption = None,
) -> None:
    """Remove tags from a model."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        gone = {t.casefold() for t in tags}
        new = [t for t in config.tags if t.casefold() not in gone]
        mm.store.update_model(config.key, {"tags": new})
    console.print(f"{config.name}: tags {', '.join(new) or '(none)'}", highlight=False, markup=False)


@app.command("rm")
def rm(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Only forget the record; leave the model's files on disk")
    ] = False,
    unconditionally: Annotated[
        bool, typer.Option("--unconditionally", help="Also delete files of a model registered in place")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Remove a model. Files of models registered in place are kept unless --unconditionally."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        if keep_files:
            mm.install.unregister(config.key)
        elif unconditionally:
            mm.install.unconditionally_delete(config.key)
        else:
            mm.install.delete(config.key)
    console.print(f"removed {config.name} ({config.key})")
