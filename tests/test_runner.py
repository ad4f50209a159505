"""The runner with a deterministic fake backend: timing definitions, stopping rule, record."""

import time

import pytest

from e3bench.config.run import build_config
from e3bench.core.errors import E3Error
from e3bench.bench.runner import run_one
from fakes.testing import FakeBackend


def _cfg(tiny_models, **kw):
    base = dict(
        model=str(tiny_models["decoder"]), batch_sizes="1,2", max_new_tokens=5, prompt_tokens=8,
        warmup_iters=1, min_iters=3, min_seconds=0.0, meter="none", idle_seconds=0,
    )  # fmt: skip
    base.update(kw)
    return build_config(overrides=base)


def test_timings_follow_the_definitions(tiny_models):
    fake = FakeBackend(step_s=0.01, prefill_s=0.03)
    rec = run_one(_cfg(tiny_models), backend=fake)
    assert rec.status == "ok" and fake.closed
    g1, g2 = rec.efficiency.generation
    assert g1.batch_size == 1 and g2.batch_size == 2
    assert g1.iterations == 3 and len(g1.raw.e2e_ms) == 3
    # TTFT ≈ prefill (30 ms), TPOT ≈ step (10 ms), E2E ≈ 30 + 4·10 ms
    assert 28 <= g1.ttft_ms.mean <= 45
    assert 9.5 <= g1.tpot_ms.mean <= 14
    assert 68 <= g1.e2e_ms.mean <= 95
    for it, e2e, ttft in zip(g1.raw.itl_ms, g1.raw.e2e_ms, g1.raw.ttft_ms, strict=True):
        assert len(it) == 4
        assert ttft + sum(it) <= e2e + 1e-6
    # TPOT = (E2E − TTFT)/(n − 1) exactly, per iteration
    e, t = g1.raw.e2e_ms[0], g1.raw.ttft_ms[0]
    assert g1.tpot_ms.max >= (e - t) / 4 - 1e-9 or g1.tpot_ms.min <= (e - t) / 4 + 1e-9
    # batch 2 produces twice the tokens per step
    assert g2.decode_tokens_per_s.mean == pytest.approx(2 * g1.decode_tokens_per_s.mean, rel=0.25)
    assert g1.throughput_tokens_per_s == pytest.approx(5 / (g1.e2e_ms.mean / 1e3), rel=1e-6)
    assert fake.sync_calls >= 2 * (3 + 1) * 2  # both ends of every iteration
    assert rec.efficiency.roofline is not None
    assert rec.efficiency.roofline.fraction_of_bound[1] == pytest.approx(g1.roofline_fraction)
    assert rec.config_hash and rec.manifest.cpu_cores_logical >= 1
    assert rec.energy.meter == "none" and g1.energy.method == "missing"


def test_stopping_rule_time_and_iterations(tiny_models):
    fake = FakeBackend(step_s=0.0, prefill_s=0.02)
    rec = run_one(_cfg(tiny_models, batch_sizes="1", min_iters=2, min_seconds=0.3), backend=fake)
    g = rec.efficiency.generation[0]
    assert g.measured_s >= 0.3 and g.iterations >= 10  # time-bound, not count-bound


def test_unknown_region_fails_before_work(tiny_models):
    fake = FakeBackend()
    with pytest.raises(E3Error, match="region"):
        run_one(_cfg(tiny_models, region="Atlantis"), backend=fake)
    assert fake.loaded is None


def test_real_backend_three_architectures(tiny_models):
    for key, arch in (("decoder", "decoder-only"), ("encoder-decoder", "encoder-decoder"), ("encoder", "encoder-only")):
        rec = run_one(_cfg(tiny_models, model=str(tiny_models[key]), batch_sizes="1,2", min_iters=2))
        assert rec.model.architecture == arch
        if arch == "encoder-only":
            assert [f.batch_size for f in rec.efficiency.forward] == [1, 2]
            assert rec.efficiency.forward[0].latency_ms.mean > 0
            assert not rec.efficiency.generation
        else:
            g = rec.efficiency.generation[0]
            assert g.output_tokens_per_request == 5 and g.ttft_ms.n == 2
        assert rec.efficiency.peak_rss_bytes > 50 * 2**20


def test_estimate_meter_energy_in_record(tiny_models):
    rec = run_one(_cfg(tiny_models, batch_sizes="1", meter="estimate", idle_seconds=0.3, min_seconds=0.5))
    e = rec.efficiency.generation[0].energy
    assert e.method == "estimated" and "tdp" in e.sensor
    assert e.gross_energy_j > 0 and e.net_energy_j is not None
    assert e.net_energy_j <= e.gross_energy_j
    assert e.prefill_energy_j is not None and e.decode_energy_j is not None
    assert e.co2e_g > 0 and e.grid_region
    assert rec.energy.idle.power_w > 0


def test_energy_window_covers_only_measured_iterations(tiny_models):
    """Warm-up must not be billed to the measured tokens."""
    fake = FakeBackend(step_s=0.0, prefill_s=0.1)
    cfg = _cfg(tiny_models, batch_sizes="1", warmup_iters=4, min_iters=2, meter="estimate", idle_seconds=0.2)
    g = run_one(cfg, backend=fake).efficiency.generation[0]
    assert g.iterations == 2
    assert g.energy.duration_s == pytest.approx(g.measured_s, abs=0.05)  # not + 0.4 s of warm-up


def test_busy_machine_is_flagged_by_other_processes_cpu_not_load_average():
    import subprocess
    import sys

    from e3bench.bench import envinfo

    m = envinfo.collect()
    assert m.other_cpu_busy_pct_before is not None and m.other_cpu_busy_pct_before >= 0
    # a high load average left over from a finished run is no longer a warning by itself
    quiet = m.model_copy(update={"other_cpu_busy_pct_before": 3.0, "load_avg_1m_before": 50.0})
    assert envinfo.busy_warning(quiet) is None
    busy = m.model_copy(update={"other_cpu_busy_pct_before": 60.0})
    assert "other processes used 60%" in envinfo.busy_warning(busy, "suite")
    # records from before the CPU sample fall back to the load average
    old = m.model_copy(update={"other_cpu_busy_pct_before": None, "load_avg_1m_before": 50.0})
    assert "1-min load average 50.00" in envinfo.busy_warning(old)
    # a real busy process next to us is seen (one spinning core of all the CPUs, minus noise)
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        import os

        time.sleep(0.3)
        pct = envinfo.other_cpu_busy_pct(1.0)
        cpus = os.cpu_count() or 1
        assert pct is not None and pct >= 0.7 * 100 / cpus, pct
    finally:
        spin.kill()
        spin.wait()
