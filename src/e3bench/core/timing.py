"""Clocks and statistics: percentiles, standard deviation and 95% confidence intervals.

The clock is ``time.perf_counter`` everywhere (monotonic, highest resolution). Device
synchronisation is the runner's job: it calls ``backend.synchronize()`` before reading it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

clock = time.perf_counter

# Two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30; beyond, the normal
# value is within 2% and a table keeps scipy out of the core dependencies.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student-t critical value for ``df`` degrees of freedom (table to 30,
    interpolated to 120, then the normal 1.96); NaN for df < 1."""
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    if df <= 60:
        return 2.042 - (2.042 - 2.000) * (df - 30) / 30
    if df <= 120:
        return 2.000 - (2.000 - 1.980) * (df - 60) / 60
    return 1.960


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` of ``n`` right/wrong items (95 % for the
    default ``z``): stays inside [0, 1] and is not degenerate at 0 or 1 (5 of 20:
    (0.112, 0.469), as scipy's ``binomtest(5, 20).proportion_ci(method="wilson")``); NaNs for
    ``n`` < 1. The one implementation, used by the report's intervals and fine-tuning's margin
    over the majority class."""
    if n < 1:
        return math.nan, math.nan
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the interval holds p; rounding left 0.9999999999999999 as the top at p = 1 (n = 6, 21, ...),
    # which a plot drew as a negative error bar (matplotlib refuses it: the report failed)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def on_log_scale(mean: float, *, positive: bool) -> bool:
    """Whether :func:`mean_ci95` takes the interval on the log scale: a quantity that cannot be
    negative (``positive``) with a mean above 0 — the one condition, for the formula and for
    the words that describe it."""
    return positive and mean > 0


def mean_ci95(mean: float, std: float, n: int, *, positive: bool) -> tuple[float, float] | None:
    """The 95 % confidence interval ``(low, high)`` of the mean of ``n`` samples (sample std
    ``std``), Student t with df = n - 1; None for fewer than two samples.

    ``positive`` (a quantity that cannot be negative: a time, a rate, joules) with ``mean`` > 0:
    ``mean · exp(±t · SE / mean)``, the interval on the log scale (delta method: SE of log mean ≈
    SE / mean), which never goes below 0. The plain ``mean ± t · SE`` of two iterations of 10 and
    20 ms was [-48.5, 78.5] ms. The one formula for stored statistics (:func:`summarize`) and the
    report's intervals (:func:`e3bench.report.stats.t_interval`)."""
    if n < 2:
        return None
    t, se = t_critical_95(n - 1), std / math.sqrt(n)
    if on_log_scale(mean, positive=positive):
        k = math.exp(t * se / mean)
        return mean / k, mean * k
    return mean - t * se, mean + t * se


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (q in [0, 100]) with linear interpolation (numpy's default);
    NaN for no values."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


class Stats(BaseModel):
    """Summary of samples in the unit named by the field that holds it (e.g. ``ttft_ms``).

    ``ci95_*`` is the 95% confidence interval of the mean (Student t, sample std; on the log scale
    when every sample is > 0: :func:`mean_ci95`); None with fewer than two samples.
    """

    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    ci95_low: float | None
    ci95_high: float | None


def summarize(values: Sequence[float]) -> Stats | None:
    """Mean, sample std (ddof=1; 0 for one value), min/max, p50/p90/p99 and the 95% CI of the
    mean of ``values``, in the caller's unit. None and NaN values are dropped; returns None
    when nothing is left."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if 0 < len(vals) < _SMALL:
        return _summarize_small(vals)
    arr = np.asarray(vals, dtype=float)
    n = int(arr.size)
    if n == 0:
        return None
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    ci = mean_ci95(mean, std, n, positive=bool(arr.min() > 0))
    p50, p90, p99 = (float(x) for x in np.percentile(arr, [50, 90, 99]))
    return Stats(
        n=n,
        mean=mean,
        std=std,
        min=float(arr.min()),
        p50=p50,
        p90=p90,
        p99=p99,
        max=float(arr.max()),
        ci95_low=None if ci is None else ci[0],
        ci95_high=None if ci is None else ci[1],
    )


#: Below this many values :func:`summarize` computes in plain Python (a report aggregates tens of
#: thousands of 2-3 run groups, where numpy's per-call overhead was most of the time).
_SMALL = 8


def _summarize_small(vals: list[float]) -> Stats:
    """:func:`summarize` of fewer than :data:`_SMALL` values, bit for bit what the numpy path
    gives: sums in order (numpy sums fewer than 8 values sequentially), percentiles by numpy's
    linear method (index ``(n - 1) * q``, interpolated from the nearer end)."""
    n = len(vals)
    total = 0.0
    for v in vals:
        total += v
    mean = total / n
    ss = 0.0
    for v in vals:
        d = v - mean
        ss += d * d
    std = math.sqrt(ss / (n - 1)) if n > 1 else 0.0
    srt = sorted(vals)
    ci = mean_ci95(mean, std, n, positive=srt[0] > 0)

    def pct(q: float) -> float:
        virtual = (n - 1) * q
        if virtual >= n - 1:
            return srt[-1]
        if virtual < 0:
            return srt[0]
        lo = math.floor(virtual)
        t = virtual - lo
        a, b = srt[lo], srt[lo + 1]
        diff = b - a
        return b - diff * (1 - t) if t >= 0.5 else a + diff * t

    return Stats(n=n, mean=mean, std=std, min=srt[0], p50=pct(50 / 100), p90=pct(90 / 100), p99=pct(99 / 100), max=srt[-1],
                 ci95_low=None if ci is None else ci[0], ci95_high=None if ci is None else ci[1])  # fmt: skip


class TokenClock:
    """Records the runner's clock at request start and at each ``on_token`` callback."""

    __slots__ = ("t_start", "stamps")

    def __init__(self) -> None:
        self.t_start = 0.0
        self.stamps: list[float] = []

    def start(self) -> None:
        """Forget earlier stamps and read the clock: the request is being handed over now."""
        self.stamps = []
        self.t_start = clock()

    def __call__(self, _n_tokens: int) -> None:
        """The backend's ``on_token`` callback: stamp the clock (the count is not needed)."""
        self.stamps.append(clock())

    @property
    def ttft_s(self) -> float | None:
        """Seconds from :meth:`start` to the first token callback (None before any)."""
        return self.stamps[0] - self.t_start if self.stamps else None

    def itl_s(self) -> list[float]:
        """Gaps between consecutive token callbacks, seconds (inter-token latency)."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
