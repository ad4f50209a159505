from __future__ import annotations

import pytest

from e3bench.core.api import EnergyReading
from e3bench.energy.carbon import lookup
from e3bench.energy.accounting import (
    ESTIMATE_IDLE_NOTE,
    IdleBaseline,
    measure_idle_baseline,
    summarize,
)
from e3bench.energy.phases import PhaseSplit
from e3bench.energy.meters.estimate import CpuPowerModel, EstimateMeter


def _reading(total_j: float = 100.0, duration_s: float = 10.0, **kw) -> EnergyReading:
    return EnergyReading(
        window="run",
        duration_s=duration_s,
        energy_j={"cpu-package-0": total_j * 0.8, "dram-0": total_j * 0.2, "total": total_j},
        method=kw.pop("method", "measured"),
        sensor=kw.pop("sensor", "rapl:cpu-package-0+dram-0"),
        details={"formula": "E = Σ Δenergy_uj"},
        **kw,
    )


def _idle(power_w: float, sensor: str = "rapl:cpu-package-0+dram-0") -> IdleBaseline:
    return IdleBaseline(method="measured", sensor=sensor, duration_s=3.0, power_w=power_w)


def test_summarize_math() -> None:
    s = summarize(
        _reading(), _idle(2.0), input_tokens=1000, output_tokens=500, requests=4,
        phases=PhaseSplit(30.0, 70.0, 2.0, 8.0, "integrated", "test"), region="DE",
    )
    assert s.method == "measured" and s.basis == "net"
    assert s.gross_energy_j == 100.0
    assert s.net_energy_j == pytest.approx(80.0)
    assert not s.net_clamped_to_zero
    assert s.mean_power_w == pytest.approx(10.0)
    assert s.energy_per_request_j == pytest.approx(20.0)
    assert s.ept_in_j_per_token == pytest.approx(0.08)
    assert s.ept_out_j_per_token == pytest.approx(0.16)
    assert s.ept_total_j_per_token == pytest.approx(80 / 1500)
    assert s.tokens_per_j == pytest.approx(500 / 80)
    assert s.wh_per_1000_queries == pytest.approx(20.0 * 1000 / 3600)
    assert s.gross.ept_out_j_per_token == pytest.approx(0.2)
    assert s.gross.wh_per_1000_queries == pytest.approx(25.0 * 1000 / 3600)
    assert s.prefill_energy_j == 30.0 and s.decode_energy_j == 70.0
    assert s.prefill_net_energy_j == pytest.approx(26.0)
    assert s.decode_net_energy_j == pytest.approx(54.0)
    assert s.co2e_g == pytest.approx(100 / 3.6e6 * 381)
    assert s.co2e_net_g == pytest.approx(80 / 3.6e6 * 381)
    assert (s.grid_region, s.grid_year, s.grid_is_default) == ("DE", 2023, False)
    assert "Ember" in (s.grid_source or "")
    assert s.energy_by_domain_j == {"cpu-package-0": 80.0, "dram-0": 20.0}
    assert s.formula == "E = Σ Δenergy_uj"
    assert s.model_dump()["ept_out_j_per_token"] == pytest.approx(0.16)  # serialisable


def test_summarize_clamps_net_and_records_it() -> None:
    s = summarize(_reading(), _idle(20.0), input_tokens=10, output_tokens=10, requests=1)
    assert s.net_energy_j == 0.0 and s.net_clamped_to_zero
    assert any("clamped" in n for n in s.notes)
    assert s.tokens_per_j is None  # 10 tokens / 0 J is not a number
    assert s.gross.tokens_per_j == pytest.approx(0.1)
    assert s.grid_is_default and s.grid_region == "WORLD"


def test_summarize_never_mixes_sensors_or_uses_missing_idle() -> None:
    other = summarize(
        _reading(), _idle(2.0, sensor="tdp-model"), input_tokens=1, output_tokens=1, requests=1
    )
    assert other.basis.startswith("gross") and other.net_energy_j is None
    assert other.ept_total_j_per_token == pytest.approx(50.0)  # gross, as basis says
    none = summarize(_reading(), None, input_tokens=1, output_tokens=1, requests=1)
    assert none.basis == "gross (no idle baseline)"
    missing_idle = IdleBaseline(
        method="missing", sensor="x", duration_s=0, power_w=None, error="boom"
    )
    s = summarize(_reading(), missing_idle, input_tokens=1, output_tokens=1, requests=1)
    assert "boom" in s.basis


def test_summarize_missing_energy() -> None:
    r = EnergyReading(
        window="run", duration_s=5.0, energy_j={}, method="missing", sensor="none",
        error="meter disabled (--meter none)",
    )
    s = summarize(r, _idle(1.0), input_tokens=100, output_tokens=100, requests=1)
    assert s.method == "missing"
    assert s.error == "meter disabled (--meter none)"
    for field in (
        "gross_energy_j", "net_energy_j", "idle_power_w", "mean_power_w",
        "energy_per_request_j", "ept_in_j_per_token", "ept_out_j_per_token",
        "ept_total_j_per_token", "tokens_per_j", "wh_per_1000_queries", "co2e_g",
    ):
        assert getattr(s, field) is None, field


def test_summarize_accepts_grid_intensity_object() -> None:
    s = summarize(_reading(), None, input_tokens=0, output_tokens=0, requests=0,
                  region=lookup("FR"))
    assert s.co2e_g == pytest.approx(100 / 3.6e6 * 56)
    assert s.ept_in_j_per_token is None and s.energy_per_request_j is None


def test_idle_baseline_of_estimate_meter_is_the_model_floor() -> None:
    meter = EstimateMeter(
        power_model=CpuPowerModel("x", 50.0, "test", 2, "none"),
        cpu_time_s=lambda: 0.0,  # an idle process
        rss_b=lambda: 2 * 1024**3,
    )
    idle = measure_idle_baseline(meter, 0.3)
    meter.close()
    assert idle.method == "estimated" and idle.sensor == "tdp-model"
    assert idle.power_w == pytest.approx(0.1 * 50 + 0.375 * 2, rel=1e-6)
    assert idle.power_by_domain_w["cpu"] == pytest.approx(5.0)
    assert idle.note == ESTIMATE_IDLE_NOTE
    assert idle.duration_s == pytest.approx(0.3, abs=0.05)
