"""report.stats: intervals and tests against values computed by hand and with scipy.

Reference numbers were computed once with scipy 1.17 (``scipy.stats.binomtest``,
``t.ppf``, ``ttest_ind_from_stats``) and are written here so the tests need no scipy.
"""

from __future__ import annotations

import math

import pytest

from e3bench.core.timing import Stats, summarize
from e3bench.report.stats import (
    INCONCLUSIVE,
    Interval,
    diff_ci,
    mcnemar,
    mean_ci,
    meets,
    paired_bootstrap_diff_ci,
    paired_bootstrap_ratio_ci,
    ratio_ci,
    verdict,
)


def _stats(mean: float, std: float, n: int) -> Stats:
    return Stats(n=n, mean=mean, std=std, min=0, p50=0, p90=0, p99=0, max=0, ci95_low=None, ci95_high=None)


def test_mcnemar_exact_binomial_matches_scipy_binomtest():
    # 10 items only A right, 2 only B right, 5 both right: binomtest(2, 12, 0.5).pvalue = 0.0385742...
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    b_only_a, c_only_b, p = mcnemar(a, b)
    assert (b_only_a, c_only_b) == (10, 2)
    assert p == pytest.approx(0.03857421875, abs=1e-12)
    assert mcnemar(b, a)[2] == pytest.approx(0.03857421875, abs=1e-12)  # symmetric


