"""The statistics behind every comparison in a report: 95 % confidence intervals and tests.

One implementation each, imported by the report, ``e3bench compare`` and the summaries:

* :func:`t_interval` / :func:`mean_ci` — Student-t interval of a mean (e.g. across repeats of one
  configuration), on the log scale for quantities that cannot be negative (see below);
* :func:`diff_ci` — Welch interval of ``b.mean - a.mean`` from two :class:`~e3bench.core.timing.Stats`;
* :func:`ratio_ci` — ``b.mean / a.mean`` with a delta-method interval on the log scale (speed-up,
  energy ratio);
* :func:`proportion_ci` — a score in [0, 1] over items: Wilson score interval for right/wrong items;
* :func:`clipped` — an interval intersected with the range its quantity can take;
* :func:`mcnemar` — exact McNemar test of two classifiers scored on the same items;
* :func:`paired_bootstrap_diff_ci` — percentile bootstrap of ``mean(b - a)`` over paired items;
* :func:`paired_bootstrap_ratio_ci` — the same for ``mean(b) / mean(a)`` (quality retained);
* :func:`paired_binary_diff_ci` — Agresti–Min interval of a paired difference of right/wrong items;
* :func:`paired_diff_ci` — the paired comparison of one task (Agresti–Min + McNemar, or bootstrap);
* :func:`paired_binary_diff_ci` — right/wrong scores of the same items: Agresti–Min interval
  (the bootstrap has no spread when the two agree on every item, however few);
* :func:`verdict` — the word a table shows for an interval against "no change";
* :func:`meets` — PASS / FAIL / INCONCLUSIVE for a claim "at or above a threshold" (retained ≥ 99 %).

**Quantities that cannot be negative** (latency, throughput, energy per token, ratios of them).
The textbook Student-t interval ``mean ± t·s/√n`` ignores that: with two repeats (t = 12.71)
it runs below zero as soon as the two runs differ by more than 16 % of their mean, e.g.
10 and 14 ms give [−13.4, 37.4] ms. For these the interval is built on the log scale and
transformed back: ``mean · exp(±t · SE / mean)`` with ``SE = s/√n`` (the delta method for
``log(mean)``, the same construction as the "log" confidence interval of a survival curve,
R's ``survfit(conf.type="log")``). It keeps the arithmetic mean as the estimate, always lies
above zero and contains the mean, is asymmetric (wider above: multiplicative noise, which is
how run-to-run timing and energy vary) and agrees with the plain interval to first order when
the spread is small (a 1 % CV over 10 runs: each end moves by 0.003 % of the mean). The example
above becomes [1.44, 99.7] ms: honest about how little two runs establish, without impossible values.
Ratios (:func:`ratio_ci`) are treated the same way (log of the ratio, Katz's method), and a
score in [0, 1] uses the Wilson interval (right/wrong items) or is clipped to [0, 1]
(:func:`clipped`: intersecting an interval with the parameter's possible range keeps its
coverage). Each interval's ``method`` says which construction it used.

Critical values come from :func:`e3bench.core.timing.t_critical_95` (no scipy at run time:
it is not a dependency), linearly interpolated between whole degrees of freedom for Welch's
fractional df: within 0.05 % of scipy's ``t.ppf(0.975, df)`` up to df 30 (e.g. df 15.59:
2.1245 against 2.1244), within 0.4 % up to df 120, and from df 121 the normal 1.96, up to
1.0 % below scipy's value (df 121: 1.9798), so intervals there are at most 1 % too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from e3bench.core.timing import Stats, mean_ci95, on_log_scale, t_critical_95, wilson_interval

#: The words :func:`verdict` returns.
BETTER, WORSE, NO_DIFFERENCE, INCONCLUSIVE = "better", "worse", "no significant difference", "INCONCLUSIVE"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % confidence interval, in the unit of what it estimates.

    ``n`` is the sample size behind it (repeats, iterations or paired items: see ``method``);
    ``low``/``high`` are NaN when the interval cannot be computed (one sample, zero reference).
    ``method`` says how it was obtained, e.g. ``"Welch t, df=17"``.
    """

    estimate: float
    low: float
    high: float
    n: int
    method: str

    @property
    def known(self) -> bool:
        """True when both ends of the interval are finite numbers."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def contains(self, x: float) -> bool:
        """True when ``x`` lies inside the closed interval (False when it is unknown)."""
        return self.known and self.low <= x <= self.high

    def scaled(self, k: float) -> Interval:
        """The same interval in other units (``k`` > 0), e.g. ``100`` for percent."""
        return Interval(self.estimate * k, self.low * k, self.high * k, self.n, self.method)


_NAN = float("nan")


def t_interval(mean: float, std: float, n: int, *, positive: bool = False, over: str = "values") -> Interval:
    """``mean`` of ``n`` samples (sample std ``std``) with its Student-t 95 % interval (df = n − 1);
    ``over`` names the samples (``"runs"``, ``"iterations"``) for ``method``.

    ``positive``: the quantity cannot be negative (a time, a rate, joules): the interval is
    ``mean · exp(±t · SE / mean)``, Student t on the log scale (module doc), whenever
    ``mean`` > 0. One sample: NaN interval; none (``n`` 0): NaN estimate."""
    if n <= 0:
        return Interval(_NAN, _NAN, _NAN, 0, "mean, no values")
    if n == 1:
        return Interval(mean, _NAN, _NAN, 1, f"1 {over.rstrip('s')}, no interval")
    low, high = mean_ci95(mean, std, n, positive=positive)  # type: ignore[misc]  # n >= 2
    log = " on the log scale" if on_log_scale(mean, positive=positive) else ""
    return Interval(mean, low, high, n, f"Student t over {n} {over}{log}, df={n - 1}")


def mean_ci(values: Sequence[float], *, positive: bool = False) -> Interval:
    """Mean of ``values`` with its Student-t 95 % interval (:func:`t_interval`; ``positive``:
    on the log scale). None and NaN values are dropped; one value gives a NaN interval, none a
    NaN estimate."""
    arr = np.asarray([float(v) for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(arr.size)
    if n == 0:
        return t_interval(_NAN, _NAN, 0)
    return t_interval(float(arr.mean()), float(arr.std(ddof=1)) if n > 1 else 0.0, n, positive=positive)


def clipped(iv: Interval, low: float = 0.0, high: float = math.inf) -> Interval:
    """``iv`` intersected with ``[low, high]``, the values its quantity can take (a score in
    [0, 1], a retained fraction ≥ 0): the true value lies in both, so the coverage is kept.
    ``method`` says so when an end moved; an unknown interval is returned as it is."""
    if not iv.known or (iv.low >= low and iv.high <= high):
        return iv
    lo, hi = max(iv.low, low), min(iv.high, high)
    what = " and ".join(x for x, moved in (("lower", iv.low < low), ("upper", iv.high > high)) if moved)
    return Interval(iv.estimate, lo, hi, iv.n, f"{iv.method}; {what} end clipped to [{low:g}, {high:g}]")


def proportion_ci(p: float, n: int, stderr: float | None = None, *, binary: bool = True) -> Interval:
    """A score ``p`` in [0, 1] over ``n`` items with its 95 % interval: right/wrong items
    (``binary``): the Wilson score interval, which stays inside [0, 1] and is not degenerate
    at 0 % or 100 % (5 of 20 right: [0.112, 0.469]; Wald ±1.96 SE gives [0.060, 0.440]);
    other per-item scores (F1): ``p ± 1.96 · stderr`` clipped to [0, 1] (:func:`clipped`).
    No items, or no ``stderr`` for a non-binary score: NaN interval."""
    if binary and n > 0:
        low, high = wilson_interval(p, n)
        return Interval(p, low, high, n, f"Wilson score interval over {n} items")
    if stderr is None:
        return Interval(p, _NAN, _NAN, n, "no standard error recorded")
    h = 1.96 * stderr
    return clipped(Interval(p, p - h, p + h, n, f"±1.96 standard errors over {n} items"), 0.0, 1.0)


def _t95(df: float) -> float:
    """Two-sided 95 % t critical value for fractional ``df`` >= 1 (interpolated table)."""
    lo = max(1, math.floor(df))
    frac = max(0.0, df - lo)
    return t_critical_95(lo) + frac * (t_critical_95(lo + 1) - t_critical_95(lo))


def _welch_df(va: float, vb: float, na: int, nb: int) -> float:
    """Welch–Satterthwaite degrees of freedom of two variances of means ``va``, ``vb``."""
    if va + vb == 0:
        return float(na + nb - 2)
    return (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))


def diff_ci(a: Stats, b: Stats) -> Interval:
    """``b.mean - a.mean`` with Welch's 95 % interval (unequal variances, Welch–Satterthwaite df). Fewer than two samples on either side: NaN interval."""
    est = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return Interval(est, _NAN, _NAN, min(a.n, b.n), "difference, fewer than 2 samples: no interval")
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    df = _welch_df(va, vb, a.n, b.n)
    half = _t95(df) * math.sqrt(va + vb)
    return Interval(est, est - half, est + half, a.n + b.n, f"Welch t, df={df:.1f}")


