"""How far a reduced-precision variant moves the log-likelihoods of its reference, item by item.

Accuracy over a few dozen items hides degradation until it is large (dynamic int8 on ONNX
Runtime moved HellaSwag log-likelihoods by a median 1.30 nats while accuracy at 50 items stayed
within noise). When both sides logged their samples (``--log-samples``), every item they both
scored (paired by :mod:`e3bench.report.items`' one rule) gives ``|Δ loglik|``: the mean over the
item's scored continuations (every choice of a multiple-choice item, the one continuation of a
single-continuation item, the whole document of a perplexity item) of
``|loglik_variant − loglik_reference|``, in nats. The task's shift is the median and the 90th
percentile (linear interpolation) of those per-item values.

The log-likelihoods are read from the samples' ``loglikelihoods`` (one per choice),
``loglikelihood`` (one per item) or lm-eval's ``filtered_resps`` (``[loglik, is_greedy]`` per
request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from e3bench.core.fmt import num
from e3bench.core.timing import percentile
from e3bench.report.items import Items, paired_problem

#: the per-item field the pairing rule checks (the sum of the item's log-likelihoods)
_KEY = "_loglik_sum"
#: how the figure is obtained, for tables and CSV rows
METHOD = ("per item: mean over its scored continuations of |loglik(variant) − loglik(reference)| "
          "(nats); median and p90 (linear interpolation) over the items both sides logged")  # fmt: skip


@dataclass(frozen=True)
class LoglikShift:
    """``|Δ loglik|`` of one task, variant against reference: median and p90 over ``n_items``
    paired items (``n_logliks`` log-likelihoods in all), nats."""

    median_nats: float
    p90_nats: float
    n_items: int
    n_logliks: int
    method: str = METHOD


def item_logliks(row: dict[str, Any]) -> list[float] | None:
    """The log-likelihoods of one logged sample (see the module docstring), None without any."""
    lls = row.get("loglikelihoods")
    if lls is None and "loglikelihood" in row:
        lls = [row["loglikelihood"]]
    if lls is None and isinstance(row.get("filtered_resps"), list):  # lm-eval: [[loglik, is_greedy], ...]
        resps = row["filtered_resps"]
        lls = [r[0] if isinstance(r, (list, tuple)) and r else r for r in resps]
    if not isinstance(lls, list) or not lls:
        return None
    try:
        out = [float(x) for x in lls if not isinstance(x, bool)]
    except (TypeError, ValueError):
        return None
    return out if len(out) == len(lls) and all(math.isfinite(x) for x in out) else None


def _with_sums(items: Items | None) -> Items | None:
    """The items that carry log-likelihoods, each with their sum under :data:`_KEY`."""
    if items is None:
        return None
    out = {}
    for k, row in items.items():
        lls = item_logliks(row)
        if lls is not None:
            out[k] = {**row, _KEY: sum(lls), "_logliks": lls}
    return out


def loglik_shift(reference: Items | None, variant: Items | None) -> LoglikShift | None:
    """The shift over the items both sides logged with log-likelihoods; None when they cannot
    be paired (:func:`e3bench.report.items.paired_problem`) or an item's request count differs."""
    ra, va = _with_sums(reference), _with_sums(variant)
    if paired_problem(ra, va, _KEY) is not None:
        return None
    assert ra is not None and va is not None
    per_item, n = [], 0
    for k in sorted(set(ra) & set(va), key=str):
        a, b = ra[k]["_logliks"], va[k]["_logliks"]
        if len(a) != len(b):
            return None
        per_item.append(sum(abs(y - x) for x, y in zip(a, b, strict=True)) / len(a))
        n += len(a)
    return LoglikShift(percentile(per_item, 50), percentile(per_item, 90), len(per_item), n)


#: the column heading in the variants' quality table
COLUMN = "|Δ loglik| median / p90 (nats)"


def shift_cell(shift: LoglikShift | None) -> str | None:
    """``0.18 / 0.41 (50 items)``; None without a shift (no samples on both sides)."""
    if shift is None:
        return None
    return f"{num(shift.median_nats)} / {num(shift.p90_nats)} ({shift.n_items} items)"
