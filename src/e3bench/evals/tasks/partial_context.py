"""Partial-context scoring (WinoGrande): one context per option, one shared continuation.

Every item ``{context_options, continuation, gold}`` becomes one request per option,
``(context_option, delimiter + continuation)`` (lm-eval's ``multiple_input`` multiple choice: for
WinoGrande the sentence up to the blank with the option filled in, then the rest of the
sentence). The prediction is the option under which the continuation is most likely (first index
on ties, as ``np.argmax``); ``acc`` = prediction == gold, the metric lm-eval reports (its
``acc_norm`` would divide by the option lengths, which means nothing here).
"""

from __future__ import annotations

import os
from typing import ClassVar

from e3bench.core.api import Backend, TaskScore
from e3bench.core.progress import Stage
from e3bench.core.errors import E3Error
from e3bench.evals.data import LINE_KEY, apply_limit, load_dataset_rows, read_jsonl, validate_rows
from e3bench.evals.tasks.base import (
    argmax,
    in_pieces,
    check_backend,
    user_file,
    limit_details,
    mean_score,
    record_file_task,
)


def validate_partial(rows: list[dict], path: str) -> None:
    """Check ``{context_options: [≥ 2 str], continuation: str, gold: valid index}`` per row;
    :class:`E3Error` naming ``path:line`` otherwise."""
    validate_rows(rows, path, {"context_options": list, "continuation": str, "gold": int})
    for i, row in enumerate(rows):
        where = f"{path}:{row.get(LINE_KEY, i + 1)}"
        opts = row["context_options"]
        if len(opts) < 2 or not all(isinstance(c, str) and c for c in opts):
            raise E3Error(f"{where}: 'context_options' must be a list of at least two non-empty strings",
                          "fix the item's context_options")  # fmt: skip
        if not 0 <= row["gold"] < len(opts):
            raise E3Error(f"{where}: 'gold' = {row['gold']} is not an index into its {len(opts)} context_options",
                          "gold is the 0-based index of the correct option")  # fmt: skip


def score_partial(backend: Backend, rows: list[dict], delimiter: str, progress: Stage | None = None) -> list[dict]:
    """Log-likelihood of the continuation after every option's context
    (:func:`~e3bench.evals.tasks.base.in_pieces`); per-item samples with ``loglikelihoods``,
    ``pred`` and ``acc``."""
    per_item = [[(c, delimiter + r["continuation"]) for c in r["context_options"]] for r in rows]
    lls = in_pieces(backend, per_item, backend.loglikelihood, progress)
    out, k = [], 0
    for i, r in enumerate(rows):
        n = len(r["context_options"])
        ll = [x.logprob for x in lls[k : k + n]]
        k += n
        pred = argmax(ll)
        out.append({
            "doc_id": i, "contexts": list(r["context_options"]), "continuation": r["continuation"],
            "gold": int(r["gold"]), "loglikelihoods": ll, "pred": pred, "acc": float(pred == r["gold"]),
        })  # fmt: skip
    return out


class PartialContextTask:
    """A built-in dataset in the ``{context_options, continuation, gold}`` schema (module docstring)."""

    name: ClassVar[str] = "partial_context"
    requires: ClassVar[frozenset[str]] = frozenset({"loglikelihood"})
    dataset: ClassVar[str] = ""
    split: ClassVar[str] = "test"

    def __init__(self, *, data_dir: str | os.PathLike | None = None, sample: bool = False) -> None:
        self.data_dir = data_dir
        self.sample = sample
        self.delimiter = " "  # lm-eval's target_delimiter

    def load_rows(self) -> list[dict]:
        """All rows of the split through the one data resolver, validated (E3Error naming the row)."""
        rows = load_dataset_rows(self.dataset, self.split, data_dir_=self.data_dir)
        validate_partial(rows, f"{self.dataset}/{self.split}")
        return rows

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """``acc`` with its standard error, by the continuation's log-likelihood under each option."""
        check_backend(backend, self.name, self.requires)
        rows = apply_limit(self.load_rows(), limit, what=f"task '{self.name}'", seed=seed, sample=self.sample)
        samples = score_partial(backend, rows, self.delimiter, progress)
        details = {"scoring": "loglikelihood (partial context: one context per option)",
                   "delimiter": self.delimiter, **limit_details(limit, seed, self.sample), "num_fewshot": 0}
        return mean_score(self.name, samples, ("acc",), details)


class Winogrande(PartialContextTask):
    """WinoGrande (winogrande_xl) validation, lm-eval's ``winogrande`` partial scoring."""

    name = "winogrande"
    dataset = "winogrande"


class JsonlPartial(PartialContextTask):
    """User data: JSONL lines ``{"context_options": [str, ...], "continuation": str, "gold": int}``;
    option ``delimiter`` (between each context and the continuation, default one space) and
    ``label``, the name it is recorded under (default ``jsonl_partial[<file stem>]``)."""

    name = "jsonl_partial"

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
        validate_partial(rows, str(self.path))
        return rows
