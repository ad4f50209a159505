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
* ``generate_until`` → ``backend.generate`` (greedy unless asked, stopping at EOS and at
  ``until``), cut at ``until`` as lm-eval. lm-eval's HF model also adds the decoded EOS to
  ``until``; our backends stop at EOS and never put it in the text, so that adds nothing.

Only the :class:`~e3bench.core.api.Backend` contract is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from e3bench.core.api import Backend, GenParams, TaskScore
from e3bench.core.errors import E3Error, require


def _lm_eval():
    return require("lm_eval", "lmeval", "--engine lm-eval")


def make_lm(backend: Backend, *, batch_size: int = 1, max_gen_toks: int = 256):
    """An ``lm_eval.api.model.LM`` instance wrapping ``backend``."""
    _lm_eval()
    from lm_eval.api.model import LM

    class E3BenchLM(LM):
        """lm-eval model backed by an e3bench Backend."""

        def __init__(self) -> None:
            super().__init__()
            self.backend = backend
            self.batch_size = batch_size
            self.max_gen_toks = max_gen_toks

        # ---- log-likelihood
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            pairs = [tuple(r.args) for r in requests]
            out = self.backend.loglikelihood(pairs)
            res = [(float(o.logprob), bool(o.is_greedy)) for o in out]
            for (ctx, cont), r in zip(pairs, res, strict=True):
                self.cache_hook.add_partial("loglikelihood", (ctx, cont), r)
            return res

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            out = self.backend.loglikelihood_rolling([r.args[0] for r in requests])
            return [float(o.logprob) for o in out]

        # ---- generation
        def generate_until(self, requests, disable_tqdm: bool = False):
            from e3bench.evals.tasks.generative import cut_at_stop

            results: list[str] = []
            for r in requests:
                context, gen_kwargs = r.args
                kwargs = dict(gen_kwargs or {})
                until = kwargs.pop("until", None) or []
                if isinstance(until, str):
                    until = [until]
                until = list(until)
                max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
                do_sample = bool(kwargs.pop("do_sample", False))
                temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
                if temperature == 0.0:
                    do_sample = False
                params = GenParams(
                    max_new_tokens=max_new,
                    ignore_eos=False,
                    do_sample=do_sample,
                    temperature=temperature if do_sample else 1.0,
                    top_p=float(kwargs.pop("top_p", 1.0) or 1.0),
                    stop=tuple(until),
                )
                (gen,) = self.backend.generate([self.backend.encode(context)], params)
                text = cut_at_stop(gen.text, until)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                results.append(text)
            return results

    return E3BenchLM()


def run_lm_eval(
    backend: Backend,
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    log_samples: bool = False,
    include_path: str | None = None,
    random_seed: int = 0,
    bootstrap_iters: int = 0,
    batch_size: int = 1,
    **simple_evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on ``tasks`` with ``backend``; returns lm-eval's results
    dict (``results``, ``samples`` when ``log_samples``, ``configs``, ...).

    ``include_path``: a folder of extra task YAMLs (e.g. local-data tasks with ``dataset_path: json``).
    """
    lm_eval = _lm_eval()
    from lm_eval.tasks import TaskManager

    lm = make_lm(backend, batch_size=batch_size)
    tm = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        import difflib

        hints = []
        for t in unknown:
            near = difflib.get_close_matches(t, tm.all_tasks, n=3)
            hints.append(f"'{t}'" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        raise E3Error(
            f"lm-eval does not know task(s) {', '.join(hints)}",
            "list lm-eval's tasks with `lm-eval ls tasks`, or pass include_path for your own YAMLs",
        )
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        log_samples=log_samples,
        task_manager=tm,
        random_seed=random_seed,
        numpy_random_seed=random_seed,
        torch_random_seed=random_seed,
        fewshot_random_seed=1234,
        bootstrap_iters=bootstrap_iters,
        **simple_evaluate_kwargs,
    )


def to_task_scores(results: dict[str, Any]) -> list[TaskScore]:
    """lm-eval's results dict → one :class:`TaskScore` per task (metrics without the
    ``,filter`` suffix when the filter is ``none``; others keep ``metric,filter``)."""
    scores: list[TaskScore] = []
    samples = results.get("samples") or {}
    n_samples = results.get("n-samples") or {}
    for task, vals in (results.get("results") or {}).items():
        metrics: dict[str, float] = {}
        stderr: dict[str, float] = {}
        for key, value in vals.items():
            if key == "alias" or not isinstance(value, (int, float)):
                continue
            metric, _, flt = key.partition(",")
            is_se = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if is_se else metric
            name = base if flt in ("", "none") else f"{base},{flt}"
            target = stderr if is_se else metrics
            target[name] = float(value) if value is not None else math.nan
        n = int((n_samples.get(task) or {}).get("effective", 0)) or len(samples.get(task, []))
        scores.append(
            TaskScore(
                task=task,
                metrics=metrics,
                stderr=stderr,
                n_items=n,
                samples=list(samples[task]) if task in samples else None,
                details={"engine": "lm-eval", "lm_eval_version": _version()},
            )
        )
    return scores


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:  # pragma: no cover
        return "unknown"
