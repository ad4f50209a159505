"""Generative tasks: GSM8K (strict / flexible exact match, as lm-eval), extractive QA
(SQuAD-style F1 / EM) and user JSONL ``{prompt, answer}`` (exact match).

Generation is greedy, stops at EOS or at any stop string, and the text is cut at the first stop
string exactly as lm-eval's ``generate_until`` does (``text.split(stop)[0]`` for every stop)."""

from __future__ import annotations

import collections
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from e3bench.core.api import Backend, GenParams, TaskScore
from e3bench.core.progress import Stage
from e3bench.evals.data import (
    apply_limit,
    file_sha256,
    load_dataset_rows,
    read_jsonl,
    validate_rows,
)
from e3bench.evals.tasks.base import check_backend, user_file, mean_score

GENERATE = frozenset({"generate"})


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """lm-eval: ``for term in until: s = s.split(term)[0]``."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def generation_batch(backend: Backend, batch_size: int | None = None) -> int:
    """Prompts per generation batch: the task's ``batch_size`` when given, else the run's eval
    batch setting (``--score-batch-size`` N, held by the backend as ``score_batch_size``), else
    (unset or ``auto``) :func:`e3bench.backends.base.default_batch_size`: 16 (on the CPU too, where a
    decode step of 8 rows costs about twice one row's and finished rows leave the batch;
    measurements at :data:`e3bench.backends.base.CPU_BATCH_SIZE`)."""
    from e3bench.backends.base import default_batch_size

    if batch_size is None:
        want = getattr(backend, "score_batch_size", None)
        batch_size = want if isinstance(want, int) else default_batch_size(getattr(backend, "device", "cpu"))
    return max(1, int(batch_size))


def generate_texts(
    backend: Backend,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    stop: Sequence[str],
    batch_size: int | None = None,
    progress: Stage | None = None,
) -> tuple[list[str], list[bool]]:
    """Greedy continuations of ``prompts``, cut at ``stop``, and which prompts were truncated.

    Prompts are tokenized as lm-eval's ``generate_until`` does
    (:meth:`~e3bench.core.api.Backend.encode_context`: the tokenizer's BOS where it adds one,
    left-truncated so ``max_new_tokens`` fit the context). Batches of :func:`generation_batch`
    prompts go to ``backend.generate`` at once: left-padded with an attention mask (PyTorch:
    greedy batches of decoder-only models run :mod:`e3bench.backends.greedy`, whose finished rows
    leave the batch; others transformers' ``generate``, where a row that stopped only pads until the
    batch's last row stops or ``max_new_tokens`` is reached; a row stops at EOS or when its
    generated text holds a stop string, and :func:`e3bench.backends.decoding.finish` cuts it where a
    lone run would have stopped). The text is the same as one prompt at a time
    (tests/test_generation_batch.py). Batches are formed from length-sorted prompts so little
    padding is computed, and results come back in input order; a batch of 1 runs the prompts in
    input order. ``progress`` advances by the prompts of each batch (its total, when unset, set
    to the prompts).
    """
    batch_size = generation_batch(backend, batch_size)
    params = GenParams(
        max_new_tokens=max_new_tokens,
        min_new_tokens=None,
        ignore_eos=False,
        do_sample=False,
        stop=tuple(stop),
    )
    contexts = [backend.encode_context(p, max_new_tokens=max_new_tokens) for p in prompts]
    encoded = [ids for ids, _ in contexts]
    order = list(range(len(prompts)))
    if batch_size > 1:
        order.sort(key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    if progress is not None and progress.total is None:
        progress.update(total=len(prompts))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        gens = backend.generate([encoded[j] for j in idx], params)
        for j, g in zip(idx, gens, strict=True):
            out[j] = cut_at_stop(g.text, stop)
        if progress is not None:
            progress.advance(len(idx))
    return out, [cut for _, cut in contexts]


def _finish(score: TaskScore, truncated: list[bool], source: Path | None = None) -> TaskScore:
    """``score`` with its truncation count (and per-item flags) and its data file (path, SHA-256)."""
    for s, cut in zip(score.samples or [], truncated, strict=True):
        s["truncated"] = cut
    score.truncated_items = sum(truncated)
    if source is not None:
        score.data_source, score.data_sha256 = str(source), file_sha256(source)
    return score


# ----------------------------------------------------------------------------------- GSM8K
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
INVALID = "[invalid]"


def _regex_extract(pattern: re.Pattern, text: str, group_select: int) -> str:
    """lm-eval's ``RegexFilter`` (then ``take_first``)."""
    match = pattern.findall(text)
    if not match:
        return INVALID
    m = match[group_select]
    if isinstance(m, tuple):
        m = [x for x in m if x]
        m = m[0] if m else INVALID
    return m.strip()


