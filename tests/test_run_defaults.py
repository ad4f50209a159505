"""Issue 14: ``e3bench run`` with no arguments measures all three E's (a default quality task on
a fixed subset), ``--tasks none`` turns it off, a default whose data is nowhere is skipped with
one line (an asked-for task without data still fails before the model loads), and the summary
ends with the three E's side by side in 80 columns."""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import run_cli
from e3bench.cli.run import build_run_config
from e3bench.evals.defaults import default_task_or_skip
from e3bench.config.run import DEFAULT_LIMIT, DEFAULT_TASKS
from e3bench.config.validate import ConfigError
from e3bench.core.errors import E3Error


def _cfg(flags=None, *, config=None, sets=()):
    return build_run_config(dict(flags or {}), config=config, sets=list(sets), backend_options=[])


# ----------------------------------------------------------------------------- config
def test_the_default_run_has_the_default_quality_task_on_its_fixed_subset():
    cfg = _cfg()
    assert cfg.tasks == DEFAULT_TASKS == ("arc_easy",)
    assert cfg.limit == DEFAULT_LIMIT == 100
    assert cfg.defaulted("tasks") and cfg.defaulted("limit")
    # a limit of the user's own applies to the default task, which stays a default
    cfg = _cfg({"limit": 20})
    assert (cfg.tasks, cfg.limit, cfg.defaulted("tasks"), cfg.defaulted("limit")) == (("arc_easy",), 20, True, False)


def test_a_task_the_user_names_gets_no_default_limit():
    cfg = _cfg({"tasks": "hellaswag"})
    assert (cfg.tasks, cfg.limit, cfg.defaulted("tasks")) == (("hellaswag",), None, False)
    cfg = _cfg({"tasks": "arc_easy"})  # the same task as the default, asked for: not a default
    assert (cfg.limit, cfg.defaulted("tasks")) == (None, False)


@pytest.mark.parametrize("how", ["flag none", "flag NONE", "flag empty", "set none", "set []", "yaml []",
                                 "yaml none", "yaml null"])  # fmt: skip
def test_tasks_none_empty_or_an_empty_list_turn_quality_off(how, tmp_path):
    kind, value = how.split(" ", 1)
    value = "" if value == "empty" else value
    y = tmp_path / "run.yaml"
    y.write_text(f"tasks: {value}\n")
    cfg = {"flag": lambda: _cfg({"tasks": value}), "set": lambda: _cfg(sets=[f"tasks={value}"]),
           "yaml": lambda: _cfg(config=y)}[kind]()  # fmt: skip
    assert (cfg.tasks, cfg.limit, cfg.defaulted("tasks")) == ((), None, False)


def test_none_listed_beside_a_task_is_one_error_naming_the_flag():
    with pytest.raises(ConfigError) as ei:
        _cfg({"tasks": "none,hellaswag"})
    assert ei.value.one_lines() == [
        "--tasks: tasks: 'none' means no task and cannot be listed with tasks (hellaswag) — fix: drop 'none', "
        "or give --tasks none alone"
    ]


def test_other_builders_get_no_default_task():
    """Sweeps, the Python API and RunConfig() keep 'no task unless asked': only e3bench run adds it."""
    from e3bench.config.run import RunConfig, build_config

    assert RunConfig().tasks == () and build_config().tasks == ()


# ----------------------------------------------------------------------------- no data
def test_a_default_task_without_data_is_dropped_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path))  # empty: nothing local, hub offline
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg, note = default_task_or_skip(_cfg())
    assert cfg.tasks == () and cfg.limit is None and not cfg.defaulted("tasks")
    assert note.startswith("quality not measured: the default task arc_easy cannot run here (")
    assert "--tasks none" in note and "\n" not in note
    asked = _cfg({"tasks": "arc_easy", "limit": 5})
    assert default_task_or_skip(asked) == (asked, None)  # asked for: left to fail before the load
    from e3bench.evals.engine import preflight

    with pytest.raises(E3Error, match="task arc_easy"):
        preflight(asked)


def test_a_default_task_with_data_is_kept():
    cfg = _cfg()
    assert default_task_or_skip(cfg) == (cfg, None)


_FAST = ["--batch-size", "1", "--max-new-tokens", "3", "--prompt-tokens", "8", "--min-iters", "2",
         "--min-seconds", "0", "--warmup-iters", "0"]  # fmt: skip


