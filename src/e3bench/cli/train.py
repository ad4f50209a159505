"""``e3bench finetune`` and ``e3bench train``: the training commands live with the training code
(:mod:`e3bench.train.cli`); this module only wires them into the one CLI."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``finetune`` and ``train`` to ``app``."""
    from e3bench.cli.progress import reporter
    from e3bench.train.cli import command, finetune, train

    def make(quiet: bool):
        return reporter(quiet=quiet)

    app.command("finetune")(command(finetune, make))
    app.command("train")(command(train, make))
