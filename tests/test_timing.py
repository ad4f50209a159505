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
    half = 2.776 * statistics.stdev(xs) / math.sqrt(5)
    assert s.ci95_low == pytest.approx(11.0 - half) and s.ci95_high == pytest.approx(11.0 + half)
    assert s.p50 == 11.0 and s.min == 9.0 and s.max == 13.0


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
