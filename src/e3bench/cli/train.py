"""``e3bench finetune`` and ``e3bench train``: the training commands live with the training code
(:mod:`e3bench.train.cli`); this module only wires them into the one CLI."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``finetune`` and ``train`` to ``app``."""
    from e3bench.train.cli import finetune, train

    app.command("finetune")(finetune)
    app.command("train")(train)
