"""What every command shares: the console, the one way a user error is printed, and the one
line printed when the user interrupts a command (Ctrl-C): :func:`doing` / :func:`step` tell
it what is running, :func:`interrupted_line` says what was interrupted and where the earlier
results are (e3bench writes every result file whole or not at all, so they are intact)."""

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
    """A rich console on stdout, as wide as ``COLUMNS`` when set, else the terminal, else (not a
    terminal: logs, pipes, tests) 120 columns."""
    import os

    from rich.console import Console

    narrow = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(stderr=False, soft_wrap=False, width=None if narrow else 120)


_doing: dict[str, str | None] = {"command": None, "what": None, "results": None, "step": None}


def doing(command: str, *, what: str | None = None, results: str | None = None) -> None:
    """Say which command runs, on what (a model and config, a sweep) and where its results go,
    for the line printed on Ctrl-C."""
    _doing.update(command=command, what=what, results=results, step=None)


def step(message: str) -> None:
    """Say which step is running now (a progress line), for the line printed on Ctrl-C."""
    _doing["step"] = message


def interrupted_by(signal_name: str | None = None) -> str | None:
    """Record (with ``signal_name``) or read which signal interrupted the command: ``"SIGTERM"``,
    or None for Ctrl-C (SIGINT)."""
    if signal_name is not None:
        _doing["signal"] = signal_name
    return _doing.get("signal")


def interrupted_line() -> str:
    """``interrupted: ...`` — what was interrupted (command, configuration, step) and that the
    results written before are intact (and where)."""
    command = _doing["command"] or next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    where = f"e3bench {command}".strip()
    if _doing["what"]:
        where += f" of {_doing['what']}"
    if _doing["step"]:
        where += f", during: {_doing['step']}"
    place = f" in {_doing['results']}" if _doing["results"] else ""
    return (
        f"interrupted ({_doing.get('signal') or 'Ctrl-C'}): {where}; the interrupted work was not saved, results written before it "
        f"are intact{place} (e3bench writes each result file whole or not at all)"
    )