def test_mcnemar_no_discordant_items_is_p_1_and_lengths_must_match():
    assert mcnemar([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar([True] * 3 + [False], [False] * 3 + [True])[2] == pytest.approx(0.625)  # 2*(1+4)/16
    with pytest.raises(ValueError, match="same items"):
        mcnemar([True], [True, False])


def test_mean_ci_student_t_matches_scipy():
    # scipy.stats.t.interval(0.95, 3, loc=3.5, scale=sem([1,2,4,7])) = (-0.70998, 7.70998)
    iv = mean_ci([1.0, 2.0, 4.0, 7.0])
    assert iv.estimate == 3.5 and iv.n == 4
    assert iv.low == pytest.approx(-0.70998, abs=2e-3)
    assert iv.high == pytest.approx(7.70998, abs=2e-3)
    one = mean_ci([5.0, None, float("nan")])
    assert one.estimate == 5.0 and one.n == 1 and not one.known


def test_diff_ci_is_welch_and_matches_scipy():
    # a: mean 10, sd 2, n 8; b: mean 12.5, sd 3, n 10. Welch df = 15.59, t.ppf(.975, 15.59) = 2.12444,
    # CI of b - a = (-0.013665, 5.013665); ttest_ind_from_stats(..., equal_var=False) p = 0.0511 (spans 0)
    iv = diff_ci(_stats(10, 2, 8), _stats(12.5, 3, 10))
    assert iv.estimate == 2.5
    assert iv.low == pytest.approx(-0.013665, abs=2e-3)
    assert iv.high == pytest.approx(5.013665, abs=2e-3)
    assert "Welch" in iv.method
    assert verdict(iv, higher_is_better=True) == "no significant difference"  # p = 0.051 > 0.05
    # the pooled (Student, df 16) interval would be (-0.125, 5.125): Welch's is narrower here
    assert iv.high < 5.05


def test_ratio_ci_delta_method_by_hand():
    a, b = _stats(100.0, 10.0, 10), _stats(150.0, 30.0, 10)
    iv = ratio_ci(a, b)
    rel = math.sqrt((10 / 100) ** 2 / 10 + (30 / 150) ** 2 / 10)  # 0.070711
    ra, rb = (0.1**2) / 10, (0.2**2) / 10
    df = (ra + rb) ** 2 / (ra**2 / 9 + rb**2 / 9)  # 13.235 -> t = 2.160 + 0.235*(2.145-2.160)
    t = 2.160 + (df - 13) * (2.145 - 2.160)
    assert iv.estimate == pytest.approx(1.5)
    # on the log scale: 1.5 * exp(±t * SE(log r)), SE(log r) = the relative SE
    assert (iv.low, iv.high) == pytest.approx((1.5 / math.exp(t * rel), 1.5 * math.exp(t * rel)), rel=1e-9)
    assert "log scale" in iv.method
    assert verdict(iv, higher_is_better=True, threshold=1.0) == "better"
    assert not ratio_ci(_stats(0, 1, 5), b).known


def test_paired_bootstrap_is_seeded_and_centred():
    a = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1] * 4
    b = [1, 0, 1, 0, 1, 0, 1, 0, 0, 1] * 4  # b loses 2 of every 10 items a gets right
    iv = paired_bootstrap_diff_ci(a, b, n_boot=2000, seed=3)
    assert iv.estimate == pytest.approx(-0.2)
    assert iv.low < -0.2 < iv.high < 0
    assert iv == paired_bootstrap_diff_ci(a, b, n_boot=2000, seed=3)
    assert paired_bootstrap_diff_ci(a, a).low == 0.0  # identical predictions: no spread
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_diff_ci([1], [1, 0])


def test_verdict_words():
    assert verdict(Interval(0.5, 0.2, 0.8, 5, "x"), higher_is_better=True) == "better"
    assert verdict(Interval(0.5, 0.2, 0.8, 5, "x"), higher_is_better=False) == "worse"
    assert verdict(Interval(-0.5, -0.8, -0.2, 5, "x"), higher_is_better=False) == "better"
    assert verdict(Interval(0.0, -0.1, 0.1, 5, "x"), higher_is_better=True) == "no significant difference"
    assert verdict(Interval(0.1, 0.0, 0.2, 5, "x"), higher_is_better=True) == "no significant difference"  # end at 0
    assert verdict(Interval(1.0, float("nan"), float("nan"), 1, "x"), higher_is_better=True) == INCONCLUSIVE


def test_diff_ci_from_summarize_stats():
    a = summarize([10, 12, 8, 11, 9, 10, 13, 7])
    b = summarize([12, 15, 9, 14, 11, 13, 16, 10, 12, 13])
    iv = diff_ci(a, b)
    assert iv.estimate == pytest.approx(2.5)
    assert iv.low > 0  # clearly faster


def test_paired_bootstrap_ratio_ci_for_quality_retained():
    a = [1.0] * 30 + [0.0] * 10  # reference 75 %
    b = [1.0] * 29 + [0.0] * 11  # variant 72.5 %: one item lost
    iv = paired_bootstrap_ratio_ci(a, b, n_boot=4000, seed=1)
    assert iv.estimate == pytest.approx(29 / 30)
    assert iv.low < 0.99 < iv.high <= 1.0  # 40 items: cannot tell 96.7 % from 99 %
    assert meets(iv, 0.99) == INCONCLUSIVE
    same = paired_bootstrap_ratio_ci(a, a)
    assert (same.low, same.estimate, same.high) == (1.0, 1.0, 1.0)
    assert not paired_bootstrap_ratio_ci([0, 0], [1, 1]).known


def test_paired_binary_diff_ci_is_agresti_min_and_never_degenerate():
    from e3bench.report.stats import paired_binary_diff_ci

    # 20 items on which both agree: the bootstrap says [0, 0]; Agresti-Min: ±1.96 * sqrt(1/22)/sqrt(22)
    same = [True] * 5 + [False] * 15
    iv = paired_binary_diff_ci(same, same)
    assert paired_bootstrap_diff_ci(same, same).high == 0.0
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((0.0, -1.96 / 22, 1.96 / 22))
    # b=10, c=2, n=40 (hand: n'=42, p12=10.5/42, p21=2.5/42, d=-8/42, var=(13/42-(8/42)^2)/42)
    a = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 23
    b = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 23
    iv = paired_binary_diff_ci(a, b)
    d, var = -8 / 42, (13 / 42 - (8 / 42) ** 2) / 42
    assert iv.estimate == pytest.approx(-0.2)
    assert (iv.low, iv.high) == pytest.approx((d - 1.96 * var**0.5, d + 1.96 * var**0.5))


def test_positive_quantities_never_get_a_negative_lower_bound():
    # two repeats, 10 and 14 ms: the plain Student t interval is 12 ± 12.706 * 2 = [-13.41, 37.41]
    plain = mean_ci([10.0, 14.0])
    assert (plain.low, plain.high) == pytest.approx((-13.412, 37.412), abs=1e-3)
    # on the log scale: 12 * exp(±12.706 * 2 / 12) = [1.4437, 99.741], the mean kept as estimate
    iv = mean_ci([10.0, 14.0], positive=True)
    assert iv.estimate == 12.0
    assert (iv.low, iv.high) == pytest.approx((1.44374, 99.7406), rel=1e-4)
    assert iv.method == "Student t over 2 values on the log scale, df=1"
    # small spread: the same interval as the plain one to 3 decimals
    many = [100.0 + d for d in (-1, 1, -0.5, 0.5, 0, 0.2, -0.2, 0.8, -0.8, 0)]
    a, b = mean_ci(many), mean_ci(many, positive=True)
    assert (b.low, b.high) == pytest.approx((a.low, a.high), abs=2e-3)


def test_the_report_interval_of_two_runs_is_positive():
    from e3bench.report.compare import interval

    iv = interval(summarize([0.010, 0.025]), "runs")  # J per token of two runs on a busy machine
    assert iv.low > 0 and iv.low == pytest.approx(0.0175 / math.exp(12.706 * 0.0075 / 0.0175), rel=1e-4)
    assert iv.method == "Student t over 2 runs on the log scale, df=1"


def test_ratio_ci_of_a_noisy_speedup_stays_positive():
    # speed-up 0.25 from two runs a side with wide spread: the plain delta method went below 0
    a, b = _stats(4.0, 1.0, 2), _stats(1.0, 0.4, 2)
    iv = ratio_ci(a, b)
    assert iv.low > 0 and iv.estimate == pytest.approx(0.25)
    assert iv.low * iv.high == pytest.approx(iv.estimate**2)  # symmetric on the log scale


def test_proportion_ci_is_wilson_inside_0_1():
    from e3bench.report.stats import proportion_ci

    iv = proportion_ci(0.25, 20)  # statsmodels proportion_confint(5, 20, method="wilson") = (0.11186, 0.46871)
    assert (iv.low, iv.high) == pytest.approx((0.11186, 0.46871), abs=1e-5)
    zero = proportion_ci(0.0, 20)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.16113, abs=1e-5)
    f1 = proportion_ci(0.98, 10, 0.03, binary=False)  # 0.98 ± 0.0588 clipped at 1
    assert (f1.low, f1.high) == pytest.approx((0.9212, 1.0)) and "clipped" in f1.method


