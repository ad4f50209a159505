"""Multiple-choice tasks scored by log-likelihood (acc and acc_norm, as lm-evaluation-harness).

Every item becomes ``len(choices)`` requests ``(context, " " + choice)``; the prediction is the
choice with the highest log-likelihood (``acc``) or the highest log-likelihood per character of the
choice text (``acc_norm``). Prompts (``context``) per task:

* mmlu: ``The following are multiple choice questions (with answers) about {subject}.\\n\\n
  {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:``, choices ``A``..``D``
* hellaswag: ``{activity_label}: {ctx}`` (lm-eval's preprocessing)
* arc_easy, arc_challenge: ``Question: {question}\\nAnswer:``
* piqa: ``Question: {goal}\\nAnswer:``
* siqa: ``Q: {context} {question}\\nA:`` (lm-eval's ``social_iqa``)
* commonsense_qa: ``Question: {question}\\nA. ..\\n..E. ..\\nAnswer:``, choices ``A``..``E``
* rte: ``{premise}\\nQuestion: {hypothesis} True or False?\\nAnswer:`` (lm-eval's ``sglue_rte``)
* cb: ``{premise}\\nQuestion: {hypothesis}. True, False, or Neither?\\nAnswer:``
* wic: ``Sentence 1: ..\\nSentence 2: ..\\nQuestion: Is the word '..' used in the same way ..``
* wsc: ``Passage: {text with *pronoun*}\\nQuestion: In the passage above, does the pronoun ..``
* openbookqa: ``{question_stem}``
* boolq: ``Passage: {passage}\\nQuestion: {question}?\\nAnswer:`` (lm-eval: no "Passage: ")
* copa: ``{premise}, therefore|because`` (lm-eval: no comma)

All but boolq and copa are lm-eval's prompts exactly (the mappers of
:mod:`e3bench.evals.hub_schemas` quote them); metrics are the ones lm-eval reports per task
(:attr:`MultipleChoiceTask.metrics`; ``acc_norm`` for the older tasks
too). boolq and copa follow the llm-foundry export in the local data; the hub path maps to the
same text so both sources give the same prompt.
"""

from __future__ import annotations

import os
from typing import ClassVar

from e3bench.core.api import Backend, TaskScore
from e3bench.core.progress import Stage
from e3bench.evals.data import (
    apply_limit,
    load_dataset_rows,
    read_jsonl,
    validate_multiple_choice,
    validate_rows,
)
from e3bench.core.errors import E3Error
from e3bench.evals.tasks.metrics import macro_f1
from e3bench.evals.tasks.base import (
    MCItem,
    bootstrap_stderr,
    check_backend,
    user_file,
    limit_details,
    mc_score,
    mean,
    mean_stderr,
    record_file_task,
    score_multiple_choice,
)

LOGLIK = frozenset({"loglikelihood"})


class MultipleChoiceTask:
    """A built-in multiple-choice dataset in the ``{query, choices, gold}`` schema."""

    name: ClassVar[str] = "multiple_choice"
    requires: ClassVar[frozenset[str]] = LOGLIK
    dataset: ClassVar[str] = ""
    split: ClassVar[str] = "test"
    suffix: ClassVar[str] = ""  # appended to the query (e.g. "\nAnswer:")
    metrics: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")  # the metrics lm-eval reports

    def __init__(self, *, data_dir: str | os.PathLike | None = None, sample: bool = False) -> None:
        self.data_dir = data_dir
        self.sample = sample

    def load_rows(self) -> list[dict]:
        """All rows of the task's split through the one data resolver (local dir, then hub),
        validated against the ``{query, choices, gold}`` schema (E3Error naming the row)."""
        rows = load_dataset_rows(self.dataset, self.split, data_dir_=self.data_dir)
        validate_multiple_choice(rows, f"{self.dataset}/{self.split}")
        return rows

    def to_item(self, row: dict) -> MCItem:
        """One row as the context (query + suffix), the choices and the gold index."""
        return MCItem(row["query"] + self.suffix, list(row["choices"]), int(row["gold"]))

    def items(self, *, limit: int | None, seed: int) -> list[MCItem]:
        """The first ``limit`` items (or a ``seed``-ed sample when ``sample=True``)."""
        rows = apply_limit(self.load_rows(), limit, what=f"task '{self.name}'", seed=seed, sample=self.sample)
        return [self.to_item(r) for r in rows]

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """acc and acc_norm (lm-eval's definitions) with standard errors, by log-likelihood of
        each choice given the context on ``backend``."""
        check_backend(backend, self.name, self.requires)
        items = self.items(limit=limit, seed=seed)
        rows = score_multiple_choice(backend, items, progress)
        return mc_score(self.name, rows, self._details(limit, seed), self.metrics)

    def _details(self, limit: int | None, seed: int) -> dict:
        return {"scoring": "loglikelihood", **limit_details(limit, seed, self.sample), "num_fewshot": 0}


