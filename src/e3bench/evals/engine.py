"""Effectiveness inside a run: evaluate tasks on an already-loaded backend, each task in its own
synchronized, metered window (:class:`~e3bench.energy.window.MeteredWindow`), so quality, speed
and energy describe one configuration. The engine takes the window, never the runner.

Both engines give every task its own window: e3bench runs one task per window, and the lm-eval
engine runs one ``simple_evaluate`` per requested task (lm-eval's task index is built once per
process, so this costs no re-indexing). Only the subtasks of an lm-eval group (or tag), which
lm-eval interleaves inside one window, share it: the group's own row gets the window, each
subtask's time is its share of the window by item count, labelled so in ``duration_basis``.
Every task is recorded under a distinct name (a repeated name gets ``#2``, ``#3``, ...), so
records and ``--log-samples`` files of two tasks never collide."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from e3bench.config.run import RunConfig
from e3bench.config.validate import Problem, raise_problems
from e3bench.core.api import Backend, TaskScore
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.progress import Reporter, accepts, as_reporter
from e3bench.energy.window import Metered, MeteredWindow
from e3bench.results.schema import TaskResult

OWN_WINDOW = "the task's own metered window"


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _result(
    window: MeteredWindow,
    cfg: RunConfig,
    run_id: str,
    score: TaskScore,
    engine: str,
    metered: Metered,
    *,
    share: tuple[int, int, str] | None = None,
) -> TaskResult:
    """One task's record. ``share`` = (items of this task, items in the window, group name):
    the task ran inside a group's window, so its time is apportioned by items and its energy
    stays with the group's row."""
    duration_s, basis = metered.elapsed_s, OWN_WINDOW
    if share is not None:
        n, total, group = share
        duration_s = metered.elapsed_s * n / total if total else 0.0
        basis = (
            f"apportioned: {n} of the {total} items of lm-eval's one window for '{group}' (lm-eval "
            f"interleaves a group's subtasks); energy is on the '{group}' row"
        )
    res = TaskResult(
        task=score.task,
        engine=engine,
        metrics=_finite(score.metrics),
        stderr=_finite(score.stderr),
        n_items=score.n_items,
        duration_s=duration_s,
        duration_basis=basis,
        examples_per_s=score.n_items / duration_s if duration_s > 0 else 0.0,
        details={k: v for k, v in score.details.items() if _jsonable(v)},
        truncated_items=score.truncated_items,
        data_source=score.data_source,
        data_sha256=score.data_sha256,
    )
    if share is None:
        res.energy, res.energy_cross_check = window.summaries(metered, requests=score.n_items)
    if cfg.log_samples and score.samples:
        from e3bench.results import store

        res.samples_file = str(store.save_samples(cfg.output_dir, cfg.sweep, run_id, score.task, score.samples))
    return res


def _distinct(score: TaskScore, seen: dict[str, int]) -> TaskScore:
    """``score`` under a name no earlier task of the run has (``name#2``, ``name#3``, ...)."""
    k = seen.get(score.task, 0) + 1
    seen[score.task] = k
    if k > 1:
        score.details["requested_as"] = score.task
        score.task = f"{score.task}#{k}"
    return score


def _lm_eval_results(
    window: MeteredWindow, cfg: RunConfig, run_id: str, name: str, metered: Metered, seen: dict[str, int]
) -> list[TaskResult]:
    """The rows of one requested lm-eval task: the task itself (its own window), or a group /
    tag and its subtasks (the group's row gets the window; subtasks an apportioned time)."""
    from e3bench.evals.lmeval_engine import to_task_scores

    scores = to_task_scores(metered.result)
    if len(scores) == 1:
        return [_result(window, cfg, run_id, _distinct(scores[0], seen), "lm-eval", metered)]
    groups = set((metered.result.get("group_subtasks") or {}).keys())
    leaves = [s for s in scores if s.task not in groups]
    total = sum(s.n_items for s in leaves)
    out = []
    for s in scores:
        if s.task == name:
            out.append(_result(window, cfg, run_id, _distinct(s, seen), "lm-eval", metered))
        else:
            share = (s.n_items, total, name)
            out.append(_result(window, cfg, run_id, _distinct(s, seen), "lm-eval", metered, share=share))
    return out


def preflight(cfg: RunConfig, architecture: str | None = None) -> None:
    """What only the engine can check, before the model loads (E3Error naming the task): lm-eval's
    task names (with did-you-mean; its catalogue is indexed once per process, so the run reuses
    it), and for e3bench tasks that read their items without a model (``items`` or
    ``load_rows``), that the data resolves and validates and the options' values exist (e.g. an
    MMLU subject) — found after the speed run, such a task was skipped with exit 0. With the
    ``architecture`` config.json tells (``None``: unknown before the load), a task that needs a
    language-model head on an encoder-only model is refused here (one line per task), not
    skipped after the model loaded and the speed was measured."""
    from e3bench.evals.tasks import get_task, parse_task_spec
    from e3bench.evals.tasks.base import lm_head_problem

    if cfg.engine == "lm-eval" and cfg.tasks:
        from e3bench.evals.lmeval_engine import check_task_names

        check_task_names(cfg.tasks, cfg.include_path)
        lm_head = [lm_head_problem(t, frozenset({"loglikelihood"}), architecture) for t in cfg.tasks]
        raise_problems([Problem("--tasks", e.problem, e.fix) for e in lm_head if e is not None])
        return
    tasks = [(spec, *parse_task_spec(spec)) for spec in cfg.tasks]
    lm_head = [lm_head_problem(name, getattr(get_task(name, **opts), "requires", frozenset()), architecture) for _, name, opts in tasks]
    raise_problems([Problem("--tasks", e.problem, e.fix) for e in lm_head if e is not None])
    for _, name, options in tasks:
        task = get_task(name, **options)
        try:
            if callable(getattr(task, "items", None)):
                task.items(limit=cfg.limit, seed=cfg.seed)
            elif callable(getattr(task, "load_rows", None)):
                task.load_rows()
        except E3Error as exc:
            raise E3Error(f"task {name}: {exc.problem}", exc.fix) from None