def extract_strict(text: str) -> str:
    """The number after ``#### `` (first occurrence), else ``[invalid]``."""
    return _regex_extract(STRICT_RE, text, 0)


def extract_flexible(text: str) -> str:
    """The last number-like string in the text, else ``[invalid]``."""
    return _regex_extract(FLEXIBLE_RE, text, -1)


def _normalize_em(s: str) -> str:
    for pat in _IGNORE:
        s = re.sub(pat, "", s)
    return s.lower()


def gsm8k_exact_match(prediction: str, reference: str) -> float:
    """lm-eval's ``exact_match`` with gsm8k's options (ignore case; drop ``,`` ``$`` a trailing
    ``.`` and everything up to ``#### ``) applied to both sides."""
    return float(_normalize_em(prediction) == _normalize_em(reference))


def gsm8k_prompt(question: str, shots: Sequence[dict] = ()) -> str:
    """lm-eval's gsm8k prompt: ``Question: ...\nAnswer: ...`` per shot, then the question."""
    text = ""
    for s in shots:
        text += f"Question: {s['question']}\nAnswer: {s['answer']}\n\n"
    return text + f"Question: {question}\nAnswer:"


class GSM8K:
    """GSM8K, greedy generation, exact match after lm-eval's strict and flexible extraction.

    Stop strings default to lm-eval 0.4's ``until`` (``Question:``, ``</s>``, ``<|im_end|>``);
    pass ``stop=`` to change them (older harness versions also stopped at a blank line).
    ``num_fewshot`` examples are the first k of the train split (lm-eval samples them randomly).
    """

    name: ClassVar[str] = "gsm8k"
    requires: ClassVar[frozenset[str]] = GENERATE
    DEFAULT_STOP: ClassVar[tuple[str, ...]] = ("Question:", "</s>", "<|im_end|>")

    def __init__(
        self,
        *,
        num_fewshot: int = 0,
        max_new_tokens: int = 256,
        stop: Sequence[str] | None = None,
        batch_size: int | None = None,
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
    ) -> None:
        self.num_fewshot = int(num_fewshot)
        self.max_new_tokens = int(max_new_tokens)
        self.stop = tuple(stop) if stop is not None else self.DEFAULT_STOP
        self.batch_size = batch_size
        self.data_dir = data_dir
        self.sample = sample

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """Greedy generations for the first ``limit`` items (or a seeded sample), scored per item."""
        check_backend(backend, self.name, self.requires)
        rows = load_dataset_rows("gsm8k", "test", data_dir_=self.data_dir)
        validate_rows(rows, "gsm8k/test", {"question": str, "answer": str})
        rows = apply_limit(rows, limit, what="task 'gsm8k'", seed=seed, sample=self.sample)
        shots: list[dict] = []
        if self.num_fewshot:
            shots = load_dataset_rows("gsm8k", "train", data_dir_=self.data_dir)[: self.num_fewshot]
        prompts = [gsm8k_prompt(r["question"], shots) for r in rows]
        texts, truncated = generate_texts(
            backend, prompts, max_new_tokens=self.max_new_tokens, stop=self.stop, batch_size=self.batch_size,
            progress=progress,
        )
        samples = []
        for i, (r, p, t) in enumerate(zip(rows, prompts, texts, strict=True)):
            strict, flex = extract_strict(t), extract_flexible(t)
            samples.append(
                {
                    "doc_id": i,
                    "prompt": p,
                    "generation": t,
                    "target": r["answer"],
                    "strict": strict,
                    "flexible": flex,
                    "exact_match_strict": gsm8k_exact_match(strict, r["answer"]),
                    "exact_match_flexible": gsm8k_exact_match(flex, r["answer"]),
                }
            )
        score = mean_score(
            self.name,
            samples,
            ("exact_match_strict", "exact_match_flexible"),
            {
                "scoring": "generation",
                "num_fewshot": self.num_fewshot,
                "stop": list(self.stop),
                "max_new_tokens": self.max_new_tokens,
                "generation_batch_size": generation_batch(backend, self.batch_size),
                "limit": limit,
                "subset": "seeded-sample" if self.sample and limit is not None else "first-n",
                "seed": seed,
            },
        )
        return _finish(score, truncated)