class HellaSwag(MultipleChoiceTask):
    """HellaSwag validation (lm-eval's preprocessing; 4 endings)."""

    name = "hellaswag"
    dataset = "hellaswag"
    split = "validation"


class ArcEasy(MultipleChoiceTask):
    """ARC-Easy test ("Question: ...\nAnswer:")."""

    name = "arc_easy"
    dataset = "arc_easy"
    suffix = "\nAnswer:"


class BoolQ(MultipleChoiceTask):
    """BoolQ (SuperGLUE) validation as no/yes choices."""

    name = "boolq"
    dataset = "boolq"
    suffix = "\nAnswer:"
    metrics = ("acc",)  # lm-eval's super_glue/boolq reports acc only


class Copa(MultipleChoiceTask):
    """COPA (SuperGLUE): the premise with "because"/"therefore" and two alternatives."""

    name = "copa"
    dataset = "copa"
    metrics = ("acc",)  # lm-eval's super_glue/copa reports acc only


class OpenBookQA(MultipleChoiceTask):
    """OpenBookQA main test (question stem, 4 choices)."""

    name = "openbookqa"
    dataset = "openbookqa"


class ArcChallenge(ArcEasy):
    """ARC-Challenge test (lm-eval's ``arc_challenge``)."""

    name = "arc_challenge"
    dataset = "arc_challenge"


class PIQA(MultipleChoiceTask):
    """PIQA validation ("Question: {goal}\nAnswer:", two solutions)."""

    name = "piqa"
    dataset = "piqa"
    suffix = "Answer:"  # after the local export's "Question: {goal}\n"


class SIQA(MultipleChoiceTask):
    """Social IQa validation (lm-eval's ``social_iqa``: "Q: {context} {question}\nA:"), acc."""

    name = "siqa"
    dataset = "siqa"
    metrics = ("acc",)


class CommonsenseQA(MultipleChoiceTask):
    """CommonsenseQA validation (question with lettered options, choices ``A``..``E``), acc."""

    name = "commonsense_qa"
    dataset = "commonsense_qa"
    metrics = ("acc",)


class RTE(MultipleChoiceTask):
    """SuperGLUE RTE validation (lm-eval's ``sglue_rte``: True/False), acc."""

    name = "rte"
    dataset = "rte"
    metrics = ("acc",)


class WiC(MultipleChoiceTask):
    """SuperGLUE WiC validation (no/yes), acc."""

    name = "wic"
    dataset = "wic"
    metrics = ("acc",)


class WSC(MultipleChoiceTask):
    """SuperGLUE WSC (``wsc.fixed``) validation (no/yes), acc."""

    name = "wsc"
    dataset = "wsc"
    metrics = ("acc",)