def test_cli_without_data_still_measures_speed_and_energy_and_says_why_quality_was_skipped(tiny_models, tmp_path):
    env = {"E3BENCH_DATA_DIR": str(tmp_path / "nodata"), "HF_DATASETS_OFFLINE": "1"}
    (tmp_path / "nodata").mkdir()
    res = run_cli("run", "-m", str(tiny_models["decoder"]), *_FAST, "--meter", "estimate", "--set", "idle_seconds=0.2",
                  "-o", str(tmp_path / "out"), env=env, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr
    (path,) = (tmp_path / "out").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["effectiveness"] == [] and rec["config"]["tasks"] == [] and rec["efficiency"]["generation"]
    skipped = [w for w in rec["warnings"] if w.startswith("quality not measured: the default task arc_easy")]
    assert len(skipped) == 1
    assert "Effectiveness  not measured: the default task could not run here" in res.stdout
    # the same run asking for the task fails before the model loads, as before
    res = run_cli("run", "-m", str(tiny_models["decoder"]), *_FAST, "--tasks", "arc_easy", "-o", str(tmp_path / "o2"),
                  env=env, timeout=900)  # fmt: skip
    assert res.returncode == 2 and res.stderr.startswith("error: task arc_easy: ")
    assert "loading" not in res.stdout and not list((tmp_path / "o2").rglob("*.json"))


# ----------------------------------------------------------------------------- summary
@pytest.fixture(scope="module")
def real_record(tiny_models, tmp_path_factory):
    """A real record of the tiny Llama fixture on the pytorch backend: two batch sizes, the
    estimate meter (idle subtracted) and the default task on its first 8 items."""
    from e3bench.bench.runner import run_one

    out = tmp_path_factory.mktemp("rec")
    cfg = build_run_config({"model": str(tiny_models["decoder"]), "batch_sizes": "1,2", "max_new_tokens": 3,
                            "prompt_tokens": 8, "min_iters": 2, "min_seconds": 0, "warmup_iters": 0,
                            "meter": "estimate", "limit": 8, "output_dir": str(out)},
                           config=None, sets=["idle_seconds=0.3"], backend_options=[])  # fmt: skip
    assert cfg.tasks == ("arc_easy",)
    return run_one(cfg)


def _summary(rec, width: int) -> str:
    from rich.console import Console

    from e3bench.report.summary import print_summary

    buf = io.StringIO()
    print_summary(rec, Console(file=buf, width=width, color_system=None))
    return buf.getvalue()


def _g(x: float) -> str:
    from e3bench.report.summary import _g

    return _g(x)


def test_the_summary_ends_with_the_three_es_from_the_record(real_record):
    rec = real_record
    text = _summary(rec, 80)
    lines = [ln.rstrip() for ln in text.splitlines()]
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    assert "…" not in text
    flat = " ".join(" ".join(ln.split()) for ln in lines[lines.index(next(ln for ln in lines if "the three E's" in ln)):])
    (task,) = rec.effectiveness
    acc, se = task.metrics["acc_norm"], task.stderr["acc_norm"]  # the metric the report compares (headline_metric)
    assert (f"Effectiveness arc_easy acc_norm {acc:.3f} ± {se:.3f} (stderr) on the first 8 items; 0-shot, log-likelihood "
            "of each choice Efficiency") in flat
    g1, g2 = rec.efficiency.generation
    assert (f"Efficiency batch 1: TPOT {_g(g1.tpot_ms.mean)} ms, decode {_g(g1.decode_tokens_per_s.mean)} tok/s; "
            f"batch 2: TPOT {_g(g2.tpot_ms.mean)} ms, decode {_g(g2.decode_tokens_per_s.mean)} tok/s") in flat
    e1, e2 = g1.energy, g2.energy
    assert e1.method == "estimated" and e1.basis == "net"
    assert (f"Energy batch 1: {_g(e1.ept_out_j_per_token)} J net per output token; batch 2: "
            f"{_g(e2.ept_out_j_per_token)} J net per output token (estimated by tdp-model; idle "
            f"{_g(e1.idle_power_w)} W subtracted (metered: {e1.idle_state})") in flat
    # the three E's come last, in this order
    tail = [ln for ln in lines if ln and not ln.startswith(" ")][-3:]
    assert [ln.split()[0] for ln in tail] == ["Effectiveness", "Efficiency", "Energy"]


def test_the_summary_has_an_lm_eval_like_task_table_and_names_per_token_energy_by_what_it_counts(real_record):
    text = _summary(real_record, 80)
    (task,) = real_record.effectiveness
    assert re.search(r"Task\s+n-shot\s+Metric\s+Value\s+±\s+Stderr", text)
    for metric in ("acc", "acc_norm"):
        row = rf"{metric}\s+{task.metrics[metric]:.4f}\s+±\s+{task.stderr[metric]:.4f}"
        assert re.search(row, text), metric
    assert "J/out-tok" in text and "J/in+out-tok" in text and "tok/J" not in text
    wide = _summary(real_record, 200)
    e = real_record.efficiency.generation[0].energy
    assert re.search(rf"gen bs1\s+{_g(e.gross_energy_j)}\s+{_g(e.net_energy_j)}\s+net\s+{_g(e.ept_out_j_per_token)}"
                     rf"\s+{_g(e.ept_total_j_per_token)}", wide)  # fmt: skip


def test_the_summary_drops_columns_not_digits_at_80_columns(real_record):
    text = _summary(real_record, 80)
    assert "(not shown at 80 columns:" in text
    g1 = real_record.efficiency.generation[0]
    from e3bench.report.summary import _pm

    cell = _pm(g1.tpot_ms)
    mean, ci = cell.split(" ", 1)
    assert float(mean) == pytest.approx(g1.tpot_ms.mean, abs=0.5)
    if ci.startswith("±"):
        assert float(ci[1:]) == pytest.approx((g1.tpot_ms.ci95_high - g1.tpot_ms.ci95_low) / 2, abs=0.5)
    else:  # an asymmetric (log-scale) interval is printed as [low, high]
        low, high = (float(x) for x in ci.strip("[]").split(", "))
        assert (low, high) == pytest.approx((g1.tpot_ms.ci95_low, g1.tpot_ms.ci95_high), abs=0.05)
    assert cell in text  # whole, not "12.3 ±" / "12…"
    assert "(not shown at" not in _summary(real_record, 200)

