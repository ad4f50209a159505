from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from e3bench.core.errors import E3Error
from e3bench.energy.meters import make_meter, meter_choices
from e3bench.energy.meters.estimate import (
    DEFAULT_W_PER_LOGICAL_CPU,
    CpuPowerModel,
    EstimateMeter,
    resolve_power_model,
)
from e3bench.energy.meters.null import NullMeter

GIB = 1024**3


def _model(tdp_w: float = 100.0, k: int = 2) -> CpuPowerModel:
    return CpuPowerModel("test CPU", tdp_w, "test", k, "none")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize(
    ("cores_busy", "expected_cpu_w"),
    [(0.0, 10.0), (1.0, 100 * (0.1 + 0.9 * 0.5**3)), (2.0, 100.0)],
)
def test_model_integrates_exactly(cores_busy: float, expected_cpu_w: float) -> None:
    """Injected CPU clock: u = cores_busy / 2 exactly; RAM fixed at 8 GiB → 3 W."""
    t_start = time.perf_counter()
    meter = EstimateMeter(
        power_model=_model(),
        cpu_time_s=lambda: cores_busy * (time.perf_counter() - t_start),
        rss_b=lambda: 8 * GIB,
    )
    meter.begin("w")
    time.sleep(0.35)
    r = meter.end("w")
    meter.close()
    assert r.method == "estimated" and r.sensor == "tdp-model"
    assert r.energy_j["cpu"] == pytest.approx(expected_cpu_w * r.duration_s, rel=0.01)
    assert r.energy_j["ram"] == pytest.approx(3.0 * r.duration_s, rel=1e-6)
    assert r.energy_j["total"] == pytest.approx(r.energy_j["cpu"] + r.energy_j["ram"])
    assert r.details["mean_utilisation"] == pytest.approx(cores_busy / 2, abs=0.01)
    assert r.details["tdp_w"] == 100.0
    assert "0.9·u³" in str(r.details["formula"])
    cpu_samples = [s.power_w for s in r.samples if s.domain == "cpu"]
    assert len(cpu_samples) >= 2  # ~10 Hz series
    assert all(s == pytest.approx(expected_cpu_w, rel=0.02) for s in cpu_samples)


def test_busy_loop_raises_utilisation_and_sleep_does_not() -> None:
    meter = EstimateMeter(cpu_tdp_w=None)
    before = os.times()
    meter.begin("busy")
    _spin(0.6)
    busy = meter.end("busy")
    after = os.times()
    spun_cpu_s = after.user + after.system - before.user - before.system
    meter.begin("sleep")
    time.sleep(0.6)
    idle = meter.end("sleep")
    meter.close()
    k = meter.power_model.logical_cpus
    # one busy thread is at most 1/k of the usable CPUs (less when the machine is contended):
    # the meter must report exactly the CPU time this process really got
    assert busy.details["mean_utilisation"] <= 1 / k + 0.05
    assert busy.details["mean_utilisation"] == pytest.approx(
        spun_cpu_s / busy.duration_s / k, abs=0.05
    )
    assert busy.details["mean_utilisation"] > 0.1
    assert idle.details["mean_utilisation"] < 0.05
    busy_w = busy.energy_j["cpu"] / busy.duration_s
    idle_w = idle.energy_j["cpu"] / idle.duration_s
    floor_w = 0.1 * meter.power_model.tdp_w
    assert idle_w == pytest.approx(floor_w, rel=0.05)
    assert busy_w > idle_w


def test_another_busy_process_does_not_raise_our_estimate() -> None:
    meter = EstimateMeter()
    meter.begin("quiet")
    time.sleep(0.5)
    quiet = meter.end("quiet")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        meter.begin("neighbour-busy")
        time.sleep(0.5)
        noisy = meter.end("neighbour-busy")
    finally:
        hog.kill()
        hog.wait()
    meter.close()
    assert noisy.details["mean_utilisation"] < 0.05
    quiet_w = quiet.energy_j["total"] / quiet.duration_s
    noisy_w = noisy.energy_j["total"] / noisy.duration_s
    assert noisy_w == pytest.approx(quiet_w, rel=0.05)


