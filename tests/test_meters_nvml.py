from __future__ import annotations

import time

import pytest

try:
    from fakes_energy import FakeNvml
except ImportError:  # tests/ is a package
    from tests.fakes_energy import FakeNvml

from e3bench.energy.phases import integrate_power
from e3bench.core.errors import E3Error
from e3bench.energy.meters import make_meter
from e3bench.energy.meters.nvml import NvmlMeter, resolve_gpus


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0.005)


def test_counter_energy_matches_integral_of_power() -> None:
    fake = FakeNvml(power_w=100.0)
    meter = NvmlMeter(device="cuda:0", nvml=fake, environ={})
    assert meter.available(), meter.unavailable_reason()
    meter.begin("w")
    _busy_wait(0.25)
    fake.set_power(0, 300.0)
    _busy_wait(0.25)
    r = meter.end("w")
    meter.close()

    assert r.method == "measured"
    assert r.sensor == "nvml:total_energy_counter"
    assert r.error is None
    t_begin = r.samples[0].t_s  # bracket the window with the reading's own timestamps
    expected = fake.energy_j_between(0, t_begin, t_begin + r.duration_s)
    # the counter steps every 100 ms: each boundary waits for an update, so the reading is the
    # exact energy of its span (1 ms polling: ≤ 1 ms × 300 W off at each end); the span is the
    # 0.5 s of work plus the end's wait (≤ 150 ms, here at 300 W)
    assert r.energy_j["gpu0"] == pytest.approx(expected, abs=0.8)
    assert 0.5 <= r.duration_s <= 0.5 + 0.15 + 0.05
    assert r.energy_j["total"] == pytest.approx(100 + 300 * (r.duration_s - 0.5), abs=2.5)
    assert r.details["end_wait_s"] == pytest.approx(r.duration_s - 0.5, abs=0.03)
    assert r.details["gpus"]["gpu0"]["name"] == "NVIDIA H100 80GB HBM3"
    assert r.details["gpus"]["gpu0"]["power_limit_w"] == 700.0
    assert r.details["short_window"] is False
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] >= 3  # begin, polls, end
    # power series: polled on the runner's clock; NVML's power is a 1 s moving average, so
    # τ s after the step to 300 W it reads 100 + 200·τ W: at the end (τ = duration − 0.25 s)
    # about 150–180 W, never 300
    powers = [s.power_w for s in r.samples if s.domain == "gpu0"]
    assert min(powers) == 100.0 and 140 <= max(powers) <= 100 + 200 * (r.duration_s - 0.25) + 1
    assert all(s.t_s <= time.perf_counter() for s in r.samples)
    assert fake.initialised == 0  # close() shut NVML down


def test_fallback_integrates_polled_power_when_counter_unsupported() -> None:
    fake = FakeNvml(power_w=50.0, energy_supported=False)
    meter = NvmlMeter(nvml=fake, environ={})
    assert meter.available()
    meter.begin("w")
    _busy_wait(0.4)
    r = meter.end("w")
    meter.close()
    assert r.sensor == "nvml:power_polling"
    assert "Not Supported" in str(r.details["fallback_reason"])
    assert r.energy_j["total"] == pytest.approx(50.0 * r.duration_s, rel=1e-6)
    assert integrate_power(r.samples, r.samples[0].t_s, r.samples[-1].t_s) == pytest.approx(
        r.energy_j["total"], rel=1e-6
    )


def test_init_error_makes_meter_unavailable_with_reason() -> None:
    fake = FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = NvmlMeter(nvml=fake, environ={})
    assert not meter.available()
    assert "NVML Shared Library Not Found" in (meter.unavailable_reason() or "")
    meter.begin("w")
    r = meter.end("w")
    assert r.method == "missing" and "NVML" in (r.error or "")
    with pytest.raises(E3Error, match="--meter nvml: NVML could not initialise"):
        make_meter("nvml", device="cuda", nvml_module=fake)


