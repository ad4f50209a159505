"""A task's logged samples item by item (``--log-samples``): the one reader and the one pairing
rule for every paired comparison (the report's variants against their reference and
``e3bench compare``), and a task score as the :class:`Stats` of its items for unpaired ones.

Two sides are paired only when they scored the same items: the samples share at least two
``doc_id`` (else line numbers), every shared item has the compared per-item metric, and the fields
that say which item it is (:data:`ITEM_KEYS`) agree — two runs with another seed or data file can
reuse ``doc_id`` for other items.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e3bench.core.timing import Stats

#: fields of a logged sample that say which item it is: paired only when these agree
ITEM_KEYS = ("doc", "context", "contexts", "prompt", "question", "choices", "gold", "target", "answer",
             "answers", "continuation")  # fmt: skip

Items = dict[Any, dict]


def read_items(candidates: Iterable[Path]) -> Items | None:
    """The rows of the first readable samples file (JSONL) among ``candidates``, keyed by
    ``doc_id`` (else the line number); None when none can be read or parsed."""
    for f in candidates:
        try:
            rows = [json.loads(line) for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            continue
        return {r.get("doc_id", k): r for k, r in enumerate(rows) if isinstance(r, dict)}
    return None


def paired_problem(a: Items | None, b: Items | None, metric: str) -> str | None:
    """Why the samples of A and B cannot be paired item by item on ``metric`` (None: they can)."""
    if a is None or b is None:
        missing = " and ".join(s for s, x in (("A", a), ("B", b)) if x is None)
        return f"no readable samples logged in {missing}; --log-samples on both gives a paired test"
    ids = set(a) & set(b)
    if len(ids) < 2:
        return "the samples share fewer than 2 items"
    for i in sorted(ids, key=str):
        if not isinstance(a[i].get(metric), (int, float)) or not isinstance(b[i].get(metric), (int, float)):
            return f"the samples have no per-item '{metric}'"
        differ = [k for k in ITEM_KEYS if k in a[i] and k in b[i] and a[i][k] != b[i][k]]
        if differ:
            return f"the samples are of different items (doc_id {i}: {differ[0]} differs)"
    return None


def paired_scores(a: Items, b: Items, metric: str) -> tuple[list[float], list[float]]:
    """Per-item ``metric`` of the items both sides scored, in one order (check
    :func:`paired_problem` first)."""
    ids = sorted(set(a) & set(b), key=str)
    return [float(a[i][metric]) for i in ids], [float(b[i][metric]) for i in ids]


def item_stats(value: float, stderr: float | None, n_items: int) -> Stats | None:
    """A task score as the :class:`Stats` of its items for unpaired intervals: mean = the score,
    std = stderr × √n (the standard error's definition); None without a finite stderr or with
    fewer than two items."""
    if stderr is None or not math.isfinite(stderr) or n_items < 2:
        return None
    return Stats(n=n_items, mean=value, std=stderr * math.sqrt(n_items), min=value, p50=value, p90=value,
                 p99=value, max=value, ci95_low=None, ci95_high=None)  # fmt: skip