# ------------------------------------------------------------------------------ SQuAD F1/EM
def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact(prediction: str, truth: str) -> float:
    """SQuAD exact match (1.0 / 0.0) after SQuAD's answer normalisation."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of the official SQuAD script (empty vs empty = 1)."""
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not p or not t:
        return float(p == t)
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def best_over(metric, prediction: str, truths: Sequence[str]) -> float:
    """Max over the gold answers (an item with no answer is unanswerable: gold = "")."""
    return max(metric(prediction, t) for t in (truths or [""]))


class _UserFileTask:
    """What the generative tasks over a user's JSONL file share: the file (``path``, found via
    ``data_dir`` when relative), the name it is recorded under (``label``, default
    ``<task>[<file stem>]``), generation settings, and loading + validating + limiting rows."""

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = GENERATE
    #: the line format, for the error when no file is given
    LINE_FORMAT: ClassVar[str]
    SCHEMA: ClassVar[dict]

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        max_new_tokens: int,
        stop: Sequence[str],
        batch_size: int | None,
        data_dir: str | os.PathLike | None,
        sample: bool,
        label: str | None,
    ) -> None:
        self.path, self.label = user_file(self.name, path, data_dir, label,
                                          f"pass path=FILE.jsonl with {self.LINE_FORMAT} lines")  # fmt: skip
        self.max_new_tokens = int(max_new_tokens)
        self.stop = tuple(stop)
        self.batch_size = batch_size
        self.sample = sample

    def _rows(self, backend: Backend, limit: int | None, seed: int) -> list[dict]:
        check_backend(backend, self.name, self.requires)
        rows = read_jsonl(self.path)
        validate_rows(rows, str(self.path), self.SCHEMA)
        return apply_limit(rows, limit, what=f"task '{self.name}' ({self.path})", seed=seed, sample=self.sample)

    def _generate(self, backend: Backend, prompts: list[str], progress: Stage | None) -> tuple[list[str], list[bool]]:
        return generate_texts(
            backend, prompts, max_new_tokens=self.max_new_tokens, stop=self.stop, batch_size=self.batch_size,
            progress=progress,
        )

    def _score(self, backend: Backend, samples: list[dict], metrics: tuple[str, ...], truncated: list[bool], limit,
               seed) -> TaskScore:  # fmt: skip
        details = {"scoring": "generation", "task": self.name, "path": str(self.path), "stop": list(self.stop),
                   "max_new_tokens": self.max_new_tokens,
                   "generation_batch_size": generation_batch(backend, self.batch_size), "limit": limit,
                   "seed": seed}  # fmt: skip
        return _finish(mean_score(self.label, samples, metrics, details), truncated, self.path)