def test_gpu_lost_mid_run_gives_missing_reading_not_exception() -> None:
    fake = FakeNvml()
    meter = NvmlMeter(nvml=fake, environ={})
    meter.begin("w")
    time.sleep(0.15)
    fake.lost = True
    time.sleep(0.15)  # the poll thread hits errors too; it must survive them
    r = meter.end("w")
    meter.close()
    assert r.method == "missing"
    assert "GPU is lost" in (r.error or "")
    assert r.total_j is None


def test_negative_counter_delta_is_dropped_and_counted() -> None:
    fake = FakeNvml(power_w=100.0)
    meter = NvmlMeter(nvml=fake, environ={}, sample_interval_s=10.0)  # no poll in between
    meter.begin("w")
    time.sleep(0.1)
    fake.glitch_counter(0, -50_000.0)  # the raw counter jumps back by 50 J
    r = meter.end("w")
    meter.close()
    assert r.details["negative_deltas_dropped"] == 1
    assert r.energy_j["total"] == 0.0  # the only delta was the glitch: dropped, not negative


def test_short_window_is_flagged() -> None:
    fake = FakeNvml(counter_period_s=0.1)
    meter = NvmlMeter(nvml=fake, environ={})
    meter.begin("short")
    time.sleep(0.02)
    r = meter.end("short")
    meter.close()
    assert r.details["short_window"] is True
    assert "shorter than the ~100 ms" in str(r.details["short_window_note"])


def test_two_gpus_sum_into_total() -> None:
    fake = FakeNvml(gpus=2, power_w=80.0)
    fake.set_power(1, 20.0)
    meter = NvmlMeter(gpu_indices=[0, 1], nvml=fake)
    meter.begin("w")
    _busy_wait(0.3)
    r = meter.end("w")
    meter.close()
    assert set(r.energy_j) == {"gpu0", "gpu1", "total"}
    assert r.energy_j["gpu0"] == pytest.approx(80.0 * r.duration_s, rel=0.02)
    assert r.energy_j["gpu1"] == pytest.approx(20.0 * r.duration_s, rel=0.02)
    assert r.energy_j["total"] == pytest.approx(r.energy_j["gpu0"] + r.energy_j["gpu1"])


def test_cuda_visible_devices_mapping() -> None:
    assert resolve_gpus("cuda", {}) == [0]
    assert resolve_gpus("cuda:1", {}) == [1]
    assert resolve_gpus("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3"}) == [3]
    assert resolve_gpus("cuda:0", {"CUDA_VISIBLE_DEVICES": "GPU-fake-1"}) == ["GPU-fake-1"]
    with pytest.raises(E3Error, match="not visible"):
        resolve_gpus("cuda:2", {"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(E3Error, match="not visible"):
        resolve_gpus("cuda:0", {"CUDA_VISIBLE_DEVICES": ""})
    fake = FakeNvml(gpus=2)
    fake.set_power(1, 42.0)
    meter = NvmlMeter(device="cuda:0", nvml=fake, environ={"CUDA_VISIBLE_DEVICES": "GPU-fake-1"})
    assert meter.gpus[0].nvml_id == "GPU-fake-1" and meter.gpus[0].domain == "gpu0"
    meter.begin("w")
    _busy_wait(0.2)
    r = meter.end("w")
    meter.close()
    assert r.energy_j["gpu0"] == pytest.approx(42.0 * r.duration_s, rel=0.03)


def test_auto_picks_nvml_on_cuda(tmp_path) -> None:
    meter, why = make_meter("auto", device="cuda", nvml_module=FakeNvml(), rapl_root=tmp_path)
    try:
        assert meter.name == "nvml"
        assert why.startswith("auto → nvml: measured, nvml:total_energy_counter")
        assert "gpu0 NVIDIA H100" in why and "CPU not included" in why
    finally:
        meter.close()


def test_auto_on_cuda_without_nvml_falls_back_and_says_why(tmp_path) -> None:
    broken = FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    meter, why = make_meter(
        "auto", device="cuda", nvml_module=broken, rapl_root=tmp_path / "absent"
    )
    try:
        assert meter.name == "estimate"
        assert "nvml unavailable (NVML could not initialise" in why
        assert "rapl unavailable" in why
        assert "GPU energy NOT included" in why
    finally:
        meter.close()