def ratio_ci(a: Stats, b: Stats) -> Interval:
    """``b.mean / a.mean`` with a 95 % interval by the delta method on the log scale
    (independent samples): SE(log r) = sqrt((sd_a/mean_a)^2/n_a + (sd_b/mean_b)^2/n_b), t with
    Welch's df of the relative variances, interval ``r · exp(±t · SE)`` — never below zero (a
    speed-up or energy ratio cannot be negative), and ``1/r``'s interval is the reciprocal of
    ``r``'s. Both means must be positive (times, rates, joules).
    ``a.mean == 0``: NaN estimate; fewer than two samples on either side: NaN interval."""
    if a.mean == 0:
        return Interval(_NAN, _NAN, _NAN, min(a.n, b.n), "ratio, reference mean is 0")
    r = b.mean / a.mean
    if a.n < 2 or b.n < 2:
        return Interval(r, _NAN, _NAN, min(a.n, b.n), "ratio, fewer than 2 samples: no interval")
    if b.mean == 0:
        return Interval(r, _NAN, _NAN, a.n + b.n, "ratio, variant mean is 0: no interval")
    ra, rb = (a.std / a.mean) ** 2 / a.n, (b.std / b.mean) ** 2 / b.n  # squared relative SEs
    df = _welch_df(ra, rb, a.n, b.n)
    if r < 0:  # not a positive quantity: the plain delta method
        half = _t95(df) * abs(r) * math.sqrt(ra + rb)
        return Interval(r, r - half, r + half, a.n + b.n, f"delta method, Welch t df={df:.1f}")
    k = math.exp(_t95(df) * math.sqrt(ra + rb))
    return Interval(r, r / k, r * k, a.n + b.n, f"delta method on the log scale, Welch t df={df:.1f}")


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, float]:
    """Exact McNemar test over paired items: ``(b, c, p_value)`` where ``b`` counts items only A
    got right, ``c`` items only B got right, and ``p_value`` is the two-sided exact binomial
    p of ``min(b, c)`` under Binomial(b + c, 1/2) (1.0 when no item is discordant).

    Raises ``ValueError`` when the two sequences differ in length (they must be the same items).
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired test over {len(a_correct)} and {len(b_correct)} items: must be the same items")
    b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if bool(x) and not bool(y))
    c = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if bool(y) and not bool(x))
    n = b + c
    if n == 0:
        return b, c, 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return b, c, min(1.0, 2 * tail)


def _resample_means(a_scores: Sequence[float], b_scores: Sequence[float], n_boot: int, seed: int, what: str):
    """(a, b, resampled means of a, of b): the same ``n_boot`` item resamples for both sides."""
    if len(a_scores) != len(b_scores):
        raise ValueError(f"{what} over {len(a_scores)} and {len(b_scores)} items: must be the same items")
    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if a.size == 0:
        return a, b, None, None
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    return a, b, a[idx].mean(axis=1), b[idx].mean(axis=1)


def paired_bootstrap_diff_ci(
    a_scores: Sequence[float], b_scores: Sequence[float], *, n_boot: int = 10000, seed: int = 0
) -> Interval:
    """``mean(b - a)`` over paired items with a percentile bootstrap 95 % interval: ``n_boot``
    resamples of the items with replacement (numpy ``default_rng(seed)``: the same inputs give
    the same interval). Raises ``ValueError`` when the lengths differ; no items: NaN."""
    a, b, ma, mb = _resample_means(a_scores, b_scores, n_boot, seed, "paired bootstrap")
    if ma is None:
        return Interval(_NAN, _NAN, _NAN, 0, "paired bootstrap, no items")
    low, high = (float(x) for x in np.percentile(mb - ma, [2.5, 97.5]))
    return Interval(float((b - a).mean()), low, high, int(a.size), f"paired bootstrap, {n_boot} resamples, seed {seed}")


def paired_bootstrap_ratio_ci(
    a_scores: Sequence[float], b_scores: Sequence[float], *, n_boot: int = 10000, seed: int = 0
) -> Interval:
    """``mean(b) / mean(a)`` over paired items (e.g. accuracy retained by a variant) with a
    percentile bootstrap 95 % interval over the same resamples as
    :func:`paired_bootstrap_diff_ci`; resamples where ``mean(a)`` is 0 are dropped. NaN when
    ``mean(a)`` is 0 or there are no items."""
    a, b, ma, mb = _resample_means(a_scores, b_scores, n_boot, seed, "paired bootstrap")
    if ma is None or a.mean() == 0:
        return Interval(_NAN, _NAN, _NAN, int(a.size), "paired bootstrap ratio, reference mean is 0 or no items")
    ok = ma > 0
    low, high = (float(x) for x in np.percentile(mb[ok] / ma[ok], [2.5, 97.5]))
    return Interval(float(b.mean() / a.mean()), low, high, int(a.size),
                    f"paired bootstrap ratio, {n_boot} resamples, seed {seed}")  # fmt: skip


def paired_binary_diff_ci(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Interval:
    """Accuracy of B minus accuracy of A over the same items (right/wrong each), with the
    Agresti–Min (2005) 95 % interval: Wald on the 2×2 table with 0.5 added to each cell. Unlike
    a bootstrap it stays wide when the two agree on every item (20 agreeing items cannot show
    that the two differ by less than 9 points). The estimate is the plain difference
    ``(c - b) / n`` (``b``, ``c``: items only A, only B got right). No items: NaN."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired interval over {len(a_correct)} and {len(b_correct)} items: must be the same items")
    n = len(a_correct)
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, 0, "Agresti-Min, no items")
    b, c, _ = mcnemar(a_correct, b_correct)
    n2 = n + 2
    p12, p21 = (b + 0.5) / n2, (c + 0.5) / n2
    d = p21 - p12
    half = 1.96 * math.sqrt(max(0.0, (p12 + p21) - d * d) / n2)
    return Interval((c - b) / n, d - half, d + half, n, f"Agresti-Min paired interval, {n} items ({b} vs {c} discordant)")