class CB(MultipleChoiceTask):
    """SuperGLUE CommitmentBank validation (True/False/Neither): acc and ``f1`` (mean of the three
    classes' F1, lm-eval's ``cb_multi_fi``; its standard error by a seeded bootstrap over items)."""

    name = "cb"
    dataset = "cb"
    metrics = ("acc",)

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """acc (mean) and f1 (macro over the 3 classes)."""
        score = super().evaluate(backend, limit=limit, seed=seed, progress=progress)
        pairs = [(int(r["gold"]), int(r["pred"])) for r in score.samples]

        def f1(ps: list[tuple[int, int]]) -> float:
            return macro_f1([g for g, _ in ps], [p for _, p in ps], 3)

        score.metrics["f1"] = f1(pairs)
        score.stderr["f1"] = bootstrap_stderr(f1, pairs)
        score.details["stderr_method"] = {"acc": "mean_stderr", "f1": "bootstrap, 1000 resamples, seed 1234"}
        return score


class JsonlMultipleChoice(MultipleChoiceTask):
    """User data: JSONL lines ``{"query": str, "choices": [str, ...], "gold": int}``.

    Options: ``suffix`` appended to the query (default none), ``delimiter`` between context and
    choice (default one space, as lm-eval), ``label`` the name it is recorded under (default
    ``jsonl_mc[<file stem>]``), ``acc_norm`` (default true) whether ``acc_norm`` is reported
    beside ``acc`` — false for data whose standard metric is plain accuracy (the SuperGLUE tasks
    of an architecture comparison, where the headline must be the ``acc`` the fine-tuned
    classifiers are compared with). The record names the file and its SHA-256.
    """

    name = "jsonl_mc"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        suffix: str = "",
        delimiter: str = " ",
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
        label: str | None = None,
        acc_norm: bool = True,
    ) -> None:
        super().__init__(data_dir=data_dir, sample=sample)
        self.path, self.label = user_file(self.name, path, data_dir, label)
        self.metrics = ("acc", "acc_norm") if acc_norm else ("acc",)
        self.suffix_ = suffix
        self.delimiter = delimiter

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """As :meth:`MultipleChoiceTask.evaluate`, recorded under ``label`` with the data file."""
        return record_file_task(super().evaluate(backend, limit=limit, seed=seed, progress=progress), self.name, self.label, self.path)

    def load_rows(self) -> list[dict]:
        """The user's JSONL rows, validated (E3Error naming the file and line)."""
        rows = read_jsonl(self.path)
        validate_multiple_choice(rows, str(self.path))
        return rows

    def to_item(self, row: dict) -> MCItem:
        """One row with the user's suffix and delimiter."""
        return MCItem(row["query"] + self.suffix_, list(row["choices"]), int(row["gold"]), self.delimiter)


# ----------------------------------------------------------------------------------- MMLU
MMLU_CHOICES = ["A", "B", "C", "D"]


