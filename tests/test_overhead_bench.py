"""Issue 20.6: benchmarks/overhead.py reports its ratio with a 95 % CI over interleaved rounds
and says when the CI cannot decide against the 0.98 target."""

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("overhead", Path(__file__).parents[1] / "benchmarks" / "overhead.py")
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)


def test_ratio_ci_is_t_over_log_ratios():
    g, low, high = overhead.ratio_ci([0.99, 1.01, 0.97, 1.03])
    logs = [math.log(x) for x in (0.99, 1.01, 0.97, 1.03)]
    m = sum(logs) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 3)
    assert g == pytest.approx(math.exp(m))
    assert (low, high) == pytest.approx((math.exp(m - 3.182 * sd / 2), math.exp(m + 3.182 * sd / 2)), rel=1e-3)


def test_verdict_against_the_target():
    assert overhead.verdict(0.985, 1.01) == "PASS"
    assert overhead.verdict(0.95, 0.975) == "FAIL"
    assert overhead.verdict(0.966, 0.992) == "INCONCLUSIVE"  # what four rounds could not tell apart
    assert overhead.verdict(float("nan"), float("nan")) == "INCONCLUSIVE"
