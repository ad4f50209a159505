"""SuperGLUE's standard metrics beside accuracy, in one place for evaluation (the tasks of
:mod:`e3bench.evals.tasks.superglue` and CB) and fine-tuning (``e3bench finetune`` evaluations):

* CB: ``f1`` — macro F1 over the three classes (scikit-learn's ``f1_score(average="macro")``;
  lm-eval's ``cb`` ``f1``);
* MultiRC: ``f1a`` — binary F1 over all answer options, "correct" as the positive class, and
  ``em`` — the fraction of questions whose answer options are all labelled right (SuperGLUE's
  definitions; lm-eval's v2 ``multirc`` reports acc only);
* ReCoRD: ``f1`` / ``em`` — SQuAD token F1 / exact match of the chosen entity, the best over the
  gold answers, averaged over queries (lm-eval's ``record``).

:func:`task_metrics` picks them by task name from rows with ``gold`` and ``pred`` (and
``question_id`` for MultiRC, else the query, which names the paragraph and question;
``entities`` / ``answers`` for ReCoRD).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def binary_f1(golds: Sequence[int], preds: Sequence[int], positive: int = 1) -> float:
    """F1 of class ``positive`` (0 when it is neither predicted nor gold, as scikit-learn)."""
    tp = sum(g == positive and p == positive for g, p in zip(golds, preds, strict=True))
    wrong = sum((g == positive) != (p == positive) for g, p in zip(golds, preds, strict=True))
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


def macro_f1(golds: Sequence[int], preds: Sequence[int], n_classes: int) -> float:
    """Mean over the classes of each class's binary F1 (lm-eval's CB ``f1``: scikit-learn's
    ``f1_score`` per class, 0 for a class neither predicted nor gold)."""
    return _mean([binary_f1(golds, preds, c) for c in range(n_classes)])


#: MultiRC's choices are ["... yes", "... no"] (lm-eval's order): choice 0 says "the answer is correct"
MULTIRC_CORRECT = 0


def multirc_f1a_em(golds: Sequence[int], preds: Sequence[int], question_ids: Sequence[object]) -> tuple[float, float]:
    """MultiRC's (F1a, EM) from choice indices (:data:`MULTIRC_CORRECT` = "the answer is
    correct"): F1 over all answer options with "correct" as the positive class, and the fraction
    of questions (``question_ids`` group the options) with every option right."""
    per_q: dict[object, bool] = {}
    for g, p, q in zip(golds, preds, question_ids, strict=True):
        per_q[q] = per_q.get(q, True) and g == p
    return binary_f1(golds, preds, MULTIRC_CORRECT), _mean([float(v) for v in per_q.values()])


def _normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_f1_em(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(token F1, exact match) of ``prediction`` against the best of ``answers`` (SQuAD v1.1's
    ``compute_f1`` / ``compute_exact``, maximised over the gold answers as lm-eval's ReCoRD)."""
    pred = _normalize(prediction).split()
    best_f1, best_em = 0.0, 0.0
    for ans in answers:
        gold = _normalize(ans).split()
        best_em = max(best_em, float(pred == gold))
        if not pred or not gold:
            best_f1 = max(best_f1, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best_f1 = max(best_f1, 2 * p * r / (p + r))
    return best_f1, best_em


def task_metrics(task: str, rows: Sequence[dict]) -> dict[str, float]:
    """The task's standard metrics beside accuracy (``{}`` for tasks that report accuracy
    only), from rows with ``gold`` and ``pred`` (indices into the row's choices)."""
    golds = [int(r["gold"]) for r in rows]
    preds = [int(r["pred"]) for r in rows]
    if not rows:
        return {}
    if task == "cb":
        return {"f1": macro_f1(golds, preds, 3)}
    if task == "multirc":
        f1a, em = multirc_f1a_em(golds, preds, [r.get("question_id", r["query"]) for r in rows])
        return {"f1a": f1a, "em": em}
    if task == "record":
        pairs = [squad_f1_em(r["entities"][int(r["pred"])], r["answers"]) for r in rows]
        return {"f1": _mean([f for f, _ in pairs]), "em": _mean([e for _, e in pairs])}
    return {}
