"""``e3bench sweep``: plan → skip completed → execute (claiming each run) → progress lines →
summary; exits 1 when a run failed (or one of its batch sizes could not be measured), naming
each failed configuration and why."""

from __future__ import annotations

from rich.markup import escape  # labels, reasons and pip lines ("e3bench[quant]") are text, not markup

import sys
from pathlib import Path
from typing import Optional

import typer

from e3bench.cli import common
from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error

#: exit status of a sweep in which at least one run failed (user errors before any run: 2)
EXIT_RUNS_FAILED = 1


def sweep(
    sweep_file: Path = typer.Argument(..., help="YAML sweep file (name, base, grid)"),
    executor: str = typer.Option("local", "--executor", help="local (a subprocess per run) | ray | a plugin"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="default: the file's or results/"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)"),
    timeout_s: Optional[float] = typer.Option(
        None, "--timeout-s", help="seconds a run may take before it is killed and recorded as failed "
        "(0: no limit; default: the sweep file's timeout_s, else 14400)", show_default=False,
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, run nothing"),
) -> None:
    """Run a grid of configurations; resumable (completed runs, by config hash, are skipped).

    Several sweeps may share one output folder: each run is claimed first, so every
    configuration runs once. Exits 1 when a run failed (each failed configuration is listed).
    """
    try:
        failed = run_sweep(sweep_file, executor=executor, output_dir=output_dir, ray_address=ray_address,
                           dry_run=dry_run, console=console(), timeout_s=timeout_s)  # fmt: skip
    except E3Error as exc:
        fail(exc)
    if failed:
        raise typer.Exit(EXIT_RUNS_FAILED)


def _timeout(cli: float | None, from_file: float | None) -> float | None:
    """The run timeout: ``--timeout-s``, else the file's ``timeout_s``, else the executor default
    (None); 0 means no limit. A negative or non-finite value is an E3Error."""
    import math

    if cli is not None and (not math.isfinite(cli) or cli < 0):
        raise E3Error(f"--timeout-s must be a number of seconds ≥ 0 (got {cli})", "e.g. --timeout-s 3600 (0: no limit)")
    return cli if cli is not None else from_file


def run_sweep(path: Path, *, executor: str, output_dir: str | None, ray_address: str | None,
              dry_run: bool, console, timeout_s: float | None = None) -> list[str]:  # fmt: skip
    """Expand ``path``, print the plan, and run what is not complete yet with ``executor``.

    Every config problem and an unknown executor are reported before anything runs (E3Error).
    Returns one ``"<label>: <reason>"`` line per failed run (empty: none failed).
    """
    from e3bench.config.validate import check_output_dir
    from e3bench.core import registry
    from e3bench.results import store
    from e3bench.results.labels import distinct_labels
    from e3bench.sweep.claims import Held
    from e3bench.sweep.executors import make_executor
    from e3bench.sweep.plan import expand

    registry.executors.canonical(executor)  # unknown executor: fail before planning
    missing = None if dry_run else registry.executors.missing_extra(executor)
    if missing is not None:  # e.g. --executor ray without ray: say so before anything runs
        raise missing
    plan = expand(path, output_dir=output_dir)
    timeout = _timeout(timeout_s, plan.timeout_s)
    every = plan.runs + [s.config for s in plan.skipped]
    labels = dict(zip((c.config_hash() for c in every), distinct_labels(every), strict=True))
    root = store.run_dir(plan.output_dir, plan.name)
    done = store.completed_hashes(root)
    todo = [c for c in plan.runs if c.config_hash() not in done]
    say = lambda text: console.print(escape(text), highlight=False, soft_wrap=True)  # noqa: E731  (one line each)
    say(f"sweep '{plan.name}': {len(plan.runs)} runs ({len(plan.runs) - len(todo)} already complete), "
        f"{len(plan.skipped)} skipped by capabilities → {root}")  # fmt: skip
    for s in plan.skipped:
        say(f"  skip {labels[s.config.config_hash()]}: {s.reason}")
    if dry_run:
        for c in todo:
            say(f"  would run {labels[c.config_hash()]} [{c.config_hash()}]")
        return []
    for _, err in check_output_dir(root):  # before any run, not after the first one
        raise err
    common.doing("sweep", what=f"sweep '{plan.name}'", results=str(root))  # for the Ctrl-C line
    common.step(f"{len(todo)} configuration(s) to run, 0 finished")
    kwargs = {"address": ray_address} if ray_address else {}
    if timeout is not None:
        kwargs["timeout_s"] = timeout
    ex = make_executor(executor, **kwargs)
    failed: list[str] = []
    held: list[str] = []
    finished: list[str] = []

    def line(item) -> str:
        label = labels.get(_hash(item), "?")
        if isinstance(item, Held):
            held.append(label)
            return f"skip {label}: {item.by}"
        if item.status != "ok":
            failed.append(f"{label}: {item.error}")
        for fb in item.efficiency.failed_batches if item.efficiency else []:  # the smaller sizes are kept
            failed.append(f"{label}: batch size {fb.batch_size} not measured: {fb.error}")
        finished.append(label)
        common.step(f"{len(todo)} configuration(s) to run, {len(finished)} finished (last: {label})")
        return _line(item, label)

    if sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as bar:  # fmt: skip
            task = bar.add_task(f"sweep {plan.name}", total=len(todo))
            for item in ex.map(todo):
                bar.console.print(escape(line(item)), highlight=False, soft_wrap=True)
                bar.advance(task)
    else:
        for i, item in enumerate(ex.map(todo), 1):
            print(f"[{i}/{len(todo)}] {line(item)}", flush=True)
    ran = len(todo) - len(held)
    say(f"done: {ran - len(failed)} ok, {len(failed)} failed"
        + (f", {len(held)} left to another process" if held else "") + f"; results in {root}")  # fmt: skip
    if failed:
        say(f"failed runs ({len(failed)}; rerun the sweep to retry them):")
        for f in failed:
            say(f"  {f}")
    return failed


def _hash(item) -> str:
    from e3bench.sweep.claims import Held

    return item.config.config_hash() if isinstance(item, Held) else item.config_hash


def _line(rec, label: str) -> str:
    if rec.status != "ok":
        return f"FAILED {label}: {rec.error}"
    g = rec.efficiency.generation[0] if rec.efficiency and rec.efficiency.generation else None
    speed = f"{g.decode_tokens_per_s.mean:.1f} decode tok/s (bs{g.batch_size})" if g and g.decode_tokens_per_s else ""
    return f"ok {label} {speed} in {rec.duration_s:.0f} s"
