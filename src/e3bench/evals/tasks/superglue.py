"""SuperGLUE's MultiRC and ReCoRD as log-likelihood multiple choice (lm-eval's ``multirc`` and
``record`` prompts; rows from :mod:`e3bench.evals.hub_schemas`), with their standard metrics
beside accuracy (:mod:`e3bench.evals.tasks.metrics`). BoolQ, COPA, RTE, CB, WiC and WSC are in
:mod:`e3bench.evals.tasks.multiple_choice`.

* multirc: ``{paragraph}\\nQuestion: {question}\\nAnswer:``, choices ``{answer}\\nIs the answer
  correct? yes|no`` (lm-eval's order; gold 0 for a correct answer); one item per answer option: ``acc`` per option, ``f1a`` (F1 over options,
  "correct" positive) and ``em`` (questions with every option right), their standard errors by
  a seeded bootstrap over questions.
* record: the passage with its highlights as a list; each entity fills the query's
  ``@placeholder`` (no delimiter before the choice); ``f1`` / ``em`` of the chosen entity
  against the gold answers (SQuAD's token F1 / exact match, best over answers), per query.
"""

from __future__ import annotations

from typing import ClassVar

from e3bench.core.api import Backend, TaskScore
from e3bench.core.progress import Stage
from e3bench.evals.tasks.base import MCItem, bootstrap_stderr
from e3bench.evals.tasks.metrics import multirc_f1a_em, squad_f1_em
from e3bench.evals.tasks.multiple_choice import MultipleChoiceTask


class MultiRC(MultipleChoiceTask):
    """SuperGLUE MultiRC validation (one item per answer option): acc, f1a, em."""

    name = "multirc"
    dataset = "multirc"
    metrics = ("acc",)

    def to_item(self, row: dict) -> MCItem:
        """The row, with its question's id kept for EM (the query when the row has none)."""
        qid = row.get("question_id", row["query"])
        return MCItem(row["query"], list(row["choices"]), int(row["gold"]), meta={"question_id": qid})

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """acc (mean over answer options), f1a and em (bootstrap standard errors over questions)."""
        score = super().evaluate(backend, limit=limit, seed=seed, progress=progress)
        by_q: dict[object, list[tuple[int, int, object]]] = {}
        for r in score.samples:
            by_q.setdefault(r["question_id"], []).append((int(r["gold"]), int(r["pred"]), r["question_id"]))
        groups = list(by_q.values())

        def stats(gs: list[list[tuple[int, int, object]]]) -> tuple[float, float]:
            # resampled questions are told apart by their position, not their id
            flat = [(g, p, i) for i, grp in enumerate(gs) for g, p, _ in grp]
            return multirc_f1a_em([g for g, _, _ in flat], [p for _, p, _ in flat], [i for _, _, i in flat])

        score.metrics["f1a"], score.metrics["em"] = stats(groups)
        score.stderr["f1a"] = bootstrap_stderr(lambda gs: stats(gs)[0], groups)
        score.stderr["em"] = bootstrap_stderr(lambda gs: stats(gs)[1], groups)
        score.details["stderr_method"] = {"acc": "mean_stderr", "f1a": "bootstrap over questions, 1000 resamples, seed 1234",
                                          "em": "bootstrap over questions, 1000 resamples, seed 1234"}  # fmt: skip
        score.details["n_questions"] = len(groups)
        return score


class ReCoRD(MultipleChoiceTask):
    """SuperGLUE ReCoRD validation: the entity filling the query's placeholder; f1, em."""

    name = "record"
    dataset = "record"
    metrics: ClassVar[tuple[str, ...]] = ("f1", "em")

    def to_item(self, row: dict) -> MCItem:
        """The passage as context, the filled-in queries as choices, no delimiter (lm-eval's
        ``target_delimiter: ""``); entities and answers kept for the metrics."""
        meta = {"entities": list(row["entities"]), "answers": list(row["answers"])}
        return MCItem(row["query"], list(row["choices"]), int(row["gold"]), delimiter="", meta=meta)

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """Per-query f1 and em of the most likely entity (means with their standard errors)."""
        from e3bench.evals.tasks.base import check_backend, mc_score, score_multiple_choice

        check_backend(backend, self.name, self.requires)
        items = self.items(limit=limit, seed=seed)
        rows = score_multiple_choice(backend, items, progress)
        for r in rows:
            r["f1"], r["em"] = squad_f1_em(r["entities"][int(r["pred"])], r["answers"])
        return mc_score(self.name, rows, self._details(limit, seed), self.metrics)
