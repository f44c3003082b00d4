"""The CLI and the README cannot drift: every command has help text and is documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from modeldepot.cli import app

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            out.extend(_commands(cmd, full + " "))
        else:
            out.append((full, cmd))
    return out


COMMANDS = _commands(typer.main.get_command(app))  # type: ignore[arg-type]


def test_there_are_commands() -> None:
    names = {n for n, _ in COMMANDS}
    assert {"register", "list", "show", "rename", "tag add", "tag rm", "rm", "hash", "config show"} <= names


def test_every_command_has_help_and_is_in_readme() -> None:
    for name, cmd in COMMANDS:
        assert cmd.help and cmd.help.strip(), f"{name} has no help text"
        first = name.split()[0]
        assert f"modeldepot {first}" in README, f"`modeldepot {name}` is not documented in README.md"
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help, f"option {param.opts} of {name} has no help text"
