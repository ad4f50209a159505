"""The one metered window (energy.window): ordering, idle subtraction, training buckets, and the
cross-check meter reaching every kind of window (tasks included)."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest

from e3bench.energy.window import EnergyTotals, MeteredWindow
from e3bench.core.api import EnergyReading
from e3bench.core.timing import clock
from e3bench.energy.accounting import merge_readings


class ConstantPowerMeter:
    """A counter-style meter drawing ``power_w`` at all times: energy = power × window time on
    the same clock the window uses, exactly what an RAPL/NVML counter diff gives."""

    name: ClassVar[str] = "rapl"

    def __init__(self, power_w: float, log: list[str] | None = None, sensor: str = "rapl:package-0") -> None:
        self.power_w = power_w
        self.log = log if log is not None else []
        self.sensor = sensor
        self._t0: dict[str, float] = {}
        self.closed = False

    def available(self) -> bool:
        return True

    def unavailable_reason(self) -> str | None:
        return None

    def begin(self, window: str) -> None:
        self.log.append(f"begin:{window}")
        self._t0[window] = clock()

    def end(self, window: str) -> EnergyReading:
        self.log.append(f"end:{window}")
        dt = clock() - self._t0.pop(window)
        return EnergyReading(window, dt, {"total": self.power_w * dt}, "measured", self.sensor)

    def close(self) -> None:
        self.closed = True


def test_window_syncs_before_begin_and_before_end_and_both_meters_see_it():
    log: list[str] = []
    main, cross = ConstantPowerMeter(50.0, log), ConstantPowerMeter(20.0, log, sensor="other")
    win = MeteredWindow(main, sync=lambda: log.append("sync"), cross=cross)
    m = win.run("w", lambda: (time.sleep(0.05), 7)[1])
    assert m.result == 7
    assert log == ["sync", "begin:w", "begin:w", "sync", "end:w", "end:w"]
    assert m.elapsed_s >= 0.05
    assert m.reading.energy_j["total"] == pytest.approx(50.0 * m.reading.duration_s)
    assert m.cross_reading is not None and m.cross_reading.energy_j["total"] == pytest.approx(20.0 * m.cross_reading.duration_s)


def test_window_ends_meters_when_the_work_raises():
    log: list[str] = []
    win = MeteredWindow(ConstantPowerMeter(5.0, log), sync=lambda: log.append("sync"))

    def boom():
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        win.run("w", boom)
    assert log == ["sync", "begin:w", "sync", "end:w"]


def test_summary_subtracts_this_meters_idle_and_the_cross_check_its_own():
    win = MeteredWindow(ConstantPowerMeter(50.0), cross=ConstantPowerMeter(30.0, sensor="other"))
    win.measure_idle(0.05, "test state")
    assert win.idle.power_w == pytest.approx(50.0) and win.cross_idle.power_w == pytest.approx(30.0)
    # the work draws 80 W on the main meter: net = (80 - 50) W × t
    win.meter.power_w, win.cross.power_w = 80.0, 40.0
    m = win.run("w", lambda: time.sleep(0.05))
    main, cross = win.summaries(m, input_tokens=10, output_tokens=10, requests=2)
    t = m.reading.duration_s
    assert main.gross_energy_j == pytest.approx(80.0 * t)
    assert main.net_energy_j == pytest.approx(30.0 * t)
    assert main.basis == "net" and main.ept_total_j_per_token == pytest.approx(30.0 * t / 20)
    assert cross is not None and cross.net_energy_j == pytest.approx(10.0 * m.cross_reading.duration_s)
    assert "cross-check" in " ".join(cross.notes)


def test_training_buckets_add_windows_and_subtract_idle_over_the_total_time():
    win = MeteredWindow(ConstantPowerMeter(10.0))
    win.measure_idle(0.03, "test state")
    win.meter.power_w = 60.0
    totals = EnergyTotals(win)
    for _ in range(3):
        with totals.window("train"):
            time.sleep(0.02)
    s = totals.summary("train", tokens=300, samples=6)
    dur = s.duration_s
    assert dur >= 0.06 and s.details["windows"] == 3
    assert s.gross_energy_j == pytest.approx(60.0 * dur)
    assert s.net_energy_j == pytest.approx(50.0 * dur)
    assert s.ept_total_j_per_token == pytest.approx(50.0 * dur / 300)
    assert s.energy_per_request_j == pytest.approx(50.0 * dur / 6)
    basis, gross = totals.total_j("train")
    assert basis == pytest.approx(s.net_energy_j) and gross == pytest.approx(s.gross_energy_j)
    assert totals.total_j("eval") == (0.0, 0.0)
    totals.reset("train")
    assert totals.summary("train").method == "missing"


def test_merge_keeps_a_missing_window_missing():
    ok = EnergyReading("a", 1.0, {"total": 5.0}, "measured", "s")
    bad = EnergyReading("b", 1.0, {}, "missing", "s", error="counter lost")
    merged = merge_readings([ok, bad], "train")
    assert merged.method == "missing" and merged.error == "counter lost" and merged.duration_s == 2.0
    both = merge_readings([ok, ok], "train")
    assert both.energy_j == {"total": 10.0} and both.duration_s == 2.0


def test_create_closes_the_first_meter_when_the_cross_check_cannot_be_built():
    from e3bench.core.errors import E3Error

    with pytest.raises(E3Error):
        MeteredWindow.create("none", cross_choice="nvml", device="cpu")


@pytest.mark.slow
def test_cross_check_is_recorded_for_tasks_and_forward(tiny_models):
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config

    cfg = build_config(overrides=dict(
        model=str(tiny_models["decoder"]), batch_sizes="1", max_new_tokens=3, prompt_tokens=8, warmup_iters=0,
        min_iters=2, min_seconds=0.0, meter="estimate", cross_check_meter="estimate", idle_seconds=0.1,
        tasks="arc_easy", limit=4,
    ))  # fmt: skip
    rec = run_one(cfg)
    (task,) = rec.effectiveness
    assert task.energy is not None and task.energy.method == "estimated"
    assert task.energy_cross_check is not None and "cross-check" in " ".join(task.energy_cross_check.notes)
    assert rec.efficiency.generation[0].energy_cross_check is not None
    enc = build_config(overrides=dict(
        model=str(tiny_models["encoder"]), batch_sizes="1", prompt_tokens=8, warmup_iters=0, min_iters=2,
        min_seconds=0.0, meter="estimate", cross_check_meter="estimate", idle_seconds=0,
    ))  # fmt: skip
    fwd = run_one(enc).efficiency.forward[0]
    assert fwd.energy is not None and fwd.energy_cross_check is not None


def test_training_meters_idle_after_the_model_is_built(tmp_path):
    """Issue 12.1 for training: the suite metered idle once before any model existed; now each
    configuration's idle is metered with its model and optimizer resident, and says so."""
    import random

    from test_train_suite import TINY, WORDS, _toml

    from e3bench.train.suite import run_suite

    rng = random.Random(0)
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(7)) + "." for _ in range(600)))
    msgs: list[str] = []
    rec, _ = run_suite([_toml(tmp_path, "baseline", TINY)], output_dir=tmp_path / "out", text=str(corpus),
                       meter="estimate", idle_seconds=0.2, plot=False, progress=msgs.append)  # fmt: skip
    idle_at = next(i for i, m in enumerate(msgs) if m.startswith("measuring idle power"))
    assert idle_at > msgs.index(next(m for m in msgs if m.startswith("== baseline")))
    state = "model of 'baseline' built on cpu with its optimizer, before the first step"
    assert state in msgs[idle_at]
    e = rec.configs[0].train_energy
    assert e.basis == "net" and e.idle_state == state and rec.energy.idle.state == state


def test_finetune_meters_idle_after_load(tiny_models, tmp_path):
    import json

    from e3bench.train.finetune import FinetuneConfig, run_finetune

    rows = [{"query": f"Passage: {w} sky\nQuestion: is it blue?", "choices": ["no", "yes"], "gold": int(w == "blue")}
            for w in ("blue", "red", "green", "blue") * 4]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = FinetuneConfig(model=str(tiny_models["decoder"]), train_file=str(data), eval_file=str(data), max_steps=2,
                         eval_every=2, batch_size=4, max_eval_samples=8, meter="estimate", idle_seconds=0.1,
                         output_dir=str(tmp_path / "out"), max_seq_len=64)  # fmt: skip
    msgs: list[str] = []
    rec, _ = run_finetune(cfg, progress=msgs.append)
    loaded_at = next(i for i, m in enumerate(msgs) if " params, " in m and "load " in m)
    idle_at = next(i for i, m in enumerate(msgs) if m.startswith("measuring idle power"))
    assert loaded_at < idle_at
    state = "model loaded on cpu (lora), optimizer built, before the first step"
    assert rec.energy.idle.state == state and rec.train_energy.idle_state == state