def test_tdp_table_scaling_override_and_default() -> None:
    epyc = resolve_power_model(
        cpu_model="AMD EPYC 7763 64-Core Processor", logical_cpus=2, total_logical_cpus=2,
        sockets=1,
    )
    assert epyc.tdp_w == pytest.approx(280 / 128 * 2)
    assert "280 W per socket" in epyc.tdp_source
    full = resolve_power_model(
        cpu_model="Intel(R) Xeon(R) Platinum 8480+", logical_cpus=224, sockets=2,
        total_logical_cpus=224,
    )
    assert full.tdp_w == pytest.approx(700.0)  # two whole sockets
    assert "8480+" not in resolve_power_model(cpu_model="Apple M1 Max", logical_cpus=10).tdp_source
    assert resolve_power_model(cpu_model="Apple M1 Max", logical_cpus=10).tdp_w == 30
    unknown = resolve_power_model(cpu_model="AMD EPYC", logical_cpus=2, total_logical_cpus=2)
    assert unknown.tdp_w == 2 * DEFAULT_W_PER_LOGICAL_CPU
    assert unknown.tdp_source.startswith("default: CPU 'AMD EPYC' is not in the TDP table")
    override = resolve_power_model(cpu_tdp_w=120, logical_cpus=4, total_logical_cpus=8)
    assert override.tdp_w == 60
    assert "4/8" in override.scaling


def test_sampler_overhead_is_excluded_from_utilisation() -> None:
    meter = EstimateMeter()
    meter.begin("w")
    time.sleep(1.0)
    r = meter.end("w")
    meter.close()
    polling_cpu_s = meter.sampler_thread_cpu_s
    assert polling_cpu_s > 0
    # the main thread slept: what remains is far below what the polling thread used
    assert r.details["process_cpu_s"] < 0.5 * polling_cpu_s, (r.details, polling_cpu_s)


def test_make_meter_auto_on_this_kind_of_machine_picks_estimate(tmp_path) -> None:
    meter, why = make_meter("auto", device="cpu", rapl_root=tmp_path / "none", cpu_tdp_w=50)
    try:
        assert meter.name == "estimate"
        assert why.startswith("auto → estimate: estimated, tdp-model")
        assert "override: cpu_tdp_w=50 W" in why
        assert "nvml skipped (device is cpu)" in why
        assert "rapl unavailable (RAPL is not available" in why
    finally:
        meter.close()


def test_make_meter_unknown_choice_lists_valid_ones() -> None:
    with pytest.raises(E3Error) as err:
        make_meter("rapll")
    assert "unknown meter 'rapll'" in err.value.problem and err.value.fix == "did you mean 'rapl'?"
    with pytest.raises(E3Error) as err:
        make_meter("zzz")
    assert set(meter_choices()) == {"auto", "nvml", "rapl", "estimate", "codecarbon", "none"}
    for choice in meter_choices():
        assert choice in err.value.fix


def test_none_meter_is_missing_with_reason() -> None:
    meter, why = make_meter("none")
    assert isinstance(meter, NullMeter) and "none" in why
    meter.begin("w")
    r = meter.end("w")
    assert r.method == "missing" and r.error == "meter disabled (--meter none)"
    assert r.total_j is None


def test_end_without_begin_is_missing_not_raise() -> None:
    meter = EstimateMeter()
    r = meter.end("never")
    assert r.method == "missing" and "never begun" in (r.error or "")


def test_exception_in_reader_at_end_gives_missing() -> None:
    calls = {"n": 0}

    def cpu_time() -> float:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("sensor vanished")
        return 0.0

    meter = EstimateMeter(power_model=_model(), cpu_time_s=cpu_time, rss_b=lambda: 0.0)
    meter.begin("w")
    r = meter.end("w")
    meter.close()
    assert r.method == "missing" and "sensor vanished" in (r.error or "")


def test_codecarbon_cross_check_reads_a_window() -> None:
    pytest.importorskip("codecarbon")
    meter, why = make_meter("codecarbon")
    try:
        assert "cross-check" in why
        meter.begin("w")
        _spin(0.3)
        r = meter.end("w")
    finally:
        meter.close()
    assert r.method == "estimated", r.error
    assert r.sensor.startswith("codecarbon:")
    assert r.energy_j["total"] > 0
    assert r.details["tracking_mode"] == "process"
    assert "for comparison" in str(r.details["cross_check"])