def test_retained_at_the_threshold_passes_and_spanning_it_is_inconclusive():
    assert meets(Interval(1.0, 0.99, 1.01, 40, "x"), 0.99) == "PASS"  # lower end exactly at 99 %: at or above
    assert meets(Interval(1.0, 0.9899, 1.01, 40, "x"), 0.99) == INCONCLUSIVE  # spans it
    assert meets(Interval(0.995, 0.93, 1.06, 40, "x"), 0.99) == INCONCLUSIVE  # 40 items cannot establish it
    assert meets(Interval(0.9, 0.85, 0.95, 40, "x"), 0.99) == "FAIL"
    assert meets(Interval(0.98, 0.97, 0.99, 40, "x"), 0.99) == INCONCLUSIVE  # upper end at 99 %: not below it
    assert meets(Interval(1.0, float("nan"), float("nan"), 1, "x"), 0.99) == INCONCLUSIVE


def test_wilson_interval_holds_the_share_at_0_and_1():
    """Rounding once put the top at 0.9999999999999999 for 6 of 6 (a negative error bar the
    serving figure's matplotlib refused); the interval always holds the share itself."""
    from e3bench.core.timing import wilson_interval

    for n in range(1, 60):
        lo, hi = wilson_interval(1.0, n)
        assert lo < 1.0 and hi == 1.0, n
        lo, hi = wilson_interval(0.0, n)
        assert lo == 0.0 and hi > 0.0, n
