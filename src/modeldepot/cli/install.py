"""Install commands: install, jobs, cancel, civitai lookup, doctor."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from modeldepot.cli._app import HomeOption, JsonOption, app, console, err_console, fail, open_manager, parse_enum
from modeldepot.cli._progress import transfer_bar

civitai_app = typer.Typer(help="Civitai helpers.", no_args_is_help=True)
app.add_typer(civitai_app, name="civitai")


def _watch(mm: Any, jobs: list[Any]) -> None:
    """One bar per file and one total per job, until every job ends."""
    from modeldepot.events import Event

    with transfer_bar() as progress:
        totals: dict[int, Any] = {}
        files: dict[tuple[int, str], Any] = {}

        def on_event(event: Event) -> None:
            data = event.payload
            job_id = data.get("id")
            if not isinstance(job_id, int) or job_id not in {j.id for j in jobs}:
                return
            if job_id not in totals:
                totals[job_id] = progress.add_task(f"{data['source']} (total)", total=data.get("total_bytes") or None)
            progress.update(totals[job_id], completed=data.get("bytes", 0), total=data.get("total_bytes") or None)
            for part in data.get("parts") or []:
                k = (job_id, part["path"])
                if k not in files:
                    files[k] = progress.add_task(f"  {part['path']}", total=part.get("total_bytes") or None)
                progress.update(files[k], completed=part["bytes"], total=part.get("total_bytes") or None)

        install_events = {
            f"model_install_{n}"
            for n in (
                "waiting",
                "downloading",
                "downloads_done",
                "paused",
                "running",
                "completed",
                "error",
                "cancelled",
            )
        }
        unsubscribe = mm.events.subscribe(on_event, install_events)
        try:
            for job in jobs:
                mm.install.wait_for_job(job)
        finally:
            unsubscribe()


@app.command("install")
def install(
    sources: Annotated[
        list[str], typer.Argument(help="Paths, URLs, HF repo ids (org/name[:variant[:sub]]), civitai:ID")
    ],
    name: Annotated[str | None, typer.Option(help="Name of the installed model")] = None,
    base: Annotated[str | None, typer.Option(help="Override the base (sd-1, sdxl, flux...)")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Override the model type")] = None,
    variant: Annotated[str | None, typer.Option(help="Override the variant (normal, inpaint, depth...)")] = None,
    inplace: Annotated[bool, typer.Option("--inplace", help="Local paths: register where they are")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Install even files that are not models (a README, a script)")
    ] = False,
    token: Annotated[str | None, typer.Option(help="Access token for this install (never stored)")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start the jobs and return")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Install models from local paths, URLs, Hugging Face or Civitai, with progress bars.

    Ctrl-C pauses downloads cleanly; run the same command again to resume.
    """
    from modeldepot.taxonomy import BaseModelType, ModelType

    parse_enum(BaseModelType, base, "--base")
    parse_enum(ModelType, type, "--type")
    overrides = {k: v for k, v in {"name": name, "base": base, "type": type, "variant": variant}.items() if v}
    with open_manager(home) as mm:
        if no_wait:
            _enqueue(mm, sources, overrides or None, inplace=inplace, force=force, token=token)
            return
        jobs = [
            mm.install.heuristic_import(s, config=overrides or None, access_token=token, inplace=inplace, force=force)
            for s in sources
        ]
        try:
            _watch(mm, jobs)
            # Jobs this process took over from an earlier one (interrupted, or queued with
            # --no-wait) finish too: leaving now would only hand them on again.
            others = [j for j in mm.install.list_jobs() if j not in jobs and not j.in_terminal_state]
            for job in others:
                err_console.print(f"also finishing job {job.id}: {job.source}", highlight=False, markup=False)
            _watch(mm, others)
        except KeyboardInterrupt:
            for job in mm.install.list_jobs():
                mm.install.pause_job(job)
            err_console.print("paused; run the same command again to resume")
            raise typer.Exit(130) from None
    failed = [j for j in jobs if not j.complete]
    if as_json:
        console.print_json(json.dumps([j.to_public() for j in jobs], default=str))
    else:
        for job in jobs:
            if job.complete and job.config_out is not None:
                c = job.config_out
                if job.outcome in ("already_installed", "already_registered"):
                    word = "registered" if job.outcome == "already_registered" else "installed"
                    console.print(f"already {word} as [bold]{c.name}[/bold] ({c.base}/{c.type}/{c.format}) key {c.key}")
                else:
                    verb = {"registered": "registered", "pulled": "pulled"}.get(job.outcome or "", "installed")
                    console.print(f"{verb} [bold]{c.name}[/bold] ({c.base}/{c.type}/{c.format}) key {c.key}")
                for note in job.notes:
                    console.print(f"  note: {note}", highlight=False, markup=False)
            else:
                err_console.print(
                    f"[red]error:[/red] {job.source}: {job.error or job.status.value}",
                    highlight=False,
                    markup=True,
                    soft_wrap=True,
                )
    if failed:
        raise typer.Exit(1)


