"""lm-evaluation-harness as an engine: lm-eval's own tasks, run through OUR loaded backend.

``run_lm_eval(backend, ["hellaswag", "mmlu"], limit=100)`` builds :class:`E3BenchLM` (an
``lm_eval.api.model.LM``) around the backend the runner already loaded and timed, so the accuracy
lm-eval reports describes the same configuration (precision, device, backend) as the speed and
energy numbers. lm-eval is imported lazily; without it the user is told to install the ``lmeval``
extra.

* ``loglikelihood`` → ``backend.loglikelihood`` (for the PyTorch backend: e3bench's shared-context
  scorer, tokenized exactly as lm-eval's HF model).
* ``loglikelihood_rolling`` → ``backend.loglikelihood_rolling`` (lm-eval's rolling windows on
  every backend).
* ``generate_until`` → ``backend.encode_context`` (lm-eval's HF input: the tokenizer's BOS,
  left-truncated to ``max_length - max_gen_toks``; truncated requests are counted per task) and
  ``backend.generate`` (greedy unless asked, stopping at EOS and at ``until``), cut at ``until``
  as lm-eval; greedy requests with the same ``until`` and ``max_gen_toks`` in length-sorted
  batches of the run's eval batch setting (as e3bench's own generation tasks). lm-eval's HF model also adds the decoded EOS to ``until``; our backends stop at
  EOS and never put it in the text, so that adds nothing.

lm-eval's task catalogue (~14,700 configs, ~5 s to index) is indexed once per process and
include path (:func:`task_manager`). Standard errors: lm-eval computes none with
``bootstrap_iters=0``; :func:`run_lm_eval` gets its closed forms (``mean_stderr``,
``acc_all_stderr``, pooled over a group's subtasks) without the bootstrap, unless asked to
bootstrap. Only the :class:`~e3bench.core.api.Backend` contract is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from e3bench.core.api import Backend, GenParams, TaskScore
from e3bench.core.errors import E3Error, require
from e3bench.core.progress import Stage
from e3bench.core.quiet import bars_off


def _lm_eval():
    return require("lm_eval", "lmeval", "--engine lm-eval")


#: lm-eval results key under which :func:`run_lm_eval` adds ``{task: truncated generation contexts}``
TRUNCATED_KEY = "e3bench_truncated"
STDERR_CLOSED_FORM = "lm-eval's closed form (mean_stderr / acc_all_stderr; pooled over a group), no bootstrap"
_TASK_MANAGERS: dict[tuple, Any] = {}


def _include_state(include_path: str) -> tuple:
    """What a cached index of ``include_path`` depends on: the folder and its task files' names,
    sizes and modification times (an edited YAML is indexed again)."""
    root = Path(include_path).expanduser().resolve()
    files = sorted(
        (str(f.relative_to(root)), st.st_size, st.st_mtime_ns)
        for f in root.rglob("*")
        if f.suffix in (".yaml", ".yml", ".py") and f.is_file() and (st := f.stat())
    )
    return (str(root), tuple(files))


def task_manager(include_path: str | os.PathLike | None = None):
    """lm-eval's ``TaskManager`` (its task index), built once per process: the built-in
    catalogue alone, or with ``include_path``'s YAMLs when given (re-indexed when its files
    change). The first call also imports lm-eval's evaluator and torch, so that one-off work happens
    before (not inside) the first task's window. Raises E3Error when ``include_path`` is not a
    folder."""
    _lm_eval()
    key: tuple = ()
    if include_path is not None:
        if not Path(include_path).expanduser().is_dir():
            raise E3Error(
                f"lm-eval include path {include_path} is not a folder",
                "pass --include-path DIR, a folder of lm-eval task YAMLs",
            )
        key = _include_state(str(include_path))
    tm = _TASK_MANAGERS.get(key)
    if tm is None:
        # one-off imports, not a task's work: the evaluator (metrics, datasets) and torch (lm-eval
        # seeds it in every simple_evaluate)
        import lm_eval.evaluator  # noqa: F401
        import torch  # noqa: F401
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=key[0]) if key else TaskManager()
        _TASK_MANAGERS[key] = tm
    return tm


def check_task_names(tasks: Sequence[str], include_path: str | os.PathLike | None = None) -> None:
    """E3Error (with did-you-mean) for task names lm-eval does not know."""
    tm = task_manager(include_path)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        import difflib

        hints = []
        for t in unknown:
            near = difflib.get_close_matches(t, tm.all_tasks, n=3)
            hints.append(f"'{t}'" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        raise E3Error(
            f"lm-eval does not know task{'' if len(hints) == 1 else 's'} {', '.join(hints)}",
            "list lm-eval's tasks with `lm-eval ls tasks`, or pass --include-path DIR for your own YAMLs",
        )


@contextlib.contextmanager
def _inside_a_window(closed_form_stderr: bool) -> Iterator[bool]:
    """lm-eval adjusted to run inside a metered window, restored afterwards:

    * its environment report (``add_env_info``: ``pip list`` and ``nvidia-smi`` subprocesses,
      ~1.5 s per call) and git hash are skipped: e3bench's manifest records the environment,
      and they are not the task's work;
    * with ``closed_form_stderr``, its stderr step uses only the closed forms its
      ``stderr_for_metric`` knows (``mean`` → ``mean_stderr``, ``acc_all`` →
      ``acc_all_stderr``) and bootstraps nothing.

    Yields whether the stderr step was replaced (False on an lm-eval without that step)."""
    from lm_eval import evaluator, evaluator_utils
    from lm_eval.api import metrics

    saved = {(m, k): getattr(m, k) for m, k in ((evaluator, "add_env_info"), (evaluator, "get_git_commit_hash"),
                                                  (evaluator_utils, "stderr_for_metric")) if hasattr(m, k)}  # fmt: skip
    evaluator.add_env_info = lambda results: None
    evaluator.get_git_commit_hash = lambda: None
    patched = closed_form_stderr and (evaluator_utils, "stderr_for_metric") in saved
    if patched:
        closed = {metrics.mean: metrics.mean_stderr, metrics.acc_all: metrics.acc_all_stderr}
        evaluator_utils.stderr_for_metric = lambda metric, bootstrap_iters: closed.get(metric)
    try:
        yield patched
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def make_lm(backend: Backend, *, batch_size: int = 1, max_gen_toks: int = 256, progress: Stage | None = None):
    """An ``lm_eval.api.model.LM`` instance wrapping ``backend``; its ``truncated`` counts the
    generation contexts cut to fit the context, per lm-eval task name. ``progress`` counts the
    requests lm-eval hands over (its total grows with each call) as they are answered."""
    _lm_eval()
    from lm_eval.api.model import LM

    from e3bench.evals.tasks.base import in_pieces

    stage = progress or Stage("")

    def more(n: int) -> Stage:
        stage.update(total=(stage.total or 0) + n)
        return stage

    class E3BenchLM(LM):
        """lm-eval model backed by an e3bench Backend."""

        def __init__(self) -> None:
            super().__init__()
            self.backend = backend
            self.batch_size = batch_size
            self.max_gen_toks = max_gen_toks
            self.truncated: dict[str, int] = {}

        # ---- chat template (--chat-template: lm-eval's apply_chat_template)
        def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
            return self.backend.tokenizer.apply_chat_template(
                chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
            )

        @property
        def tokenizer_name(self) -> str:
            return str(getattr(self.backend.tokenizer, "name_or_path", "") or "").replace("/", "__")

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return getattr(self.backend.tokenizer, "chat_template", None) if chat_template else None

        # ---- log-likelihood
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            pairs = [tuple(r.args) for r in requests]
            out = in_pieces(self.backend, [[p] for p in pairs], self.backend.loglikelihood, more(len(pairs)))
            res = [(float(o.logprob), bool(o.is_greedy)) for o in out]
            for (ctx, cont), r in zip(pairs, res, strict=True):
                self.cache_hook.add_partial("loglikelihood", (ctx, cont), r)
            return res

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            texts = [[r.args[0]] for r in requests]
            out = in_pieces(self.backend, texts, self.backend.loglikelihood_rolling, more(len(texts)))
            return [float(o.logprob) for o in out]

        # ---- generation
        def generate_until(self, requests, disable_tqdm: bool = False):
            """Greedy requests with the same stop strings and token limit go to the backend in
            batches (:func:`~e3bench.evals.tasks.generative.generate_texts`: length-sorted, the
            run's eval batch setting, text identical to one at a time); sampled ones one by one."""
            from e3bench.evals.tasks.generative import cut_at_stop, generate_texts

            results: list[str] = [""] * len(requests)
            more(len(requests))
            greedy: dict[tuple, list[int]] = {}
            parsed = []
            for i, r in enumerate(requests):
                context, gen_kwargs = r.args
                kwargs = dict(gen_kwargs or {})
                until = kwargs.pop("until", None) or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
                do_sample = bool(kwargs.pop("do_sample", False))
                temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
                do_sample = do_sample and temperature != 0.0
                top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
                parsed.append((context, until, max_new, do_sample, temperature, top_p))
                if not do_sample:
                    greedy.setdefault((tuple(until), max_new), []).append(i)
            for (until, max_new), idx in greedy.items():
                texts, cut = generate_texts(self.backend, [parsed[i][0] for i in idx], max_new_tokens=max_new,
                                            stop=until, progress=stage)  # fmt: skip
                for i, text, c in zip(idx, texts, cut, strict=True):
                    results[i] = text
                    self._count_cut(requests[i], c)
            for i, (context, until, max_new, do_sample, temperature, top_p) in enumerate(parsed):
                if not do_sample:
                    continue
                params = GenParams(max_new_tokens=max_new, ignore_eos=False, do_sample=True,
                                   temperature=temperature, top_p=top_p, stop=tuple(until))  # fmt: skip
                ids, c = self.backend.encode_context(context, max_new_tokens=max_new)
                self._count_cut(requests[i], c)
                (gen,) = self.backend.generate([ids], params)
                results[i] = cut_at_stop(gen.text, until)
                stage.advance()
            for r, text in zip(requests, results, strict=True):
                self.cache_hook.add_partial("generate_until", tuple(r.args), text)
            return results

        def _count_cut(self, request, cut: bool) -> None:
            task = str(getattr(request, "task_name", "") or "")
            self.truncated[task] = self.truncated.get(task, 0) + int(cut)

    return E3BenchLM()


#: lm-eval modules that draw tqdm bars themselves (building contexts, checking a cache)
_BARS = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.evaluator")


def run_lm_eval(
    backend: Backend,
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    log_samples: bool = False,
    include_path: str | os.PathLike | None = None,
    random_seed: int = 0,
    bootstrap_iters: int = 0,
    batch_size: int = 1,
    progress: Stage | None = None,
    **simple_evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on ``tasks`` with ``backend``; returns lm-eval's results
    dict (``results``, ``samples`` when ``log_samples``, ``configs``, ...) plus
    :data:`TRUNCATED_KEY`.

    ``include_path``: a folder of extra task YAMLs (e.g. local-data tasks with ``dataset_path:
    json``). ``bootstrap_iters`` 0: standard errors from lm-eval's closed forms only (metrics
    that need a bootstrap get none); > 0: lm-eval's own bootstrap with that many draws.
    ``progress`` counts the requests as the backend answers them; lm-eval's own bars (and those
    of ``datasets`` and the hub) are off meanwhile (:func:`~e3bench.core.quiet.bars_off`).
    Raises E3Error for task names lm-eval does not know.
    """
    lm_eval = _lm_eval()
    check_task_names(tasks, include_path)
    lm = make_lm(backend, batch_size=batch_size, progress=progress)
    with _inside_a_window(closed_form_stderr=bootstrap_iters <= 0) as patched, bars_off(*_BARS):
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=log_samples,
            task_manager=task_manager(include_path),
            random_seed=random_seed,
            numpy_random_seed=random_seed,
            torch_random_seed=random_seed,
            fewshot_random_seed=1234,
            bootstrap_iters=1 if patched else bootstrap_iters,
            **simple_evaluate_kwargs,
        )
    out[TRUNCATED_KEY] = dict(lm.truncated)
    out["e3bench_stderr"] = STDERR_CLOSED_FORM if patched else f"lm-eval bootstrap_iters={bootstrap_iters}"
    return out


def to_task_scores(results: dict[str, Any]) -> list[TaskScore]:
    """lm-eval's results dict → one :class:`TaskScore` per task or group (metrics are the
    ``metric,filter`` keys, without the suffix when the filter is ``none``; ``sample_len``,
    ``alias`` and other bookkeeping are not metrics; an ``N/A`` stderr is left out).
    ``truncated_items`` is counted for generation tasks only."""
    scores: list[TaskScore] = []
    samples = results.get("samples") or {}
    n_samples = results.get("n-samples") or {}
    configs = results.get("configs") or {}
    truncated = results.get(TRUNCATED_KEY) or {}
    for task, vals in (results.get("results") or {}).items():
        metrics: dict[str, float] = {}
        stderr: dict[str, float] = {}
        for key, value in vals.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, flt = key.partition(",")
            is_se = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if is_se else metric
            name = base if flt in ("", "none") else f"{base},{flt}"
            (stderr if is_se else metrics)[name] = float(value)
        n = int((n_samples.get(task) or {}).get("effective", 0) or vals.get("sample_len") or 0)
        n = n or len(samples.get(task, []))
        generates = (configs.get(task) or {}).get("output_type") == "generate_until"
        details: dict[str, Any] = {"engine": "lm-eval", "lm_eval_version": _version()}
        if task in (results.get("n-shot") or {}):
            details["num_fewshot"] = results["n-shot"][task]
        if results.get("e3bench_stderr"):
            details["stderr"] = results["e3bench_stderr"]
        scores.append(
            TaskScore(
                task=task,
                metrics=metrics,
                stderr=stderr,
                n_items=n,
                samples=list(samples[task]) if task in samples else None,
                details=details,
                truncated_items=int(truncated.get(task, 0)) if generates else None,
            )
        )
    return scores


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:  # pragma: no cover
        return "unknown"
