"""The statistics behind every comparison in a report: 95 % confidence intervals and tests.

One implementation each, imported by the report, ``e3bench compare`` and the summaries:

* :func:`mean_ci` — Student-t interval of a mean (e.g. across repeats of one configuration);
* :func:`diff_ci` — Welch interval of ``b.mean - a.mean`` from two :class:`~e3bench.core.timing.Stats`;
* :func:`ratio_ci` — ``b.mean / a.mean`` with a delta-method interval (speed-up, energy ratio);
* :func:`mcnemar` — exact McNemar test of two classifiers scored on the same items;
* :func:`paired_bootstrap_diff_ci` — percentile bootstrap of ``mean(b - a)`` over paired items;
* :func:`paired_bootstrap_ratio_ci` — the same for ``mean(b) / mean(a)`` (quality retained);
* :func:`paired_binary_diff_ci` — Agresti–Min interval of a paired difference of right/wrong items;
* :func:`paired_diff_ci` — the paired comparison of one task (Agresti–Min + McNemar, or bootstrap);
* :func:`paired_binary_diff_ci` — right/wrong scores of the same items: Agresti–Min interval
  (the bootstrap has no spread when the two agree on every item, however few);
* :func:`verdict` — the word a table shows for an interval.

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

from e3bench.core.timing import Stats, t_critical_95

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


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean of ``values`` with its Student-t 95 % interval (sample std, df = n - 1).

    None and NaN values are dropped; one value gives a NaN interval, none a NaN estimate.
    """
    arr = np.asarray([float(v) for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(arr.size)
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, 0, "mean, no values")
    mean = float(arr.mean())
    if n == 1:
        return Interval(mean, _NAN, _NAN, 1, "mean of 1 value, no interval")
    half = t_critical_95(n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, f"Student t, df={n - 1}")


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
    """``b.mean / a.mean`` with a 95 % interval by the delta method (independent samples):
    SE(r) = |r| * sqrt((sd_a/mean_a)^2/n_a + (sd_b/mean_b)^2/n_b), t with Welch's df of the
    relative variances.
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
    half = _t95(df) * abs(r) * math.sqrt(ra + rb)
    return Interval(r, r - half, r + half, a.n + b.n, f"delta method, Welch t df={df:.1f}")


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
    """The word for an interval compared with ``threshold`` (0 for a difference, 1 for a ratio,
    0.99 for "retained ≥ 99 %"):

    * ``"better"`` / ``"worse"`` — the whole interval lies on one side of ``threshold``
      (strictly), better meaning above it when ``higher_is_better``;
    * ``"no significant difference"`` — the interval contains ``threshold`` and
      ``threshold`` is the no-change point (0 for a difference, 1 for a ratio);
    * ``"INCONCLUSIVE"`` — the interval spans any other threshold (e.g. 40 items cannot
      establish 99 % retained), or it could not be computed.
    """
    if not iv.known:
        return INCONCLUSIVE
    if iv.low > threshold:
        return BETTER if higher_is_better else WORSE
    if iv.high < threshold:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE if threshold in (0.0, 1.0) else INCONCLUSIVE
