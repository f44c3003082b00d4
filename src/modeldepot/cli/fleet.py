"""Fleet commands: pull, push, evict, fleet status, fleet gc."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from modeldepot._fs import human_size
from modeldepot._jsonable import plain
from modeldepot.cli._app import HomeOption, JsonOption, app, console, fail, open_manager

fleet_app = typer.Typer(
    help="Fleet mode: workers sharing one PostgreSQL database and one bucket.", no_args_is_help=True
)
app.add_typer(fleet_app, name="fleet")

KeyArgument = Annotated[str | None, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")]


@app.command("pull")
def pull(
    key_or_name: KeyArgument = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every model of the fleet")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make fleet models local: their blobs from the bucket (verified), then their folders."""
    if (key_or_name is None) == (not all_models):
        raise fail("name one model, or pass --all", code=2)
    with open_manager(home) as mm:
        fleet = mm.fleet
        keys = fleet.stored_keys() if all_models else [mm.store.resolve(key_or_name).key]
        results = [fleet.pull(key) for key in keys]
        names = {m.key: m.name for m in mm.store.all_models()}
    if as_json:
        console.print_json(json.dumps([{**plain(r), "name": names.get(r.key)} for r in results]))
        return
    for r in results:
        what = "already local" if r.already_local else f"pulled {r.blobs} blob(s), {human_size(r.bytes)}"
        console.print(f"{names.get(r.key, r.key)} ({r.key[:8]}): {what}", highlight=False)


@app.command("push")
def push(key_or_name: KeyArgument = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Send the blobs of local models (one, or all) that the bucket lacks (a home that had models
    before it joined the fleet; installs in fleet mode push by themselves)."""
    with open_manager(home) as mm:
        keys = [mm.store.resolve(key_or_name).key] if key_or_name is not None else None
        sent, sent_bytes = mm.fleet.push_local(keys)
        url = mm.fleet.tier.url
    if as_json:
        console.print_json(json.dumps({"blobs": sent, "bytes": sent_bytes, "bucket": url}))
        return
    console.print(f"sent {sent} blob(s), {human_size(sent_bytes)} to {url}", highlight=False)


@app.command("evict")
def evict(
    key_or_name: Annotated[str, typer.Argument(help="Model key, unique name or key prefix (6+ characters)")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drop a model's local files and blobs on this worker; its record and the bucket copy stay
    (`pull` or a load brings it back)."""
    with open_manager(home) as mm:
        record = mm.store.resolve(key_or_name)
        result = mm.fleet.evict(record.key)
    if as_json:
        console.print_json(json.dumps(plain(result)))
        return
    console.print(
        f"evicted {record.name} ({record.key[:8]}): {result.blobs} blob(s), {human_size(result.bytes)} freed here",
        highlight=False,
    )


@fleet_app.command("status")
def status(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Workers seen (heartbeats), models per worker, bucket bytes against logical bytes, jobs in flight."""
    from modeldepot.fleet import status as fleet_status

    with open_manager(home) as mm:
        report = fleet_status(mm.fleet)
    if as_json:
        console.print_json(json.dumps(report.public(), default=str))
        return
    console.print(
        f"bucket {report.bucket} ({report.endpoint or 'AWS'}): {report.bucket_objects} blob(s),"
        f" {human_size(report.bucket_bytes)} · logical {human_size(report.logical_bytes)}"
        f" · unique {human_size(report.unique_bytes)}"
        + (f" · [red]{report.missing} referenced blob(s) missing[/red]" if report.missing else ""),
        highlight=False,
    )
    if not report.shared_db:
        console.print(
            "[yellow]note:[/yellow] the records are in this machine's SQLite file: other workers share the"
            " bucket but not these records; set db to a postgresql:// URL on every worker"
        )
    table = Table(header_style="bold")
    for col in ("worker", "host", "last seen", "models", "local logical"):
        table.add_column(col, overflow="fold")
    for w in report.workers:
        seen = f"{w['last_seen_seconds']:.0f} s ago" + ("" if w["alive"] else " (silent)")
        mark = " (this one)" if w["worker"] == report.worker else ""
        table.add_row(w["worker"] + mark, w["host"], seen, str(w["models"]), human_size(w["local_logical_bytes"]))
    console.print(table)
    if report.in_flight:
        console.print(f"{len(report.in_flight)} install job(s) in flight:")
        for j in report.in_flight:
            console.print(
                f"  #{j['id']} {j['status']} {human_size(j['bytes'])}/{human_size(j['total_bytes'])} {j['source']}"
                f" ({j['owner'] or 'no owner yet'})",
                highlight=False,
                markup=False,
            )
    else:
        console.print("no install jobs in flight")


@fleet_app.command("gc")
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove and mark nothing")] = False,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds an unreferenced object stays marked before it goes")
    ] = 3600.0,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove bucket objects no record references and no install in flight holds (mark, then sweep
    after the grace period). Local blobs are not touched (`modeldepot gc` does those)."""
    from modeldepot.fleet import collect

    with open_manager(home) as mm:
        report = collect(mm.fleet, dry_run=dry_run, grace_seconds=grace)
    if as_json:
        console.print_json(json.dumps(plain(report)))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {len(report.removed)} object(s), {human_size(report.bytes_freed)};"
        f" {len(report.marked)} unreferenced object(s) waiting out the grace period;"
        f" {len(report.kept_in_flight)} held by installs in flight",
        highlight=False,
    )
