"""Utility commands: hash, config, identify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from modeldepot.cli._app import HomeOption, JsonOption, app, console

config_app = typer.Typer(help="Show settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.command("hash")
def hash_cmd(
    path: Annotated[Path, typer.Argument(help="File or folder to hash")],
    algorithm: Annotated[str, typer.Option(help="blake3, blake3_single, sha256 or any hashlib name")] = "blake3",
    civitai: Annotated[
        bool, typer.Option("--civitai", help="Also print Civitai hashes (SHA256, AutoV2, AutoV3)")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Hash a model file or folder the way modeldepot records it."""
    from modeldepot.hashing import ModelHash, civitai_hashes

    result: dict[str, str | None] = {"hash": ModelHash(algorithm).hash(path)}
    if civitai and path.is_file():
        h = civitai_hashes(path)
        result.update({"sha256": h.sha256, "autov2": h.autov2, "autov3": h.autov3, "blake3": h.blake3})
    if as_json:
        console.print_json(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k}: {v}", highlight=False)


@config_app.command("show")
def config_show(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets are never shown)."""
    from modeldepot.config import DepotConfig

    cfg = DepotConfig.load(**({"home": home} if home else {}))
    data = cfg.public_dict()
    data["remote_api_tokens"] = [f"{t.host or t.url_regex} -> ***" for t in cfg.remote_api_tokens]
    data["api_key"] = "***" if cfg.api_key else None
    if as_json:
        console.print_json(json.dumps(data))
    else:
        for k, v in data.items():
            console.print(f"{k}: {v}", highlight=False)


@app.command("identify")
def identify_cmd(
    path: Annotated[Path, typer.Argument(help="Model file or folder")],
    explain: Annotated[bool, typer.Option("--explain", help="Show every rule's verdict and why it lost")] = False,
    as_json: JsonOption = False,
) -> None:
    """Tell what a model file or folder is (type, base, format, variant) and why."""
    from modeldepot.identify import explain as explain_text
    from modeldepot.identify import identify

    ident = identify(path)
    if as_json:
        console.print_json(json.dumps(ident.to_dict()))
        return
    if explain:
        console.print(explain_text(ident), highlight=False, markup=False)
        return
    console.print(
        f"{ident.type} / {ident.format} / {ident.base}"
        + (f" / {ident.variant}" if ident.variant else "")
        + f"  (confidence {ident.confidence:.2f})",
        highlight=False,
    )
    for reason in ident.reasons:
        console.print(f"  - {reason}", highlight=False, markup=False)


_ = HomeOption  # re-exported for sibling modules
