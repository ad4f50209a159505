"""Claims (parse, verdicts over seeds and machine load), bad combinations at load, the usage
sampler and memory breakdown with faithful fakes, and the report's claims table."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from e3bench.core.errors import E3Error
from e3bench.train.records import ConfigResult, CurvePoint, MemoryFigures, SuiteRecord
from e3bench.train.shared import claims
from e3bench.train.suite.compare import compare

SEED = Path(__file__).resolve().parents[1] / "configs" / "train" / "seed"


def test_claim_forms_parse_to_ranges():
    c = claims.parse_claim("optimizer_state_bytes", "-86% ±10")
    assert (c.lo, c.hi, c.direction) == (-96.0, -76.0, "lower")
    c = claims.parse_claim("token_efficiency", "+15%..+20%")
    assert (c.lo, c.hi, c.direction) == (15.0, 20.0, "higher")
    c = claims.parse_claim("val_loss_at_equal_tokens", "+0.00 ±0.05")
    assert (c.lo, c.hi, c.direction) == (-0.05, 0.05, "same")
    c = claims.parse_claim("gpu_utilization", ">= 90")
    assert (c.lo, c.hi, c.direction) == (90.0, math.inf, "within")
    assert claims.parse_claim("tokens_per_s", "< 0%").hi == 0.0


@pytest.mark.parametrize(
    ("metric", "text", "needle"),
    [
        ("optimizer_bytes", "-86% ±10", "unknown claim metric 'optimizer_bytes'"),
        ("optimizer_state_bytes", "-86 ±10", "compared as a % change"),
        ("val_loss_at_equal_tokens", "-5% ±1", "is in nats, not %"),
        ("tokens_per_s", "faster", "is not a claim"),
    ],
)
def test_bad_claims_are_one_line_errors(metric, text, needle):
    with pytest.raises(E3Error) as ei:
        claims.parse_claim(metric, text)
    assert needle in ei.value.problem and "\n" not in ei.value.problem


def test_verdicts():
    c = claims.parse_claim("optimizer_state_bytes", "-86% ±10")
    assert claims.verdict(c, -80.0, 0.0)[0] == "SUPPORTED"
    assert claims.verdict(c, -60.0, 5.0)[0] == "NOT SUPPORTED"
    assert claims.verdict(c, -70.0, 8.0)[0] == "INCONCLUSIVE"  # outside, but within noise of the range
    faster = claims.parse_claim("tokens_per_s", "< 0%")
    v, why = claims.verdict(faster, -3.0, 5.0)
    assert (v, why) == ("INCONCLUSIVE", "difference within run-to-run noise")
    assert claims.verdict(faster, -30.0, 5.0)[0] == "SUPPORTED"
    assert claims.verdict(faster, None, None) == ("INCONCLUSIVE", "not measured")


def _run(name, seed, *, tps, state, other_cores=0.1, spec_claims=None, losses=(6.0, 5.0)):
    from e3bench.core.timing import summarize

    step_ms = [2048 / tps * 1e3] * 19 + [2048 / tps * 1e3 * 1.01]
    return ConfigResult(
        name=name, status="ok", seed=seed, spec={"claims": spec_claims or {}}, tokens=2048 * 20, parameters=1000,
        optimizer_state_bytes=state, tokens_per_s_median_step=tps, step_time_ms=summarize(step_ms),
        val_loss_curve=[CurvePoint(step=0, tokens=0, loss=losses[0]), CurvePoint(step=20, tokens=40960, loss=losses[1])],
        final_val_loss=losses[1], load={"other_cores": other_cores},
    )  # fmt: skip


def test_judge_pairs_rounds_and_refuses_a_busier_machine():
    """Three seeds: the mean of per-round changes ± t-interval; a round whose load differed by
    more than 0.5 cores is left out of time metrics; bytes are exact."""
    cl = {"tokens_per_s": "< 0%", "optimizer_state_bytes": "-75% ±5", "val_loss_at_equal_tokens": "+0.00 ±0.05"}
    runs = []
    for k, (tb, tc, load) in enumerate([(1000, 800, 0.1), (1000, 820, 0.2), (1000, 300, 1.5)]):
        runs.append(_run("base", k, tps=tb, state=4000))
        runs.append(_run("x", k, tps=tc, state=1000, other_cores=load, spec_claims=cl, losses=(6.0, 5.01)))
    rows = {r["metric"]: r for r in claims.judge(runs, "base", compare)}
    tps = rows["tokens_per_s"]
    assert tps["seeds"] == 2  # round 3 (machine 1.4 cores busier) left out
    assert tps["measured"] == pytest.approx(-19.0)
    assert tps["uncertainty"] == pytest.approx(12.706 * 1.41421 / math.sqrt(2), rel=1e-3)  # t(1) × sd / √2
    assert tps["verdict"] == "SUPPORTED"  # -19 ± 12.7: the interval [-31.7, -6.3] excludes 0
    assert "machine load differed (1.5 vs 0.1" in tps["why"]
    st = rows["optimizer_state_bytes"]
    assert (st["measured"], st["uncertainty"], st["verdict"]) == (-75.0, 0.0, "SUPPORTED")
    assert rows["val_loss_at_equal_tokens"]["measured"] == pytest.approx(0.01)
    assert rows["val_loss_at_equal_tokens"]["verdict"] == "SUPPORTED"


def test_one_seed_uses_one_run_noise():
    runs = [_run("base", 0, tps=1000, state=4000),
            _run("x", 0, tps=990, state=1000, spec_claims={"tokens_per_s": "< 0%", "val_loss_at_equal_tokens": "< 0"},
                 losses=(6.0, 4.99))]  # fmt: skip
    rows = {r["metric"]: r for r in claims.judge(runs, "base", compare)}
    assert rows["tokens_per_s"]["measured"] == pytest.approx(-1.0)
    assert rows["tokens_per_s"]["uncertainty"] == 5.0  # floor: one run cannot tell 1 % apart
    assert rows["tokens_per_s"]["verdict"] == "INCONCLUSIVE"
    assert rows["val_loss_at_equal_tokens"]["uncertainty"] == 0.02
    assert rows["val_loss_at_equal_tokens"]["verdict"] == "INCONCLUSIVE"


def _write(tmp_path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text('name = "c"\n' + body, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[claims]\nspeedup = \"+10% ±5\"\n", "claims.speedup: unknown claim metric 'speedup'"),
        ("[train]\ncollider_threshold = 2.0\ncollider_sparsity = 0.4\n",
         "train.collider_threshold and train.collider_sparsity cannot combine"),
        ("[optim]\nname = \"muon\"\ngalore2_projection = true\n",
         "optim.galore2_projection needs optim.name = \"muon8bit\""),
        ("[optim]\nname = \"galore2\"\ngalore_rank_cap = 0.001\n", "leaves rank 0"),
        ("[claims]\ntoken_sparsity = \"40 ±2\"\n", "claims.token_sparsity needs Collider"),
        ("[claims]\ntoken_efficiency = \"+15%..+20%\"\ntokens_per_s = \"fast\"\n", "is not a claim"),
        ("[claims]\ntokens_per_s = \"< 0% vs c\"\n", "claims.tokens_per_s = \"< 0% vs c\" compares c with itself"),
        ("[claims]\ngrad_norm_spikes = \"0..2 vs baseline\"\n", "this configuration's own value"),
    ],
)
def test_bad_combinations_fail_at_load_with_one_line(tmp_path, body, needle):
    from e3bench.train.suite import load_spec

    with pytest.raises(E3Error) as ei:
        load_spec(_write(tmp_path, body))
    assert needle in ei.value.problem and "\n" not in ei.value.problem


def test_seed_set_loads_with_the_published_parameters():
    from e3bench.train.suite import expand_paths, load_spec

    by = {s.name: s for s in (load_spec(p) for p in expand_paths([SEED]))}
    assert set(by) == {"baseline", "mtp_only", "muon_8bit", "galore2", "full"}
    assert by["baseline"].optim.name == "muon" and by["baseline"].mtp.k == 0
    assert by["baseline"].train.collider_sparsity is None and by["baseline"].data.num_workers == 0
    assert (by["mtp_only"].mtp.k, by["mtp_only"].mtp.weight) == (4, 0.2)
    m8 = by["muon_8bit"]
    assert (m8.optim.name, m8.mtp.k, m8.data.num_workers, m8.data.prefetch_factor) == ("muon8bit", 4, 4, 8)
    assert m8.train.collider_sparsity == 0.4
    g2 = by["galore2"]
    assert (g2.optim.name, g2.optim.galore_rank, g2.data.num_workers) == ("galore2", 256, 4)
    f = by["full"]
    assert (f.optim.name, f.optim.galore2_projection, f.train.grad_checkpointing) == ("muon8bit", True, True)
    assert (f.data.num_workers, f.data.prefetch_factor, f.mtp.k) == (6, 12, 4)
    assert "galore-torch 1.0 does not implement GaLore 2" in g2.description
    for s in by.values():  # every configuration states claims; none is inherited from the baseline
        assert s.claims
    assert "grad_norm_in_band" not in by["mtp_only"].claims


class FakeNvml:
    """pynvml's calls used by the sampler: init, handle by index/UUID, utilization rates."""

    def __init__(self, utils):
        self.utils = list(utils)
        self.handles = []

    def nvmlInit(self):  # noqa: N802
        pass

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        self.handles.append(i)
        return f"h{i}"

    def nvmlDeviceGetUtilizationRates(self, h):  # noqa: N802
        return SimpleNamespace(gpu=self.utils.pop(0) if len(self.utils) > 1 else self.utils[0], memory=0)