def run_tasks(
    backend: Backend,
    window: MeteredWindow,
    cfg: RunConfig,
    *,
    run_id: str,
    progress: Reporter | Callable[[str], None] | None = None,
    warnings: list[str] | None = None,
) -> list[TaskResult]:
    """Evaluate ``cfg.tasks`` on the loaded ``backend``, each in its own metered window. A task
    that cannot run (no data, wrong architecture) adds a line to ``warnings`` and the others
    still run. ``run_id`` names the samples files (``--log-samples``; the store owns their
    layout). Each task is a stage of ``progress`` (items done of its items; lm-eval: requests),
    opened before its window and closed after it."""
    reporter = as_reporter(progress)
    warnings = warnings if warnings is not None else []
    out: list[TaskResult] = []
    seen: dict[str, int] = {}
    _set_score_batch(backend, cfg, warnings)
    if cfg.chat_template:  # both engines: the model's tokenizer must have one, before any task runs
        from e3bench.evals.chat import ChatTemplated, template_of

        template_of(backend)
    if cfg.engine == "lm-eval":
        from e3bench.evals.lmeval_engine import check_task_names, run_lm_eval

        check_task_names(cfg.tasks, cfg.include_path)  # every name, before the first task runs
        chat = {"apply_chat_template": True} if cfg.chat_template else {}
        for name in cfg.tasks:
            label = f"lm-eval task {name}" + (f" (first {count(cfg.limit, 'item')})" if cfg.limit else "")
            _reset_batches(backend)
            with reporter.stage(label, unit="requests") as st:
                metered = window.run(
                    f"task-lm-eval-{name}",
                    lambda name=name, st=st: run_lm_eval(
                        backend, [name], limit=cfg.limit, num_fewshot=cfg.num_fewshot, include_path=cfg.include_path,
                        log_samples=cfg.log_samples, random_seed=cfg.seed, progress=st, **chat,
                    ),
                )  # fmt: skip
            out += _with_batches(_lm_eval_results(window, cfg, run_id, name, metered, seen), backend)
        return out

    from e3bench.evals.tasks import get_task, parse_task_spec

    inner = backend  # holds the scoring batch sizes; the chat wrapper only rewrites prompts
    if cfg.chat_template:
        backend = ChatTemplated(backend)  # type: ignore[assignment]
    for spec in cfg.tasks:
        name, options = parse_task_spec(spec)
        task = get_task(name, **options)
        label = f"task {name}" + (f" (first {count(cfg.limit, 'item')})" if cfg.limit else "")
        _reset_batches(inner)
        try:
            with reporter.stage(label, unit="items") as st:
                shown = {"progress": st} if accepts(task.evaluate, "progress") else {}  # a plugin may not take it
                metered = window.run(
                    f"task-{name}", lambda task=task, shown=shown: task.evaluate(backend, limit=cfg.limit, seed=cfg.seed, **shown)
                )
        except E3Error as exc:
            # one task that cannot run (no data, encoder-only model) must not lose the others
            warnings.append(f"task {name} skipped: {exc.one_line()}")
            continue
        out += _with_batches([_result(window, cfg, run_id, _distinct(metered.result, seen), "e3bench", metered)], inner)
    return out


def _set_score_batch(backend: Backend, cfg: RunConfig, warnings: list[str]) -> None:
    """Hand ``--score-batch-size`` to the backend (a plugin backend without the setting: a
    warning says it was not applied)."""
    if hasattr(backend, "score_batch_size"):
        backend.score_batch_size = cfg.score_batch_size  # type: ignore[attr-defined]
    elif cfg.score_batch_size is not None:
        warnings.append(f"--score-batch-size {cfg.score_batch_size} not applied: the {backend.name} backend "
                        "has no scoring batch size")  # fmt: skip


def _reset_batches(backend: Backend) -> None:
    if isinstance(getattr(backend, "score_batches_used", None), dict):
        backend.score_batches_used = {}  # type: ignore[attr-defined]


def _with_batches(results: list[TaskResult], backend: Backend) -> list[TaskResult]:
    """``results`` with ``details["score_batch_size"]``: how each scoring batch size of the task
    was chosen (``auto: 64 for inputs ≤ 128 tokens = ...``), when the task scored."""
    used = getattr(backend, "score_batches_used", None)
    if isinstance(used, dict) and used:
        for r in results:
            r.details["score_batch_size"] = sorted(used)
    return results
