"""``e3bench sweep``: plan → skip completed → execute (claiming each run) → one result line per
run on stdout, progress on stderr (:mod:`e3bench.cli.progress`: runs done / total with an ETA
from the finished runs' durations, and the configuration running now with its current step) →
summary; exits 1 when a run failed (or one of its batch sizes could not be measured), naming
each failed configuration and why."""

from __future__ import annotations

from rich.markup import escape  # labels, reasons and pip lines ("e3bench[quant]") are text, not markup

import time
from pathlib import Path
from typing import Optional

import typer

from e3bench.cli import common
from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.progress import Reporter, Stage, eta_from_durations

#: exit status of a sweep in which at least one run failed (user errors before any run: 2)
EXIT_RUNS_FAILED = 1
#: configurations shown as running at once (ray takes every configuration at the start)
SHOWN_RUNNING = 3


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
        from e3bench.cli.progress import reporter

        failed = run_sweep(sweep_file, executor=executor, output_dir=output_dir, ray_address=ray_address,
                           dry_run=dry_run, console=console(), timeout_s=timeout_s, progress=reporter())  # fmt: skip
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
              dry_run: bool, console, timeout_s: float | None = None, progress: Reporter | None = None) -> list[str]:  # fmt: skip
    """Expand ``path``, print the plan, and run what is not complete yet with ``executor``.

    Every config problem and an unknown executor are reported before anything runs (E3Error).
    Returns one ``"<label>: <reason>"`` line per failed run (empty: none failed). ``progress``
    shows the runs (default: silent).
    """
    from e3bench.config.validate import check_output_dir
    from e3bench.core import registry
    from e3bench.results import store
    from e3bench.results.labels import distinct_labels
    from e3bench.sweep.claims import Held
    from e3bench.sweep.executors import make_executor
    from e3bench.sweep.plan import expand

    from e3bench.sweep import architectures

    registry.executors.canonical(executor)  # unknown executor: fail before planning
    missing = None if dry_run else registry.executors.missing_extra(executor)
    if missing is not None:  # e.g. --executor ray without ray: say so before anything runs
        raise missing
    arch = architectures.read(path, output_dir=output_dir)  # None: not an architecture comparison
    plan = expand(path, output_dir=output_dir, extra=arch.grid_extra if arch else None)
    tunes = architectures.finetune_configs(arch, architectures.models_of(plan.runs)) if arch else []
    timeout = _timeout(timeout_s, plan.timeout_s)
    every = plan.runs + [s.config for s in plan.skipped]
    labels = dict(zip((c.config_hash() for c in every), distinct_labels(every), strict=True))
    root = store.run_dir(plan.output_dir, plan.name)
    done = store.completed_hashes(root)
    todo = [c for c in plan.runs if c.config_hash() not in done]
    say = lambda text: console.print(escape(text), highlight=False, soft_wrap=True)  # noqa: E731  (one line each)
    say(f"sweep '{plan.name}': {count(len(plan.runs), 'run')} ({len(plan.runs) - len(todo)} already complete), "
        f"{len(plan.skipped)} skipped by capabilities → {root}")  # fmt: skip
    for s in plan.skipped:
        say(f"  skip {labels[s.config.config_hash()]}: {s.reason}")
    if dry_run:
        for c in todo:
            say(f"  would run {labels[c.config_hash()]} [{c.config_hash()}]")
        for t in tunes:
            say(f"  would fine-tune {t.model} on {t.task} ({t.mode}, {t.max_steps} steps) [{t.config_hash()}]")
        return []
    for _, err in check_output_dir(root):  # before any run, not after the first one
        raise err
    common.doing("sweep", what=f"sweep '{plan.name}'", results=str(root))  # for the Ctrl-C line
    common.step(f"{count(len(todo), 'configuration')} to run, 0 finished")
    kwargs = {"address": ray_address} if ray_address else {}
    if timeout is not None:
        kwargs["timeout_s"] = timeout
    shown = _Shown(progress, labels)
    if registry.executors.canonical(executor) == "local":
        kwargs["on_step"] = shown.step  # the running configuration's steps, as it reports them
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
        common.step(f"{count(len(todo), 'configuration')} to run, {len(finished)} finished (last: {label})")
        return _line(item, label)

    with shown.sweep(f"sweep {plan.name}", len(todo)):
        for i, item in enumerate(ex.map(_Announced(todo, shown.started)), 1):
            text = line(item)
            shown.finished(item)
            shown.progress.above(lambda i=i, text=text: say(f"[{i}/{len(todo)}] {text}"))
    ran = len(todo) - len(held)
    if arch:  # then every model on every task, and the record that ties them together
        tuned = architectures.run_finetunes(arch, tunes, say=say, progress=progress)
        ran, failed = ran + len(tunes), failed + tuned
        say(f"architecture comparison: {architectures.write_record(arch, plan.runs, tunes)}")
    say(f"done: {ran - len(failed)} ok, {len(failed)} failed"
        + (f", {len(held)} left to another process" if held else "") + f"; results in {root}")  # fmt: skip
    if failed:
        say(f"failed runs ({len(failed)}; rerun the sweep to retry them):")
        for f in failed:
            say(f"  {f}")
    return failed


