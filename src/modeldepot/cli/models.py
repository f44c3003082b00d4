"""Record commands: register, list, show, rename, tag, rm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modeldepot.cli._app import HomeOption, JsonOption, app, console, open_manager, parse_enum

tag_app = typer.Typer(help="Add or remove tags on a model.", no_args_is_help=True)
app.add_typer(tag_app, name="tag")


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _resolve(mm: Any, key_or_name: str) -> Any:
    """A record by key, else by unique name (any base/type)."""
    from modeldepot.errors import DuplicateModelException, UnknownModelException

    store = mm.store
    if store.exists(key_or_name):
        return store.get_model(key_or_name)
    matches = store.search_by_attr(name=key_or_name)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        keys = ", ".join(f"{m.key} ({m.base}/{m.type})" for m in matches)
        raise DuplicateModelException(f"name {key_or_name!r} matches several models: {keys}; use a key")
    raise UnknownModelException(f"no model with key or name {key_or_name!r}", key=key_or_name)


def _dump(config: Any) -> dict[str, Any]:
    data: dict[str, Any] = config.model_dump(mode="json")
    data["compatible_bases"] = sorted(data.get("compatible_bases") or [])
    return data


@app.command("register")
def register(
    path: Annotated[Path, typer.Argument(help="Model file or folder to register in place (never moved)")],
    name: Annotated[str | None, typer.Option(help="Name (default: file or folder name)")] = None,
    base: Annotated[str | None, typer.Option(help="Override the identified base, e.g. sd-1, sdxl, flux")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Override the identified type, e.g. main, lora")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Override the identified format")] = None,
    description: Annotated[str | None, typer.Option(help="Free text description")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an existing model file or folder in place: identified, hashed, recorded, never moved."""
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
        key = mm.install.register_path(path, overrides or None)
        config = mm.store.get_model(key)
    if as_json:
        console.print_json(json.dumps(_dump(config)))
    else:
        console.print(f"registered [bold]{config.name}[/bold] ({config.base}/{config.type}/{config.format}) key {key}")


@app.command("list")
def list_models(
    base: Annotated[str | None, typer.Option(help="Only this base (also matches compatible bases)")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only this model type")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Only this format")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Only models with this tag (repeatable: all must match)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only models with this exact name")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List registered models as a table (or JSON)."""
    from modeldepot.taxonomy import BaseModelType, ModelFormat, ModelType

    b = parse_enum(BaseModelType, base, "--base")
    t = parse_enum(ModelType, type, "--type")
    f = parse_enum(ModelFormat, format, "--format")
    with open_manager(home) as mm:
        models = mm.store.search_by_attr(name=name, base=b, type=t, format=f)
        if tag:
            wanted = set(tag)
            models = [m for m in models if wanted.issubset(m.tags)]
    if as_json:
        console.print_json(json.dumps([_dump(m) for m in models]))
        return
    table = Table(show_lines=False, header_style="bold")
    for col in ("key", "name", "base", "type", "format", "size", "tags"):
        table.add_column(col, overflow="fold")
    for m in models:
        table.add_row(
            m.key, m.name, str(m.base), str(m.type), str(m.format), _human_size(m.file_size), ",".join(m.tags)
        )
    console.print(table)
    console.print(f"{len(models)} model(s)", style="dim")


@app.command("show")
def show(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
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
    for field, value in _dump(config).items():
        if field in ("source_api_response", "identification") or value in (None, [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(field, str(value))
    table.add_row("files", "present" if present else "[red]MISSING: the file or folder no longer exists[/red]")
    console.print(table)


@app.command("rename")
def rename(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
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
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
    tags: Annotated[list[str], typer.Argument(help="Tags to add")],
    home: HomeOption = None,
) -> None:
    """Add tags to a model."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        new = list(config.tags) + [t for t in tags if t not in config.tags]
        mm.store.update_model(config.key, {"tags": new})
    console.print(f"{config.name}: tags {', '.join(new)}")


@tag_app.command("rm")
def tag_rm(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
    tags: Annotated[list[str], typer.Argument(help="Tags to remove")],
    home: HomeOption = None,
) -> None:
    """Remove tags from a model."""
    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        new = [t for t in config.tags if t not in set(tags)]
        mm.store.update_model(config.key, {"tags": new})
    console.print(f"{config.name}: tags {', '.join(new) or '(none)'}")


@app.command("rm")
def rm(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
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