def test_long_windows_thin_the_power_series_but_keep_its_ends() -> None:
    from e3bench.energy.meters.sampling import Tick, power_samples, thin_ticks

    ticks = [Tick(t_s=i * 0.1, energy_j={"cpu": i * 1.0}) for i in range(1001)]  # 10 W
    kept, step = thin_ticks(ticks, max_ticks=100)
    assert len(kept) <= 100 and step == 11
    assert kept[0] is ticks[0] and kept[-1] is ticks[-1]
    samples = power_samples(kept)
    assert all(s.power_w == pytest.approx(10.0) for s in samples)  # averages stay exact
    assert thin_ticks(ticks[:50], max_ticks=100) == (ticks[:50], 1)


# ------------------------------------------------------- NaN is missing, not "estimated"
def test_nan_tdp_is_refused_with_the_reason_not_estimated_with_nulls() -> None:
    """`--cpu-tdp-w nan` used to give method 'estimated' with every figure null (issue 13)."""
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        meter = EstimateMeter(cpu_tdp_w=bad)
        assert not meter.available() and "cpu_tdp_w must be a positive number" in (meter.unavailable_reason() or "")
        meter.begin("w")
        r = meter.end("w")
        assert r.method == "missing" and "cpu_tdp_w" in (r.error or "")
        for choice in ("estimate", "auto"):
            with pytest.raises(E3Error, match="cpu_tdp_w must be a positive number"):
                make_meter(choice, cpu_tdp_w=bad, rapl_root="/nonexistent")


def test_a_nan_sensor_value_makes_the_window_missing_with_the_reason() -> None:
    from e3bench.core.api import EnergyReading
    from e3bench.energy.accounting import measure_idle_baseline, merge_readings, summarize
    from e3bench.energy.meters.sampling import Counter

    # the meter base: a reader whose input turns NaN mid-window
    rss = {"b": 1.0 * GIB}
    meter = EstimateMeter(power_model=_model(), cpu_time_s=lambda: 0.0, rss_b=lambda: rss["b"])
    meter.begin("w")
    rss["b"] = float("nan")
    r = meter.end("w")
    meter.close()
    assert r.method == "missing" and "non-finite" in (r.error or "")
    # a raw counter value that is NaN is a failed read, and the total is untouched
    c = Counter(scale_j=1e-6)
    c.update(100, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        c.update(float("nan"), 1.0)
    assert c.update(300, 2.0) == pytest.approx(200e-6)
    # any meter (a plugin) returning NaN: summary, idle baseline and merged buckets are missing
    nan = EnergyReading("w", 2.0, {"cpu": float("nan"), "total": float("nan")}, "estimated", "plugin")
    s = summarize(nan, None, input_tokens=1, output_tokens=1, requests=1)
    assert s.method == "missing" and "non-finite" in (s.error or "") and s.gross_energy_j is None
    assert merge_readings([nan], "train").method == "missing"

    class NanMeter:
        name = "plugin"

        def begin(self, window: str) -> None: ...

        def end(self, window: str) -> EnergyReading:
            return nan

    idle = measure_idle_baseline(NanMeter(), 0.0)  # type: ignore[arg-type]
    assert idle.method == "missing" and idle.power_w is None and "non-finite" in (idle.error or "")


def test_codecarbon_nan_is_missing() -> None:
    from types import SimpleNamespace

    from e3bench.energy.meters.codecarbon_meter import CodeCarbonMeter

    data = SimpleNamespace(cpu_energy=float("nan"), ram_energy=0.0, gpu_energy=0.0, energy_consumed=float("nan"))
    r = CodeCarbonMeter()._reading("w", data, 1.0)
    assert r.method == "missing" and "non-finite" in (r.error or "")


def test_a_read_failing_every_third_time_does_not_lose_windows() -> None:
    """One failed read at a window's begin or end used to discard its energy (issue 13)."""
    calls = {"n": 0}

    def flaky_cpu_time() -> float:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise OSError("transient")
        return 0.0

    meter = EstimateMeter(power_model=_model(), cpu_time_s=flaky_cpu_time, rss_b=lambda: 0.0)
    readings = []
    for i in range(6):
        meter.begin(f"w{i}")
        readings.append(meter.end(f"w{i}"))
    meter.close()
    assert all(r.method == "estimated" for r in readings), [r.error for r in readings]