class _Announced(list):
    """The configurations to run, as a list; iterating over them (what an executor does when it
    takes the next one) first tells ``on_start``."""

    def __init__(self, configs, on_start) -> None:
        super().__init__(configs)
        self.on_start = on_start

    def __iter__(self):
        for cfg in super().__iter__():
            self.on_start(cfg)
            yield cfg


class _Shown:
    """What a sweep shows while it runs: one stage for the sweep (runs done / total; ETA = the
    mean time between finished runs × the runs left, counted down from the last one), and one
    per configuration running now, named by its label, with its current step as its detail."""

    def __init__(self, progress: Reporter | None, labels: dict[str, str]) -> None:
        self.progress = progress or Reporter()
        self.labels = labels
        self.total = 0
        self.done = 0
        self.gaps: list[float] = []  # seconds between finished runs (a run's duration, one at a time)
        self.last = time.monotonic()
        self.stage: Stage | None = None
        self.running: dict[str, Stage] = {}

    def sweep(self, label: str, total: int) -> Stage:
        """The sweep's stage (a context manager)."""
        self.total = total
        self.last = time.monotonic()
        self.stage = self.progress.stage(label, total=total, unit="runs")
        return self.stage

    def started(self, cfg) -> None:
        """``cfg`` was handed to the executor: show it as running."""
        label = self.labels.get(cfg.config_hash(), "?")
        if len(self.running) >= SHOWN_RUNNING:  # an executor that takes them all at once (ray)
            self.running[cfg.config_hash()] = Stage(label)
            return
        st = self.progress.stage(f"run {label}", unit="steps")
        mean = sum(self.gaps) / len(self.gaps) if self.gaps else None
        if mean is not None:
            st.update(eta_s=mean)
        self.running[cfg.config_hash()] = st
        common.step(f"{count(self.total, 'configuration')} to run, {self.done} finished, running {label}")  # for Ctrl-C

    def step(self, text: str) -> None:
        """The running configuration reported ``text`` (one at a time: the local executor)."""
        for st in self.running.values():
            st.update(detail=text)

    def finished(self, item) -> None:
        """A run's record (or Held) came back: count it and re-estimate the ETA."""
        st = self.running.pop(_hash(item), None)
        if st is not None:
            st.close()
        from e3bench.sweep.claims import Held

        now = time.monotonic()
        if isinstance(item, Held):
            self.total -= 1  # another process runs it: not ours to wait for
        else:
            self.gaps.append(now - self.last)
            self.done += 1
        self.last = now
        if self.stage is not None:
            eta = eta_from_durations(self.gaps, self.total - self.done)
            self.stage.update(completed=self.done, total=self.total, eta_s=eta)


def _hash(item) -> str:
    from e3bench.sweep.claims import Held

    return item.config.config_hash() if isinstance(item, Held) else item.config_hash


def _line(rec, label: str) -> str:
    if rec.status != "ok":
        return f"FAILED {label}: {rec.error}"
    g = rec.efficiency.generation[0] if rec.efficiency and rec.efficiency.generation else None
    speed = f"{g.decode_tokens_per_s.mean:.1f} decode tok/s (bs{g.batch_size})" if g and g.decode_tokens_per_s else ""
    return f"ok {label} {speed} in {rec.duration_s:.0f} s"
