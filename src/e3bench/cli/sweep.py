"""``e3bench sweep``: plan → skip completed → execute → progress lines."""

from __future__ import annotations

from rich.markup import escape  # labels, reasons and pip lines ("e3bench[quant]") are text, not markup

import sys
from pathlib import Path
from typing import Optional

import typer

from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error


def sweep(
    sweep_file: Path = typer.Argument(..., help="YAML sweep file (name, base, grid)"),
    executor: str = typer.Option("local", "--executor", help="local (a subprocess per run) | ray | a plugin"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="default: the file's or results/"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, run nothing"),
) -> None:
    """Run a grid of configurations; resumable (completed runs, by config hash, are skipped)."""
    try:
        run_sweep(sweep_file, executor=executor, output_dir=output_dir, ray_address=ray_address,
                  dry_run=dry_run, console=console())  # fmt: skip
    except E3Error as exc:
        fail(exc)


def run_sweep(path: Path, *, executor: str, output_dir: str | None, ray_address: str | None,
              dry_run: bool, console) -> None:  # fmt: skip
    """Expand ``path``, print the plan, and run what is not complete yet with ``executor``.

    Every config problem and an unknown executor are reported before anything runs (E3Error).
    """
    from e3bench.config.validate import check_output_dir
    from e3bench.core import registry
    from e3bench.results import store
    from e3bench.sweep.executors import make_executor
    from e3bench.sweep.plan import expand

    registry.executors.canonical(executor)  # unknown executor: fail before planning
    missing = None if dry_run else registry.executors.missing_extra(executor)
    if missing is not None:  # e.g. --executor ray without ray: say so before anything runs
        raise missing
    plan = expand(path, output_dir=output_dir)
    root = store.run_dir(plan.output_dir, plan.name)
    done = store.completed_hashes(root)
    todo = [c for c in plan.runs if c.config_hash() not in done]
    console.print(
        escape(f"sweep '{plan.name}': {len(plan.runs)} runs ({len(plan.runs) - len(todo)} already complete), "
        f"{len(plan.skipped)} skipped by capabilities → {root}"),
        highlight=False,
    )
    for s in plan.skipped:
        console.print(escape(f"  skip {_label(s.config)}: {s.reason}"), highlight=False)
    if dry_run:
        for c in todo:
            console.print(escape(f"  would run {_label(c)} [{c.config_hash()}]"), highlight=False)
        return
    for _, err in check_output_dir(root):  # before any run, not after the first one
        raise err
    kwargs = {"address": ray_address} if ray_address else {}
    ex = make_executor(executor, **kwargs)
    failed = 0
    if sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as bar:  # fmt: skip
            task = bar.add_task(f"sweep {plan.name}", total=len(todo))
            for rec in ex.map(todo):
                failed += rec.status != "ok"
                bar.console.print(escape(_line(rec)), highlight=False)
                bar.advance(task)
    else:
        for i, rec in enumerate(ex.map(todo), 1):
            failed += rec.status != "ok"
            print(f"[{i}/{len(todo)}] {_line(rec)}", flush=True)
    console.print(escape(f"done: {len(todo) - failed} ok, {failed} failed; results in {root}"), highlight=False)


def _label(cfg) -> str:
    return f"{Path(cfg.model).name} {cfg.backend} {cfg.dtype} {cfg.device}"


def _line(rec) -> str:
    from e3bench.config.run import RunConfig

    cfg = RunConfig.model_validate(rec.config)
    if rec.status != "ok":
        return f"FAILED {_label(cfg)}: {rec.error}"
    g = rec.efficiency.generation[0] if rec.efficiency and rec.efficiency.generation else None
    speed = f"{g.decode_tokens_per_s.mean:.1f} decode tok/s (bs{g.batch_size})" if g and g.decode_tokens_per_s else ""
    return f"ok {_label(cfg)} {speed} in {rec.duration_s:.0f} s"