def _enqueue(
    mm: Any, sources: list[str], overrides: dict[str, Any] | None, *, inplace: bool, force: bool, token: str | None
) -> None:
    """``--no-wait``: record the jobs for a running server, or say plainly that nothing runs them yet."""
    if token:
        raise fail(
            "--token cannot be used with --no-wait: tokens are never stored, so the job could not use it "
            "(set it in remote_api_tokens for the server, or install without --no-wait)"
        )
    config = {**(overrides or {}), **({"force": True} if force else {})} or None
    servers: list[str] = []
    for source in sources:
        row, servers = mm.install.enqueue(source, config, inplace=inplace)
        console.print(f"job {row.id}: {row.source} ({row.status})", highlight=False, markup=False)
    if servers:
        pids = ", ".join(s.split(":")[1] for s in servers)
        console.print(f"a modeldepot server on this home (pid {pids}) runs the queued jobs; see `modeldepot jobs`")
    else:
        console.print(
            "no modeldepot server is running on this home: nothing runs these jobs until `modeldepot serve` "
            "or `modeldepot install` runs here",
            highlight=False,
        )


@app.command("jobs")
def jobs(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List install jobs recorded in the database, with the process that runs each one.

    Unfinished jobs no live process runs resume when `modeldepot install` or `modeldepot serve` starts.
    """
    from modeldepot.install import persisted_jobs

    with open_manager(home) as mm:
        rows = persisted_jobs(mm.db)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(header_style="bold")
    for col in ("id", "status", "pid", "source"):
        table.add_column(col, overflow="fold")
    for row in rows:
        pid = str(row["pid"]) if row["pid"] and row["status"] not in ("completed", "error", "cancelled") else ""
        table.add_row(str(row["id"]), row["status"], pid, row["source"])
    console.print(table)


@app.command("cancel")
def cancel(
    job_id: Annotated[int, typer.Argument(help="Install job id (see `modeldepot jobs`)")],
    home: HomeOption = None,
) -> None:
    """Cancel an install job: it will not resume, and its partial downloads are deleted.

    A job that has already ended is left as it is, and the command says so (exit 1).
    """
    from modeldepot.install import cancel_persisted_job

    with open_manager(home) as mm:
        before = cancel_persisted_job(mm.db, mm.config, job_id)
    ended = {"completed": "completed", "error": "failed", "cancelled": "cancelled"}
    if before in ended:
        raise fail(f"job {job_id} already {ended[before]}; nothing to cancel")
    console.print(f"cancelled job {job_id}")


@civitai_app.command("lookup")
def civitai_lookup(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
    apply: Annotated[bool, typer.Option("--apply/--no-apply", help="Fill the record's metadata from Civitai")] = True,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find a registered file on Civitai by its hash and fill name, trigger words, tags, thumbnail."""
    from modeldepot.cli.models import _resolve

    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        result = mm.install.civitai_lookup(config.key, apply=apply)
    if as_json:
        console.print_json(json.dumps(result, default=str))
    else:
        for k, v in result.items():
            if k != "source_api_response":
                console.print(f"{k}: {v}", highlight=False, markup=False)


@app.command("doctor")
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="Forget records whose files are gone")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check records against the disk: missing files, unfinished jobs, staging leftovers (takes over no job)."""
    with open_manager(home) as mm:
        report = mm.install.sync_to_config(prune_missing=fix)
    # What is still wrong after this run: missing files are fixed (forgotten) only with --fix.
    problems = 0 if fix else len(report["missing"])
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        for item in report["missing"]:
            action = "forgotten" if fix else "missing (use --fix to forget)"
            console.print(f"{item['name']} ({item['key']}): {item['path']} {action}", highlight=False, markup=False)
        console.print(
            f"{len(report['missing'])} missing, {report['unfinished']} unfinished job(s) "
            f"(they run when `modeldepot install` or `modeldepot serve` starts), "
            f"{report['cleaned']} staging leftover(s) removed",
            highlight=False,
        )
    if problems:
        raise fail(f"{problems} problem(s) found; `modeldepot doctor --fix` fixes them")
