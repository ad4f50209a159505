"""The default quality task of a run (``e3bench run`` and ``e3bench.run()``): dropped, with one
line saying why, when its data is nowhere. Below the command line so that the Python API and
the CLI share it without the API importing the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from e3bench.core.errors import E3Error

if TYPE_CHECKING:
    from e3bench.config.run import RunConfig

#: how a run's warning starts when its default quality task could not run (the summary finds it)
QUALITY_SKIPPED = "quality not measured: "


def default_task_or_skip(cfg: RunConfig) -> tuple[RunConfig, str | None]:
    """``cfg``, or ``cfg`` without its tasks and the one line saying why, when they are the
    default task (not asked for) and its data is nowhere (neither the data directory nor the
    hub): a default must not fail the run. A task the user asked for is not touched here; its
    missing data fails the run before the model loads (:func:`e3bench.evals.engine.preflight`)."""
    if not cfg.defaulted("tasks"):
        return cfg, None
    from e3bench.evals.engine import preflight

    try:
        preflight(cfg)
    except E3Error as exc:
        note = (f"{QUALITY_SKIPPED}the default task {','.join(cfg.tasks)} cannot run here ({exc.problem}); "
                f"{exc.fix}, or pass --tasks none to run without it")  # fmt: skip
        skipped = cfg.model_copy(update={"tasks": (), "limit": None})
        skipped._defaulted = frozenset()
        return skipped, note
    return cfg, None
