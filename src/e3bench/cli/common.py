"""What every command shares: the console and the one way a user error is printed."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from e3bench.core.errors import E3Error


def error_lines(exc: E3Error) -> list[str]:
    """``error: <problem> — fix: <fix>`` lines for ``exc``: one per problem of a config error."""
    many = getattr(exc, "one_lines", None)
    return [f"error: {line}" for line in (many() if callable(many) else [exc.one_line()])]


def fail(exc: E3Error) -> NoReturn:
    """Print ``exc`` on stderr (no traceback) and exit with its code (2)."""
    for line in error_lines(exc):
        typer.echo(line, err=True)
    raise typer.Exit(exc.exit_code)


def console():
    """A rich console on stdout; 120 columns when not a terminal (logs, tests)."""
    from rich.console import Console

    return Console(stderr=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
