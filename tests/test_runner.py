"""The runner with a deterministic fake backend: timing definitions, stopping rule, record."""

import sys
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
    # TPOT = (E2E − TTFT)/(n − 1) exactly, per iteration: the summary is of exactly those values
    tpots = [(e - t) / (o - 1) for e, t, o in zip(g1.raw.e2e_ms, g1.raw.ttft_ms, g1.raw.output_tokens, strict=True)]
    assert g1.raw.output_tokens == [5, 5, 5]
    assert g1.tpot_ms.mean == pytest.approx(sum(tpots) / 3, rel=1e-12)
    assert (g1.tpot_ms.min, g1.tpot_ms.max) == pytest.approx((min(tpots), max(tpots)), rel=1e-12)
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
    rec = run_one(cfg, backend=fake)
    g = rec.efficiency.generation[0]
    assert g.iterations == 2
    assert g.energy.duration_s == pytest.approx(g.measured_s, abs=0.05)  # not + 0.4 s of warm-up
    # the warm-up is timed apart (a compiling backend's compilation lands there): 4 × 0.1 s prefill
    assert g.warmup_s == pytest.approx(0.4, abs=0.15)
    assert 0.1 <= rec.efficiency.priming_s < 0.25  # the one priming request before the idle window


def test_busy_machine_is_flagged_by_other_processes_cpu_not_load_average():
    import subprocess
    import sys

    from e3bench.bench import envinfo

    m = envinfo.collect()
    assert m.other_cpu_busy_pct_before is not None and 0 <= m.other_cpu_busy_pct_before <= 100
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


# -------------------------------------------- idle after load; peak of the measured phase
class LoadHeavyBackend(FakeBackend):
    """Loading touches ``transient_mib`` once and frees it (a GGUF conversion done in the same
    process); the ``resident_mib`` weights become resident on the first request, as
    memory-mapped safetensors do."""

    def __init__(self, resident_mib: int = 96, transient_mib: int = 384, **kw):
        super().__init__(**kw)
        self.resident_mib, self.transient_mib = resident_mib, transient_mib
        self.weights = b""
        self.rss_with_transient = self.rss_loaded = 0

    @staticmethod
    def _touched(mib: int) -> bytearray:
        buf = bytearray(mib * 2**20)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        return buf

    def load(self, model, precision, device):
        from e3bench.core.host import rss_bytes

        scratch = self._touched(self.transient_mib)
        self.rss_with_transient = rss_bytes()
        del scratch
        return super().load(model, precision, device)

    def generate(self, prompts, params, on_token=None):
        from e3bench.core.host import rss_bytes

        if not self.weights:  # first use: the mapped weights fault in
            self.weights = self._touched(self.resident_mib)
            self.rss_loaded = rss_bytes()
        return super().generate(prompts, params, on_token)


def test_idle_baseline_is_measured_with_the_model_loaded(tiny_models):
    """Issue 12.1: idle was metered before load, so the weights' RAM power (estimate meter) and
    on a GPU the CUDA context counted as work. Idle now sees the loaded model, its weights
    resident (one untimed request first: mapped weights fault in on first use), and says so."""
    fake = LoadHeavyBackend(prefill_s=0.02, step_s=0.01)
    rec = run_one(_cfg(tiny_models, batch_sizes="1", meter="estimate", idle_seconds=0.3, min_seconds=0.3), backend=fake)
    idle = rec.energy.idle
    assert idle.state == "model loaded in memory and primed by one untimed batch-1 request, before warm-up"
    # RAM power of the idle window = 0.375 W/GiB × RSS with the 96 MiB weights resident
    assert idle.power_by_domain_w["ram"] == pytest.approx(0.375 * fake.rss_loaded / 2**30, rel=0.08)
    e = rec.efficiency.generation[0].energy
    assert e.basis == "net" and e.idle_state == idle.state
    assert any("idle power was metered in this state: model loaded" in n for n in e.notes)
    # net = the model's load-dependent part: gross − (0.1·TDP + RAM at the window's RSS) × t stays
    # within the RAM the work added on top of the loaded model (a few MiB here)
    floor_w = 0.1 * e.details["tdp_w"] + 0.375 * e.details["mean_rss_gib"]
    load_part_j = e.gross_energy_j - floor_w * e.duration_s
    assert e.net_energy_j == pytest.approx(load_part_j, abs=0.375 * 0.05 * e.duration_s + 1e-6)