class ExtractiveQA(_UserFileTask):
    """SQuAD-style extractive QA from JSONL ``{"context", "question", "answers": [str] | {"text": [...]}}``.

    Prompt ``Context: {context}\\nQuestion: {question}\\nAnswer:``, greedy generation until a newline
    (``max_new_tokens`` 32); metrics ``exact_match`` and ``f1`` (official SQuAD normalisation,
    max over gold answers).
    """

    name: ClassVar[str] = "squad"
    LINE_FORMAT: ClassVar[str] = "{context, question, answers}"
    SCHEMA: ClassVar[dict] = {"context": str, "question": str, "answers": (list, dict, str)}

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        prompt: str = "Context: {context}\nQuestion: {question}\nAnswer:",
        batch_size: int | None = None,
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
        label: str | None = None,
    ) -> None:
        super().__init__(
            path, max_new_tokens=max_new_tokens, stop=stop, batch_size=batch_size, data_dir=data_dir, sample=sample,
            label=label,
        )  # fmt: skip
        self.prompt = prompt

    @staticmethod
    def answers_of(row: dict) -> list[str]:
        """The gold answer texts of a SQuAD row (hub or flat layout)."""
        a = row["answers"]
        if isinstance(a, dict):
            a = a.get("text", [])
        if isinstance(a, str):
            a = [a]
        return [str(x) for x in a]

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """Greedy generations for the first ``limit`` items (or a seeded sample), scored per item."""
        rows = self._rows(backend, limit, seed)
        texts, truncated = self._generate(
            backend, [self.prompt.format(context=r["context"], question=r["question"]) for r in rows], progress
        )
        samples = []
        for i, (r, t) in enumerate(zip(rows, texts, strict=True)):
            golds = self.answers_of(r)
            pred = t.strip()
            samples.append(
                {
                    "doc_id": i,
                    "question": r["question"],
                    "generation": t,
                    "prediction": pred,
                    "answers": golds,
                    "exact_match": best_over(squad_exact, pred, golds),
                    "f1": best_over(squad_f1, pred, golds),
                }
            )
        return self._score(backend, samples, ("exact_match", "f1"), truncated, limit, seed)


class JsonlGenerative(_UserFileTask):
    """User JSONL ``{"prompt": str, "answer": str}``: greedy generation, exact match after strip
    (and ``normalize=True``: SQuAD normalisation), plus SQuAD token F1."""

    name: ClassVar[str] = "jsonl_gen"
    LINE_FORMAT: ClassVar[str] = "{prompt, answer}"
    SCHEMA: ClassVar[dict] = {"prompt": str, "answer": str}

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = ("\n",),
        normalize: bool = False,
        batch_size: int | None = None,
        data_dir: str | os.PathLike | None = None,
        sample: bool = False,
        label: str | None = None,
    ) -> None:
        super().__init__(
            path, max_new_tokens=max_new_tokens, stop=stop, batch_size=batch_size, data_dir=data_dir, sample=sample,
            label=label,
        )  # fmt: skip
        self.normalize = bool(normalize)

    def evaluate(self, backend: Backend, *, limit: int | None = None, seed: int = 0,
                 progress: Stage | None = None) -> TaskScore:  # fmt: skip
        """Greedy generations for the first ``limit`` items (or a seeded sample), scored per item."""
        rows = self._rows(backend, limit, seed)
        texts, truncated = self._generate(backend, [r["prompt"] for r in rows], progress)
        samples = []
        for i, (r, t) in enumerate(zip(rows, texts, strict=True)):
            pred = t.strip()
            em = squad_exact(pred, r["answer"]) if self.normalize else float(pred == r["answer"].strip())
            samples.append(
                {"doc_id": i, "prompt": r["prompt"], "generation": t, "answer": r["answer"],
                 "exact_match": em, "f1": squad_f1(pred, r["answer"])}
            )  # fmt: skip
        return self._score(backend, samples, ("exact_match", "f1"), truncated, limit, seed)