def mmlu_question(row: dict) -> str:
    """lm-eval's MMLU ``doc_to_text``."""
    c = row["choices"]
    return f"{row['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def mmlu_description(subject: str) -> str:
    """lm-eval's MMLU description line for ``subject`` (underscores as spaces)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_prompt(row: dict, shots: list[dict]) -> str:
    """Description + ``num_fewshot`` solved dev questions (first-n) + the question."""
    text = mmlu_description(row["subject"])
    for s in shots:
        text += mmlu_question(s) + " " + MMLU_CHOICES[int(s["answer"])] + "\n\n"
    return text + mmlu_question(row)


class MMLU:
    """MMLU (57 subjects), 0-shot or k-shot with the first k dev questions of the subject.

    ``limit`` applies per subject, as lm-eval's ``--limit`` does for its per-subject tasks.
    Metrics: ``acc`` (over all items: lm-eval's ``mmlu`` group number, weighted by subject size),
    ``acc_macro`` (mean of subject accuracies) and ``acc_norm``; per-subject accuracy in
    ``details["subjects"]``.
    """

    name: ClassVar[str] = "mmlu"
    requires: ClassVar[frozenset[str]] = LOGLIK

    def __init__(
        self,
        *,
        num_fewshot: int = 0,
        subjects: list[str] | str | None = None,
        split: str = "test",
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
    ) -> None:
        if not 0 <= int(num_fewshot) <= 5:
            raise E3Error(f"MMLU num_fewshot must be 0..5, got {num_fewshot}", "the dev split has 5 questions per subject")
        self.num_fewshot = int(num_fewshot)
        if isinstance(subjects, str):
            subjects = [s.strip() for s in subjects.split(",") if s.strip()]
        self.subjects = subjects
        self.split = split
        self.data_dir = data_dir
        self.sample = sample
        if self.num_fewshot:
            self.name = f"mmlu_{self.num_fewshot}shot"  # type: ignore[misc]

    def _rows(self, split: str) -> list[dict]:
        rows = load_dataset_rows("mmlu", split, data_dir_=self.data_dir)
        validate_rows(rows, f"mmlu/{split}", {"question": str, "subject": str, "choices": list, "answer": int})
        return rows

    def items(self, *, limit: int | None, seed: int) -> list[MCItem]:
        """``limit`` items per subject (sorted by subject), with ``num_fewshot`` dev examples
        each; E3Error for an unknown subject or too few dev examples."""
        rows = self._rows(self.split)
        by_subject: dict[str, list[dict]] = {}
        for r in rows:
            by_subject.setdefault(r["subject"], []).append(r)
        if self.subjects:
            unknown = [s for s in self.subjects if s not in by_subject]
            if unknown:
                import difflib

                hints = {s: difflib.get_close_matches(s, list(by_subject), n=1) for s in unknown}
                hint = "; ".join(f"{s} → did you mean {h[0]}?" if h else s for s, h in hints.items())
                raise E3Error(f"unknown MMLU subject(s): {hint}", f"subjects: {', '.join(sorted(by_subject))}")
            by_subject = {s: by_subject[s] for s in self.subjects}
        shots: dict[str, list[dict]] = {}
        if self.num_fewshot:
            for r in self._rows("dev"):
                shots.setdefault(r["subject"], []).append(r)
        items: list[MCItem] = []
        for subject in sorted(by_subject):
            chosen = apply_limit(by_subject[subject], limit, what=f"MMLU subject {subject}", seed=seed, sample=self.sample)
            fs = shots.get(subject, [])[: self.num_fewshot]
            if self.num_fewshot and len(fs) < self.num_fewshot:
                raise E3Error(f"MMLU dev split has only {len(fs)} questions for {subject}", "use fewer shots")
            for r in chosen:
                items.append(MCItem(mmlu_prompt(r, fs), list(MMLU_CHOICES), int(r["answer"]), meta={"subject": subject}))
        return items

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """acc over all items plus per-subject acc in ``details["subjects"]``."""
        check_backend(backend, self.name, self.requires)
        items = self.items(limit=limit, seed=seed)
        rows = score_multiple_choice(backend, items, progress)
        score = mc_score(self.name, rows)
        subjects: dict[str, dict[str, float]] = {}
        for subject in sorted({r["subject"] for r in rows}):
            accs = [r["acc"] for r in rows if r["subject"] == subject]
            subjects[subject] = {"acc": mean(accs), "acc_stderr": mean_stderr(accs), "n": len(accs)}
        macro = [s["acc"] for s in subjects.values()]
        score.metrics["acc_macro"] = mean(macro)
        # stderr of a mean of independent subject means
        var = [s["acc_stderr"] ** 2 for s in subjects.values() if s["n"] > 1]
        score.stderr["acc_macro"] = (sum(var) ** 0.5) / len(macro) if len(var) == len(macro) else float("nan")
        score.details = {
            "scoring": "loglikelihood",
            "num_fewshot": self.num_fewshot,
            "fewshot_sampler": "first_n of dev (as lm-eval)",
            "limit": limit,
            "limit_applies": "per subject",
            "subset": "seeded-sample" if self.sample and limit is not None else "first-n",
            "seed": seed,
            "subjects": subjects,
        }
        return score
