import math
import statistics

import numpy as np
import pytest

from e3bench.core.timing import TokenClock, percentile, summarize, t_critical_95


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    xs = sorted(rng.normal(size=37).tolist())
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_summary_stats_and_ci():
    xs = [10.0, 12.0, 11.0, 13.0, 9.0]
    s = summarize(xs)
    assert s.n == 5 and s.mean == pytest.approx(11.0)
    assert s.std == pytest.approx(statistics.stdev(xs))
    k = math.exp(2.776 * statistics.stdev(xs) / math.sqrt(5) / 11.0)  # every value > 0: the log scale
    assert s.ci95_low == pytest.approx(11.0 / k) and s.ci95_high == pytest.approx(11.0 * k)
    assert s.p50 == 11.0 and s.min == 9.0 and s.max == 13.0
    mixed = summarize([x - 11.0 for x in xs])  # a quantity that can be negative: mean ± t·SE
    half = 2.776 * statistics.stdev(xs) / math.sqrt(5)
    assert mixed.ci95_low == pytest.approx(-half) and mixed.ci95_high == pytest.approx(half)


def test_a_positive_quantitys_interval_never_goes_below_zero_and_is_the_reports():
    """Two iterations of 10 and 20 ms stored [-48.5, 78.5] ms (mean ± t·SE, t = 12.706) while the
    report showed the log-scale interval of the same mean: one formula now, above zero."""
    from e3bench.report.stats import t_interval

    s = summarize([10.0, 20.0])
    k = math.exp(12.706 * statistics.stdev([10.0, 20.0]) / math.sqrt(2) / 15.0)
    assert (s.ci95_low, s.ci95_high) == pytest.approx((15.0 / k, 15.0 * k))
    assert s.ci95_low > 0
    iv = t_interval(s.mean, s.std, s.n, positive=True, over="iterations")
    assert (iv.low, iv.high) == (s.ci95_low, s.ci95_high)
    assert iv.method == "Student t over 2 iterations on the log scale, df=1"


def test_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        s = summarize(rng.normal(5.0, 2.0, size=8).tolist())
        hits += s.ci95_low <= 5.0 <= s.ci95_high
    assert 0.91 <= hits / 400 <= 0.99


def test_edge_cases():
    assert summarize([]) is None
    one = summarize([3.0])
    assert one.std == 0 and one.ci95_low is None
    from e3bench.core.timing import Stats

    assert Stats.model_validate_json(one.model_dump_json()) == one  # survives a JSON round trip
    assert t_critical_95(1000) == pytest.approx(1.96)


def test_token_clock(monkeypatch):
    """TTFT = first callback − start, ITL = gaps between callbacks, read on core.timing.clock;
    start() forgets the previous request."""
    import e3bench.core.timing as timing

    ticks = iter([10.0, 10.25, 10.30, 10.42, 20.0, 20.5])
    monkeypatch.setattr(timing, "clock", lambda: next(ticks))
    tc = TokenClock()
    assert tc.ttft_s is None and tc.itl_s() == []
    tc.start()
    tc(1)
    tc(2)
    tc(3)
    assert tc.ttft_s == pytest.approx(0.25)
    assert tc.itl_s() == pytest.approx([0.05, 0.12])
    tc.start()
    tc(1)
    assert tc.stamps == [20.5] and tc.ttft_s == pytest.approx(0.5) and tc.itl_s() == []


def test_gpu_bandwidth_takes_the_most_specific_name():
    from e3bench.bench.roofline import gpu_bandwidth

    # "H200" is a substring of "GH200": the GH200 entry (4000 GB/s) must win, not H200's 4800
    assert gpu_bandwidth("NVIDIA GH200 480GB").bytes_per_s == 4000e9
    assert gpu_bandwidth("NVIDIA H200").bytes_per_s == 4800e9
    assert gpu_bandwidth("NVIDIA H100 NVL").bytes_per_s == 3900e9
    assert gpu_bandwidth("NVIDIA H100 80GB HBM3").bytes_per_s == 3350e9
    assert gpu_bandwidth("NVIDIA L40S").bytes_per_s == 864e9 and gpu_bandwidth("NVIDIA L4").bytes_per_s == 300e9
    assert gpu_bandwidth("NVIDIA A100-SXM4-80GB").bytes_per_s == 2039e9
    assert gpu_bandwidth("Imaginary GPU") is None


def test_the_summary_prints_an_asymmetric_interval_as_its_ends():
    """A log-scale interval far from symmetric is not printed as ``mean ± half`` (which would
    claim a low end the interval does not have)."""
    from e3bench.report.summary import _pm

    wide = summarize([10.0, 20.0])  # [~0.14, ~7e2]: ± 350 would put the low end at -335
    assert "[" in _pm(wide) and "±" not in _pm(wide)
    low, high = (float(x) for x in _pm(wide).split(" ", 1)[1].strip("[]").split(", "))
    assert low == pytest.approx(wide.ci95_low, abs=0.05) and high == pytest.approx(wide.ci95_high, abs=0.05)
    tight = summarize([10.0, 10.1, 9.9, 10.0, 10.05])
    assert _pm(tight).startswith("10.0 ± ")