class FakePsutil:
    """psutil.cpu_times (machine) and Process().children/cpu_times (this process tree)."""

    def __init__(self):
        self.busy = 100.0
        self.own = 10.0

    def cpu_times(self):
        return _Times(self.busy, 500.0)

    def Process(self):  # noqa: N802
        return SimpleNamespace(children=lambda recursive=True: [],
                               cpu_times=lambda: SimpleNamespace(user=self.own, system=0.0))  # fmt: skip


class _Times(tuple):
    """psutil's scputimes: a tuple of seconds with named fields (user, system, idle, iowait)."""

    def __new__(cls, busy, idle):
        t = super().__new__(cls, (busy, 0.0, idle, 0.0))
        t.idle, t.iowait = idle, 0.0
        return t


def test_usage_sampler_gpu_utilization_and_other_process_load(monkeypatch):
    import time

    from e3bench.train.shared.usage import UsageSampler

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml, ps = FakeNvml([10, 95, 95, 95, 95, 95, 95, 95, 95, 95]), FakePsutil()
    u = UsageSampler("cuda:1", nvml=nvml, psutil_mod=ps, interval_s=0.01)
    u.start()
    time.sleep(0.3)
    ps.busy += 0.9  # machine busy 0.9 s more, of which this process 0.3 s
    ps.own += 0.3
    gpu, load = u.stop()
    assert nvml.handles == [1]
    assert gpu["samples"] >= 5 and gpu["p10"] in (10.0, 95.0) and 80 < gpu["mean"] <= 95
    assert load["other_cores"] == pytest.approx(0.6 / 0.3, rel=0.2)
    u2 = UsageSampler("cpu", psutil_mod=FakePsutil())
    u2.start()
    assert u2.stop()[0] is None  # no GPU figures on CPU


