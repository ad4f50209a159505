"""Effectiveness inside a run: evaluate tasks on an already-loaded backend, each task in its own
synchronized, metered window (:class:`~e3bench.energy.window.MeteredWindow`), so quality, speed
and energy describe one configuration. The engine takes the window, never the runner."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from e3bench.energy.window import Metered, MeteredWindow
from e3bench.core.api import Backend, TaskScore
from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error
from e3bench.results.schema import TaskResult


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _result(
    window: MeteredWindow, cfg: RunConfig, run_id: str, score: TaskScore, engine: str, metered: Metered, share: float
) -> TaskResult:
    """One task's record. ``share`` < 1: lm-eval ran several tasks in one window, so time and
    energy are the whole window's, and both say so."""
    duration_s = metered.elapsed_s
    res = TaskResult(
        task=score.task,
        engine=engine,
        metrics=_finite(score.metrics),
        stderr=_finite(score.stderr),
        n_items=score.n_items,
        duration_s=duration_s,
        examples_per_s=score.n_items / duration_s if duration_s > 0 else 0.0,
        details={k: v for k, v in score.details.items() if _jsonable(v)},
    )
    energy, cross = window.summaries(metered, requests=score.n_items)
    if share != 1.0:
        note = f"lm-eval ran {1 / share:.0f} tasks in one window; time and energy are for the whole window"
        res.details["timing_note"] = note
        if energy.gross_energy_j is not None:
            energy = energy.model_copy(update={"notes": [*energy.notes, note]})
    res.energy, res.energy_cross_check = energy, cross
    if cfg.log_samples and score.samples:
        from e3bench.results import store

        res.samples_file = str(store.save_samples(cfg.output_dir, cfg.sweep, run_id, score.task, score.samples))
    return res


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def run_tasks(
    backend: Backend,
    window: MeteredWindow,
    cfg: RunConfig,
    *,
    run_id: str,
    progress: Callable[[str], None] = lambda _msg: None,
    warnings: list[str] | None = None,
) -> list[TaskResult]:
    """Evaluate ``cfg.tasks`` on the loaded ``backend``, each in its own metered window
    (lm-eval: all tasks in one window). A task that cannot run (no data, wrong architecture)
    adds a line to ``warnings`` and the others still run. ``run_id`` names the samples files
    (``--log-samples``; the store owns their layout)."""
    warnings = warnings if warnings is not None else []
    out: list[TaskResult] = []
    if cfg.engine == "lm-eval":
        from e3bench.evals.lmeval_engine import run_lm_eval, to_task_scores

        progress(f"lm-eval engine: {', '.join(cfg.tasks)}")
        metered = window.run(
            "tasks-lm-eval",
            lambda: run_lm_eval(backend, list(cfg.tasks), limit=cfg.limit, log_samples=cfg.log_samples,
                                random_seed=cfg.seed),  # fmt: skip
        )
        scores = to_task_scores(metered.result)
        for s in scores:
            out.append(_result(window, cfg, run_id, s, "lm-eval", metered, 1 / max(1, len(scores))))
        return out

    from e3bench.evals.tasks import get_task, parse_task_spec

    for spec in cfg.tasks:
        name, options = parse_task_spec(spec)
        task = get_task(name, **options)
        progress(f"task {name}" + (f" (first {cfg.limit} items)" if cfg.limit else ""))
        try:
            metered = window.run(
                f"task-{name}", lambda task=task: task.evaluate(backend, limit=cfg.limit, seed=cfg.seed)
            )
        except E3Error as exc:
            # one task that cannot run (no data, encoder-only model) must not lose the others
            warnings.append(f"task {name} skipped: {exc.one_line()}")
            continue
        out.append(_result(window, cfg, run_id, metered.result, "e3bench", metered, 1.0))
    return out