def test_peak_rss_is_the_measured_phase_and_the_lifetime_peak_is_labelled(tiny_models):
    """Issue 12.5: one-off work in the same process (conversion, bandwidth probe) inflated the
    peak RSS. The reported peak is the measured phase's; the lifetime peak is kept beside it."""
    fake = LoadHeavyBackend(prefill_s=0.01, step_s=0.005)
    eff = run_one(_cfg(tiny_models, batch_sizes="1"), backend=fake).efficiency
    assert eff.peak_rss_bytes >= fake.rss_loaded - 8 * 2**20  # the resident model is in it
    assert eff.peak_rss_bytes < fake.rss_with_transient - 200 * 2**20  # the freed 384 MiB is not
    assert eff.peak_rss_lifetime_bytes >= fake.rss_with_transient - 4 * 2**20  # kernel counters lag a little
    assert "warm-up and measured iterations of batch size(s) 1" in eff.peak_rss_includes
    assert "peak_rss_lifetime_bytes" in eff.peak_rss_includes
    if sys.platform.startswith("linux"):
        assert eff.peak_rss_method.startswith("VmHWM after a reset")


def _fresh_python(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter that imports this e3bench; its stdout, split. (Memory
    tests: in the test process, freed memory is reused without raising RSS.)"""
    import os
    import subprocess
    from pathlib import Path

    import e3bench

    src = str(Path(e3bench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()


def test_peak_rss_falls_back_to_sampling():
    """Without a resettable high-water mark the phase's peak is sampled."""
    out = _fresh_python("""
import time
from e3bench.core import host
host.reset_peak_rss = lambda: False
p = host.PeakRss(interval_s=0.01)
p.start()
before = host.rss_bytes()
buf = bytearray(96 * 2**20)
buf[::4096] = b"\\x01" * len(buf[::4096])
with_buf = host.rss_bytes()
deadline = time.perf_counter() + 3.0
while p._peak < with_buf - 4 * 2**20 and time.perf_counter() < deadline:
    time.sleep(0.02)
del buf
print(p.method, p.stop() - before, with_buf - before)
""")
    rise, with_buf = int(out[-2]), int(out[-1])
    assert " ".join(out[:-2]).startswith("RSS sampled every 10 ms")
    assert with_buf > 90 * 2**20 and rise >= with_buf - 4 * 2**20


def test_freed_heap_is_returned_before_the_measured_phase():
    """After an in-process conversion glibc keeps freed heap resident (the bundled model's fresh
    run carried ~220 MiB of it into the measured phase); release_free_memory hands it back."""
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    held, kept, trimmed = (int(x) for x in _fresh_python("""
from e3bench.core.host import release_free_memory, rss_bytes
chunks = []
for _ in range(2500):  # 60 KiB each: below glibc's mmap threshold, so on the heap
    b = bytearray(60 * 1024)
    b[::4096] = b"\\x01" * len(b[::4096])
    chunks.append(b)
pinned = [bytearray(100) for _ in range(10)]  # allocated last: the heap cannot shrink by itself
held = rss_bytes()
del chunks
kept = rss_bytes()
assert release_free_memory()
print(held, kept, rss_bytes())
"""))
    assert kept > held - 20 * 2**20  # freed, yet still resident: what the runner used to measure
    assert trimmed < held - 100 * 2**20


def test_a_config_built_without_build_config_is_checked_before_the_model_loads(tiny_models):
    """run_one repeats the config's own checks (one implementation: config.validate), every
    problem at once, before any meter or model work."""
    from e3bench.config.run import RunConfig

    fake = FakeBackend()
    cfg = RunConfig(model=str(tiny_models["decoder"]), region="Atlantis", tasks=("hellaswagg",), meter="none")
    with pytest.raises(E3Error) as ei:
        run_one(cfg, backend=fake)
    text = " ".join(ei.value.one_lines()) if hasattr(ei.value, "one_lines") else ei.value.one_line()
    assert "Atlantis" in text and "hellaswagg" in text
    assert fake.loaded is None


class CompilesOnFirstUse(FakeBackend):
    """Its first ``generate`` takes 0.5 s longer (a sleep standing for torch.compile)."""

    compiled = False

    def generate(self, prompts, params, on_token=None):
        if not self.compiled:
            self.compiled = True
            time.sleep(0.5)
        return super().generate(prompts, params, on_token)


def test_first_use_work_is_timed_apart_from_ttft_and_shown(tiny_models):
    """Issue 18 (pytorch-compile): compilation on first use lands in the warm-up's own time, kept
    in the record with its unit and printed apart; TTFT/E2E of the timed iterations exclude it."""
    from e3bench.report.summary import one_off_line

    fake = CompilesOnFirstUse(prefill_s=0.02, step_s=0.0)
    rec = run_one(_cfg(tiny_models, batch_sizes="1,2", min_iters=2), backend=fake)
    g1, g2 = rec.efficiency.generation
    assert rec.efficiency.priming_s is None  # no idle baseline metered: no priming request
    assert 0.5 <= g1.warmup_s < 0.9 and max(g1.raw.ttft_ms) < 300
    assert g2.warmup_s < 0.3  # compiled already
    line = one_off_line(rec)
    assert line.startswith("one-off work, untimed") and f"warm-up bs1 {g1.warmup_s:.1f} s" in line
    quick = run_one(_cfg(tiny_models, batch_sizes="1", min_iters=2), backend=FakeBackend(prefill_s=0.02))
    assert one_off_line(quick) is None  # nothing one-off: nothing printed