def test_memory_breakdown_cuda_and_cpu():
    from e3bench.train.shared.memory import breakdown

    fig = MemoryFigures(rss_start_bytes=1000, peak_rss_bytes=9000, process_peak_rss_bytes=9000,
                        peak_device_memory_bytes=50_000, device_memory_reserved_bytes=60_000)  # fmt: skip
    b = breakdown(fig, device="cuda", weights=4000, gradients=4000, optimizer_state=8000, allocated_start=5000)
    assert b["activations_bytes"] == 50_000 - 5000 - 4000 - 8000
    assert b["total_bytes"] == 4000 + 4000 + 8000 + 33_000
    c = breakdown(fig, device="cpu", weights=4000, gradients=2000, optimizer_state=1000)
    assert c["activations_bytes"] == 8000 - 2000 - 1000 and "RSS" in c["method"]


def test_report_shows_a_verdict_for_every_claim(tmp_path):
    from e3bench.report.training import load_training
    from e3bench.train.suite.report import render

    runs = [_run("base", 0, tps=1000, state=4000),
            _run("x", 0, tps=700, state=1000, spec_claims={"tokens_per_s": "< 0%", "optimizer_state_bytes": "-86% ±10"})]
    rec = SuiteRecord(suite_id="s", created_utc="t", baseline="base", corpus={}, tokenizer={}, device="cpu",
                      precision="fp32", manifest=_manifest(), configs=runs)  # fmt: skip
    rec.claims = claims.judge(rec.configs, "base", compare)
    md = render(rec)
    assert "| x | tokens_per_s | < 0% | lower | -30.0 % | ±5.0 % | 1 | **SUPPORTED** |" in md
    assert "| x | optimizer_state_bytes | -86% ±10 | lower | -75.0 % | ±0.0 % | 1 | **NOT SUPPORTED** |" in md
    t = load_training({"train-suite": [(tmp_path / "suite.json", rec.model_dump(mode="json"))]})
    assert [r["verdict"] for r in t.claim_rows] == ["SUPPORTED", "NOT SUPPORTED"]
    assert t.tables()[-1][0].startswith("Training-suite claims")


def _manifest():
    from e3bench.bench import envinfo

    return envinfo.collect()


def test_token_efficiency_of_a_config_that_never_reaches_the_baseline_loss():
    runs = [_run("base", 0, tps=1000, state=4000),
            _run("x", 0, tps=1000, state=4000, spec_claims={"token_efficiency": "+15%..+20%"}, losses=(6.0, 5.5))]
    (row,) = claims.judge(runs, "base", compare)
    assert (row["measured"], row["verdict"]) == (0.0, "NOT SUPPORTED")  # efficiency < 1 (+0 %), + 10 noise < 15
    assert "never reached base's final validation loss" in row["why"]
    runs[1] = _run("x", 0, tps=1000, state=4000, spec_claims={"token_efficiency": "+15%..+20%"}, losses=(6.0, 4.0))
    (row,) = claims.judge(runs, "base", compare)
    assert row["measured"] == pytest.approx(100 * (1 / 0.5 - 1))  # base's 5.0 reached halfway: 2× efficiency
    assert row["verdict"] == "NOT SUPPORTED"