def paired_diff_ci(
    a_scores: Sequence[float], b_scores: Sequence[float], *, n_boot: int = 10000, seed: int = 0
) -> tuple[Interval, tuple[int, int, float] | None]:
    """``mean(b) - mean(a)`` over paired items: the one paired comparison of a task, used by
    the report's variants and by ``e3bench compare``. Right/wrong items (every score 0 or 1):
    the Agresti–Min interval (:func:`paired_binary_diff_ci`) and the exact McNemar test
    ``(b, c, p_value)`` (:func:`mcnemar`), which agree; other per-item scores: the paired
    bootstrap (:func:`paired_bootstrap_diff_ci`) and None. Raises ``ValueError`` when the
    lengths differ."""
    if all(x in (0.0, 1.0) for x in (*a_scores, *b_scores)):
        ca, cb = [x == 1.0 for x in a_scores], [x == 1.0 for x in b_scores]
        return paired_binary_diff_ci(ca, cb), mcnemar(ca, cb)
    return paired_bootstrap_diff_ci(a_scores, b_scores, n_boot=n_boot, seed=seed), None


def verdict(iv: Interval, *, higher_is_better: bool, threshold: float = 0.0) -> str:
    """The word for an interval against the no-change point ``threshold`` (0 for a
    difference, 1 for a ratio):

    * ``"better"`` / ``"worse"`` — the whole interval lies on one side of ``threshold``
      (strictly: an end at 0 does not exclude "no change"), better meaning above it when
      ``higher_is_better``;
    * ``"no significant difference"`` — the interval contains ``threshold``;
    * ``"INCONCLUSIVE"`` — it could not be computed.

    A claim "at or above a target" (retained ≥ 99 %) is :func:`meets`."""
    if not iv.known:
        return INCONCLUSIVE
    if iv.low > threshold:
        return BETTER if higher_is_better else WORSE
    if iv.high < threshold:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


#: The words :func:`meets` returns besides :data:`INCONCLUSIVE`.
PASS, FAIL = "PASS", "FAIL"


def meets(iv: Interval, threshold: float) -> str:
    """Whether the quantity is at or above ``threshold`` (e.g. 0.99 for "retained ≥ 99 %"):
    ``"PASS"`` when the whole interval is (``low >= threshold``: a lower end exactly at the
    target passes), ``"FAIL"`` when the whole interval is below it (``high < threshold``),
    ``"INCONCLUSIVE"`` when it spans the target (40 items cannot establish 99 %) or is unknown."""
    if not iv.known:
        return INCONCLUSIVE
    if iv.low >= threshold:
        return PASS
    if iv.high < threshold:
        return FAIL
    return INCONCLUSIVE
