"""Effectiveness inside a run: evaluate tasks on the runner's already-loaded backend, each task in
its own synchronized, metered window, so quality, speed and energy describe one configuration."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from e3bench.core.api import TaskScore
from e3bench.config.run import RunConfig
from e3bench.core.errors import E3Error
from e3bench.results.schema import TaskResult
from e3bench.core.timing import clock

if TYPE_CHECKING:
    from e3bench.bench.runner import Runner


def check_tasks(cfg: RunConfig) -> None:
    """Fail fast — before the model loads — on an unknown task name or a missing extra."""
    if not cfg.tasks:
        return
    if cfg.engine == "lm-eval":
        from e3bench.core.errors import require

        require("lm_eval", "lmeval", "--engine lm-eval")
        return
    from e3bench.evals.tasks import get_task, parse_task_spec

    for spec in cfg.tasks:
        name, options = parse_task_spec(spec)
        get_task(name, **options)


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _result(runner: Runner, score: TaskScore, engine: str, duration_s: float, reading, share: float) -> TaskResult:
    cfg = runner.cfg
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
    if reading is not None:
        res.energy = runner._energy_summary(reading, input_tokens=0, output_tokens=0, requests=score.n_items)
        if share != 1.0 and res.energy.get("gross_energy_j") is not None:
            res.energy["notes"] = list(res.energy.get("notes", [])) + [
                f"lm-eval ran {1 / share:.0f} tasks in one window; figures are for the whole window"
            ]
    if cfg.log_samples and score.samples:
        from e3bench.results import store

        res.samples_file = str(store.save_samples(cfg.output_dir, cfg.sweep, runner.run_id, score.task, score.samples))
    return res


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def run_tasks(runner: Runner, cfg: RunConfig) -> list[TaskResult]:
    backend = runner.backend
    assert backend is not None
    out: list[TaskResult] = []
    if cfg.engine == "lm-eval":
        from e3bench.evals.lmeval_engine import run_lm_eval, to_task_scores

        runner.progress(f"lm-eval engine: {', '.join(cfg.tasks)}")
        t0 = clock()
        results, reading = runner._metered(
            "tasks-lm-eval",
            lambda: run_lm_eval(backend, list(cfg.tasks), limit=cfg.limit, log_samples=cfg.log_samples,
                                random_seed=cfg.seed),  # fmt: skip
        )
        dur = clock() - t0
        scores = to_task_scores(results)
        for s in scores:
            out.append(_result(runner, s, "lm-eval", dur, reading, 1 / max(1, len(scores))))
        return out

    from e3bench.evals.tasks import get_task, parse_task_spec

    for spec in cfg.tasks:
        name, options = parse_task_spec(spec)
        task = get_task(name, **options)
        runner.progress(f"task {name}" + (f" (first {cfg.limit} items)" if cfg.limit else ""))
        t0 = clock()
        try:
            score, reading = runner._metered(
                f"task-{name}", lambda task=task: task.evaluate(backend, limit=cfg.limit, seed=cfg.seed)
            )
        except E3Error as exc:
            # one task that cannot run (no data, encoder-only model) must not lose the others
            runner.warnings.append(f"task {name} skipped: {exc.one_line()}")
            continue
        out.append(_result(runner, score, "e3bench", clock() - t0, reading, 1.0))
    return out
