"""Command line wiring: one typer app, one module per command group.

``run`` (:mod:`e3bench.cli.run`) · ``sweep`` (:mod:`e3bench.cli.sweep`) · ``report``
(:mod:`e3bench.cli.report`) · ``env``/``models``/``tasks``/``plugins``/``ls``/``export``
(:mod:`e3bench.cli.info`) · ``finetune``/``train`` (:mod:`e3bench.cli.train`). Every command
prints a user error as ``error: <problem> — fix: <fix>`` (one line per problem) and exits 2.
The console script ``e3bench`` and ``python -m e3bench`` both call :func:`main`.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from e3bench.cli import info, train
from e3bench.cli.common import error_lines, interrupted_line
from e3bench.cli.compare import compare
from e3bench.cli.report import report
from e3bench.cli.run import run
from e3bench.cli.serve import serve
from e3bench.cli.sweep import sweep
from e3bench.core.errors import E3Error

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="e3bench: efficiency, energy and effectiveness of small language models from one run.",
    pretty_exceptions_enable=False,
)

app.command()(run)
app.command()(sweep)
app.command()(serve)
app.command()(report)
app.command()(compare)
app.command("ls")(info.ls_)
app.command()(info.export)
app.command()(info.env)
app.command()(info.models)
app.command()(info.tasks)
app.command()(info.plugins)
train.register(app)


#: exit status of a command interrupted with Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


def main() -> None:
    """Run the CLI; an E3Error raised outside a command body is printed the same way, and an
    interrupted command (Ctrl-C; typer exits 130) says what was interrupted."""
    import signal

    with contextlib.suppress(ValueError):  # not the main thread (embedded use): keep the default
        signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except E3Error as exc:
        for line in error_lines(exc):
            typer.echo(line, err=True)
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            typer.echo(interrupted_line(), err=True)
            sys.exit(_interrupted_status())
        raise
    except KeyboardInterrupt:
        typer.echo(interrupted_line(), err=True)
        sys.exit(_interrupted_status())


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (``timeout``, a scheduler, ``kill``) ends a command like Ctrl-C does — cleanup
    runs (a sweep kills its run, releases its claim), the interrupted line is printed — and the
    exit status is 143 (128 + SIGTERM) instead of 130."""
    from e3bench.cli import common

    common.interrupted_by("SIGTERM")
    raise KeyboardInterrupt


def _interrupted_status() -> int:
    from e3bench.cli import common

    return 143 if common.interrupted_by() == "SIGTERM" else INTERRUPTED


if __name__ == "__main__":
    main()
