"""The typer application, shared options, and the one place errors become exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from modeldepot.errors import ModelDepotError

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

app = typer.Typer(
    name="modeldepot",
    help="Download, identify, deduplicate, register and load generative-AI model files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# soft_wrap: a long line (a key, a path) is left whole for the terminal to wrap, never split by rich
# mid-word; tables still fit the terminal width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="MODELDEPOT_HOME", help="Data folder (default: MODELDEPOT_HOME or ~/.cache/modeldepot)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table")]


@contextmanager
def open_manager(home: Path | None, **settings: Any) -> Iterator[Any]:
    from modeldepot.manager import ModelManager

    with ModelManager.open(home=home, **settings) as mm:
        yield mm


E = TypeVar("E", bound=Enum)


def parse_enum(cls: type[E], value: str | None, option: str) -> E | None:
    """An enum value from an option, or a usage error (exit 2) listing the valid values."""
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise typer.BadParameter(f"{value!r} is not one of: {allowed}", param_hint=option) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every ``ModelDepotError`` becomes one red line and exit code 1."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except ModelDepotError as exc:
        message = str(exc).replace("[", "\\[")
        err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except click_exceptions.UsageError as exc:
        exc.show()
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