def test_a_claim_can_name_its_reference_configuration():
    """``vs NAME``: the claim is judged against that configuration's run of the same round (the
    one differing only by the technique claimed), not the baseline; a reference that was not run
    leaves it INCONCLUSIVE naming the configuration; an absolute metric takes no reference."""
    c = claims.parse_claim("backward_time_ms", "< 0% vs mtp_only")
    assert (c.hi, c.ref, c.text, c.direction) == (0.0, "mtp_only", "< 0% vs mtp_only", "lower")
    assert claims.parse_claim("tokens_per_s", "< 0%").ref is None
    with pytest.raises(E3Error, match="own value"):
        claims.parse_claim("token_sparsity", "40 ±2 vs baseline")
    cl = {"tokens_per_s": "< 0% vs mid", "optimizer_state_bytes": "-75% ±5"}
    runs = [_run("base", 0, tps=2000, state=4000), _run("mid", 0, tps=1000, state=2000),
            _run("x", 0, tps=1500, state=1000, spec_claims=cl)]  # fmt: skip
    rows = {r["metric"]: r for r in claims.judge(runs, "base", compare)}
    assert rows["tokens_per_s"]["reference"] == "mid"
    assert rows["tokens_per_s"]["measured"] == pytest.approx(50.0)  # vs mid (+50 %), not vs base (-25 %)
    assert rows["tokens_per_s"]["verdict"] == "NOT SUPPORTED"
    assert rows["optimizer_state_bytes"]["measured"] == pytest.approx(-75.0)  # no "vs": the baseline
    (row,) = [r for r in claims.judge([runs[0], runs[2]], "base", compare) if r["metric"] == "tokens_per_s"]
    assert row["verdict"] == "INCONCLUSIVE" and "'mid' was not run in this suite" in row["why"]
    from e3bench.train.suite import expand_paths, load_spec

    seed = [load_spec(p) for p in expand_paths([SEED])]
    assert claims.missing_references(seed) == []  # the seed set names only its own configurations
    warns = claims.missing_references([s for s in seed if s.name != "mtp_only"])
    assert [w.split(":")[0] for w in warns] == ["claim galore2", "claim muon_8bit"]
    assert "'mtp_only', which is not in this suite: it will be INCONCLUSIVE" in warns[1]


def test_report_marks_an_upper_bound():
    from e3bench.train.suite.report import render

    runs = [_run("base", 0, tps=1000, state=4000),
            _run("x", 0, tps=1000, state=4000, spec_claims={"token_efficiency": "+15%..+20%"}, losses=(6.0, 5.5))]
    rec = SuiteRecord(suite_id="s", created_utc="t", baseline="base", corpus={}, tokenizer={}, device="cpu",
                      precision="fp32", manifest=_manifest(), configs=runs)  # fmt: skip
    rec.claims = claims.judge(rec.configs, "base", compare)
    assert rec.claims[0]["bound"] == "upper" and rec.claims[0]["seeds"] == 1
    assert "| x | token_efficiency | +15%..+20% | higher | < +0.0 % | ±10.0 % | 1 | **NOT SUPPORTED** |" in render(rec)


def test_a_one_sided_claim_needs_its_whole_interval_past_the_bound():
    """'>= 90 % of steps in the gradient-norm band' from ONE step (1 of 1 in band) was SUPPORTED:
    the share's 95 % Wilson interval over 1 step reaches down to ~21 %. Now the share carries
    that interval and a one-sided claim is SUPPORTED only when its whole interval is past the bound."""
    c = claims.parse_claim("grad_norm_in_band", ">= 90")

    def run(share, steps):
        return SimpleNamespace(grad_norm_band={"share_in_band": share, "steps": steps})

    one = claims._one_run_noise("grad_norm_in_band", run(1.0, 1), None)
    assert one > 70
    assert claims.verdict(c, 100.0, one) == ("INCONCLUSIVE", "measured value past the bound, but its interval reaches across it")
    many = claims._one_run_noise("grad_norm_in_band", run(1.0, 100), None)
    assert many < 5 and claims.verdict(c, 100.0, many)[0] == "SUPPORTED"
    assert claims.verdict(claims.parse_claim("gpu_utilization", ">= 90"), 95.0, 0.0)[0] == "SUPPORTED"  # exact
    assert claims.verdict(claims.parse_claim("gpu_utilization", "< 50"), 45.0, 10.0)[0] == "INCONCLUSIVE"
