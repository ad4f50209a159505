"""Single-continuation tasks (LAMBADA): one continuation per item, scored by log-likelihood.

Every item ``{context, continuation}`` is one request ``(context, delimiter + continuation)``
(lm-eval's ``output_type: loglikelihood``; for LAMBADA the continuation is the passage's last
word, after one space). Per item: ``acc`` = 1 when greedy decoding would produce the whole
continuation (every continuation token is the argmax of its distribution: the backend's
``LogLik.is_greedy``), and the continuation's log-likelihood. Metrics, as lm-eval's:

* ``acc``: mean of the per-item greedy matches; standard error ``mean_stderr``.
* ``perplexity``: ``exp(−mean over items of the continuation's log-likelihood)`` (lm-eval's
  ``perplexity`` aggregation: per item, not per token); standard error by the delta method,
  ``perplexity × mean_stderr(log-likelihoods)`` (lm-eval reports none without bootstrapping).
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

from e3bench.core.api import Backend, TaskScore
from e3bench.core.progress import Stage
from e3bench.evals.data import apply_limit, load_dataset_rows, read_jsonl, validate_rows
from e3bench.evals.tasks.base import (
    check_backend,
    in_pieces,
    user_file,
    limit_details,
    mean,
    mean_stderr,
    record_file_task,
)

SCHEMA: dict[str, type] = {"context": str, "continuation": str}


def score_continuations(backend: Backend, rows: list[dict], delimiter: str, progress: Stage | None = None) -> list[dict]:
    """One log-likelihood request per row (:func:`~e3bench.evals.tasks.base.in_pieces`); per-item
    samples with ``acc`` (greedy match) and ``loglikelihood``."""
    lls = in_pieces(backend, [[(r["context"], delimiter + r["continuation"])] for r in rows], backend.loglikelihood, progress)
    return [
        {
            "doc_id": i,
            "context": r["context"],
            "continuation": r["continuation"],
            "loglikelihood": ll.logprob,
            "n_tokens": ll.n_tokens,
            "is_greedy": bool(ll.is_greedy),
            "acc": float(ll.is_greedy),
        }
        for i, (r, ll) in enumerate(zip(rows, lls, strict=True))
    ]


class SingleContinuationTask:
    """A built-in dataset in the ``{context, continuation}`` schema (see the module docstring)."""

    name: ClassVar[str] = "single_continuation"
    requires: ClassVar[frozenset[str]] = frozenset({"loglikelihood"})
    dataset: ClassVar[str] = ""
    split: ClassVar[str] = "test"

    def __init__(self, *, data_dir: str | os.PathLike | None = None, sample: bool = False) -> None:
        self.data_dir = data_dir
        self.sample = sample
        self.delimiter = " "  # lm-eval's LAMBADA target is " " + the last word

    def load_rows(self) -> list[dict]:
        """All rows of the split through the one data resolver, validated (E3Error naming the row)."""
        rows = load_dataset_rows(self.dataset, self.split, data_dir_=self.data_dir)
        validate_rows(rows, f"{self.dataset}/{self.split}", SCHEMA)
        return rows

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """``acc`` (greedy match) and ``perplexity`` of the continuations, with standard errors."""
        check_backend(backend, self.name, self.requires)
        rows = apply_limit(self.load_rows(), limit, what=f"task '{self.name}'", seed=seed, sample=self.sample)
        samples = score_continuations(backend, rows, self.delimiter, progress)
        accs = [s["acc"] for s in samples]
        lls = [s["loglikelihood"] for s in samples]
        ppl = math.exp(-mean(lls))
        return TaskScore(
            task=self.name,
            metrics={"acc": mean(accs), "perplexity": ppl},
            stderr={"acc": mean_stderr(accs), "perplexity": ppl * mean_stderr(lls)},
            n_items=len(samples),
            samples=samples,
            details={
                "scoring": "loglikelihood",
                "acc": "greedy match of the whole continuation",
                "perplexity": "exp(-mean per-item log-likelihood of the continuation) (lm-eval's)",
                "perplexity_stderr": "delta method: perplexity × mean_stderr(log-likelihoods)",
                "delimiter": self.delimiter,
                **limit_details(limit, seed, self.sample),
                "num_fewshot": 0,
            },
        )


class LambadaOpenAI(SingleContinuationTask):
    """LAMBADA (OpenAI's detokenized test): the last word of each passage, lm-eval's ``lambada_openai``."""

    name = "lambada_openai"
    dataset = "lambada_openai"


class JsonlContinuation(SingleContinuationTask):
    """User data: JSONL lines ``{"context": str, "continuation": str}``; option ``delimiter``
    (between context and continuation, default one space) and
    ``label``, the name it is recorded under (default ``jsonl_cont[<file stem>]``)."""

    name = "jsonl_cont"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        delimiter: str = " ",
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
        label: str | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, sample=sample)
        self.path, self.label = user_file(self.name, path, data_dir, label)
        self.delimiter = delimiter

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """As the built-in task, recorded under ``label`` with the data file and its SHA-256."""
        return record_file_task(super().evaluate(backend, limit=limit, seed=seed, progress=progress), self.name, self.label, self.path)

    def load_rows(self) -> list[dict]:
        """The user's JSONL rows, validated (E3Error naming the file and line)."""
        rows = read_jsonl(self.path)
        validate_rows(rows, str(self.path), SCHEMA)
        return rows
