"""Shared pieces of the built-in tasks: statistics, capability checks, multiple-choice scoring."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from e3bench.core.api import Backend, LogLik, TaskScore
from e3bench.core.errors import E3Error
from e3bench.core.progress import Stage, chunks
from e3bench.evals.data import resolve_local_file


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no items."""
    return sum(xs) / len(xs) if xs else float("nan")


def mean_stderr(xs: Sequence[float]) -> float:
    """lm-eval's ``mean_stderr``: sample standard deviation (n−1) / sqrt(n); NaN for n < 2."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def ratio_stderr(num: Sequence[float], den: Sequence[float]) -> float:
    """Standard error of R = Σnum / Σden over items (the linearised ratio estimator)."""
    n = len(num)
    if n < 2 or sum(den) == 0:
        return float("nan")
    r = sum(num) / sum(den)
    dbar = sum(den) / n
    resid = sum((a - r * b) ** 2 for a, b in zip(num, den, strict=True))
    return math.sqrt(resid / (n * (n - 1))) / dbar


def lm_head_problem(task_name: str, requires: frozenset[str], architecture: str | None) -> E3Error | None:
    """The error for a task that scores or generates text (``requires`` log-likelihood or
    generation) on an ``encoder-only`` model, which has no language-model head; None otherwise.
    One message, before the load (the engine's preflight, from config.json) and after it."""
    if architecture != "encoder-only" or not requires & {"loglikelihood", "generate"}:
        return None
    how = "log-likelihood scoring" if "loglikelihood" in requires else "text generation"
    return E3Error(
        f"task '{task_name}' needs {how}, which an encoder-only model cannot do without "
        "fine-tuning: it has no language-model head to score or produce text",
        "run it with --tasks none (forward latency, throughput and energy per sequence), fine-tune "
        "a classification head (`e3bench finetune`, SuperGLUE tasks), or pick a decoder-only / "
        "encoder-decoder model",
    )


def check_backend(backend: Backend, task_name: str, requires: frozenset[str]) -> None:
    """Raise a clear :class:`E3Error` when the backend cannot run this task."""
    err = lm_head_problem(task_name, requires, backend.architecture)
    if err is not None:
        raise err
    if "loglikelihood" in requires and not backend.capabilities.loglikelihood:
        raise E3Error(
            f"task '{task_name}' needs log-likelihood scoring, which backend '{backend.name}' does not provide",
            "use the pytorch backend for log-likelihood tasks, or a generative task",
        )


@dataclass
class MCItem:
    """One multiple-choice question as lm-eval sees it."""

    context: str
    choices: list[str]  # the choice texts (used for acc_norm's length, as lm-eval)
    gold: int
    delimiter: str = " "  # lm-eval's target_delimiter
    meta: dict | None = None

    def requests(self) -> list[tuple[str, str]]:
        """One ``(context, delimiter + choice)`` log-likelihood request per choice."""
        return [(self.context, self.delimiter + c) for c in self.choices]


def argmax(xs: Sequence[float]) -> int:
    """First index of the maximum (numpy's tie rule, as lm-eval)."""
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


#: a task hands its requests to the backend in at most this many pieces (each a progress step)
MAX_PIECES = 50
#: ... each piece at least this many of the backend's batches (1 on CPU, 16 on accelerators)
PIECE_BATCHES = 8

Req = TypeVar("Req")
Res = TypeVar("Res")


def in_pieces(backend: Backend, per_item: Sequence[Sequence[Req]], call: Callable[[list[Req]], list[Res]],
              progress: Stage | None = None) -> list[Res]:  # fmt: skip
    """``call`` (a backend method) on every item's requests, in order, in pieces of whole items,
    ``progress`` advancing by the items of each piece (its total, when unset, set to the items). The
    first piece is the first item alone (so the progress has a rate, and an ETA, after one item);
    each other piece holds at least :data:`PIECE_BATCHES` of the backend's batches (so its
    batches stay full) and there are at most :data:`MAX_PIECES` more (so a context cached across
    items, e.g. MMLU's few-shot stem, is recomputed at most that often); the split depends on
    the sizes only, never on time."""
    progress = progress or Stage("")
    if progress.total is None:
        progress.update(total=len(per_item))
    sizes = [len(r) for r in per_item]
    least = max(PIECE_BATCHES * _batch_hint(backend), math.ceil(sum(sizes) / MAX_PIECES))
    out: list[Res] = []
    # the first item alone: the ETA starts after one item, not after a whole piece
    spans = [(0, 1), *((a + 1, b + 1) for a, b in chunks(sizes[1:], least))] if sizes else []
    for start, stop in spans:
        reqs = [r for item in per_item[start:stop] for r in item]
        got = call(reqs) if reqs else []
        if len(got) != len(reqs):
            raise RuntimeError(f"backend returned {len(got)} results for {len(reqs)} requests")
        out.extend(got)
        progress.advance(stop - start)
    return out


def _batch_hint(backend: Backend) -> int:
    """The scoring batch a piece should fill: ``--score-batch-size`` N, auto's largest, or the
    device's default (:func:`e3bench.backends.base.default_score_batch_size`)."""
    from e3bench.backends.base import default_score_batch_size

    want = getattr(backend, "score_batch_size", None)
    if want == "auto":
        from e3bench.backends.batch_auto import MAX_AUTO

        return MAX_AUTO
    return want if isinstance(want, int) else default_score_batch_size(getattr(backend, "device", "cpu"))


def score_multiple_choice(backend: Backend, items: Sequence[MCItem], progress: Stage | None = None) -> list[dict]:
    """Log-likelihood of every choice of every item (:func:`in_pieces`); per-item results with
    ``acc`` (argmax of log-likelihood) and ``acc_norm`` (argmax of log-likelihood per character
    of the choice text, lm-eval's definition)."""
    reqs: list[tuple[str, str]] = []
    for it in items:
        reqs.extend(it.requests())
    lls: list[LogLik] = in_pieces(backend, [it.requests() for it in items], backend.loglikelihood, progress)
    if len(lls) != len(reqs):
        raise RuntimeError(f"backend returned {len(lls)} log-likelihoods for {len(reqs)} requests")
    out: list[dict] = []
    k = 0
    for i, it in enumerate(items):
        ll = [x.logprob for x in lls[k : k + len(it.choices)]]
        k += len(it.choices)
        pred = argmax(ll)
        pred_norm = argmax([v / float(len(c)) for v, c in zip(ll, it.choices, strict=True)])
        row = {
            "doc_id": i,
            "context": it.context,
            "choices": list(it.choices),
            "gold": it.gold,
            "loglikelihoods": ll,
            "pred": pred,
            "pred_norm": pred_norm,
            "acc": float(pred == it.gold),
            "acc_norm": float(pred_norm == it.gold),
        }
        if it.meta:
            row.update(it.meta)
        out.append(row)
    return out


def limit_details(limit: int | None, seed: int, sample: bool) -> dict:
    """How the items were chosen, for ``TaskScore.details``: ``limit``, first-n or seeded sample, seed."""
    return {
        "limit": limit,
        "subset": "seeded-sample" if sample and limit is not None else "first-n",
        "seed": seed,
    }


def mean_score(task: str, samples: list[dict], metrics: Sequence[str], details: dict | None = None) -> TaskScore:
    """A score whose metrics are per-item means (each with its standard error) of ``samples``' fields."""
    cols = {m: [s[m] for s in samples] for m in metrics}
    return TaskScore(
        task=task,
        metrics={m: mean(v) for m, v in cols.items()},
        stderr={m: mean_stderr(v) for m, v in cols.items()},
        n_items=len(samples),
        samples=samples,
        details=details or {},
    )


def mc_score(
    task: str, rows: list[dict], details: dict | None = None, metrics: Sequence[str] = ("acc", "acc_norm")
) -> TaskScore:
    """The per-item means ``metrics`` (default ``acc`` and ``acc_norm``, with standard errors) of
    multiple-choice rows."""
    return mean_score(task, rows, metrics, details)


def bootstrap_stderr(stat, items: Sequence, *, iters: int = 1000, seed: int = 1234) -> float:
    """Standard deviation of ``stat`` over ``iters`` resamples of ``items`` with replacement
    (seeded; for aggregates that are not means, e.g. F1); NaN for fewer than 2 items."""
    import random

    if len(items) < 2:
        return float("nan")
    rnd = random.Random(seed)
    vals = [stat(rnd.choices(items, k=len(items))) for _ in range(iters)]
    mu = mean(vals)
    return math.sqrt(sum((v - mu) ** 2 for v in vals) / (iters - 1))


def user_file(task: str, path: str | os.PathLike | None, data_dir: str | os.PathLike | None, label: object | None,
              fix: str | None = None) -> tuple[Path, str]:
    """A task over a user's file: the resolved ``path`` (required; E3Error with ``fix``, default
    ``pass path=FILE.jsonl (--task <task>:path=FILE)``) and the name it is recorded under
    (:func:`file_task_label`)."""
    if path is None:
        raise E3Error(f"task '{task}' needs a data file", fix or f"pass path=FILE.jsonl (--task {task}:path=FILE)")
    resolved = resolve_local_file(path, data_dir_=data_dir)
    return resolved, file_task_label(task, resolved, label)


def file_task_label(task: str, path: Path, label: object | None) -> str:
    """The name a task over a user's file is recorded under: ``label`` when given, else
    ``<task>[<file stem>]`` (``jsonl_gen[qa]``), so two such tasks in one run stay apart in the
    record and their samples files."""
    if label is not None:
        label = str(label).strip()  # a spec's label=2 arrives as an int
        if not label:
            raise E3Error(f"task '{task}': label is empty", "give label=NAME a name, or leave it out")
        return label
    return f"{task}[{path.stem}]"


def record_file_task(score: TaskScore, task: str, label: str, path: Path) -> TaskScore:
    """``score`` of a task over a user's file, recorded under ``label`` (:func:`file_task_label`)
    with the file and its SHA-256 (``data_source``, ``data_sha256``)."""
    from e3bench.evals.data import file_sha256

    score.task = label
    score.details.update(task=task, path=str(path))
    score.data_source, score.data_sha256 = str(path), file_sha256(path)
    return score
