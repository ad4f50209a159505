"""The report's comparisons, on synthetic records whose every figure the test chooses.

Each test reproduces a fault a user met (issue 14) with `e3bench run`, `e3bench run --tasks
hellaswag --limit 50`, the precision sweep and `e3bench report results`: the reference taken
from another workload, a configuration compared with itself, conclusions at batch 1 only, a
Pareto front keyed by label, repeats shown as indistinguishable rows, run warnings and
uncertainty missing, numbers in scientific notation.
"""

from __future__ import annotations

import math

import csv
import io

import pytest

from e3bench.report.render import build_report
from fakes_report import batch, record, save

SWEEP = dict(prompt_tokens=64, max_new_tokens=16, tasks=("hellaswag",), limit=40, batch_sizes=(1, 4))


def _user_folder(root):
    """What the issue's user had: the default run, a hellaswag run, the precision sweep."""
    recs = {
        "default": record(),  # prompt 128 → 32, no tasks
        "hs50": record(tasks=("hellaswag",), limit=50, task=("hellaswag", "acc_norm", 0.40, 0.07, 50)),
        "fp32": record(**SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40),
                       batches=[batch(1, [40, 41, 42], 0.030), batch(4, [120, 121, 122], 0.0373)]),
        "bf16": record(dtype="bf16", **SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40),
                       batches=[batch(1, [30, 31, 32], 0.035), batch(4, [150, 151, 152], 0.0142)]),
        "int8": record(dtype="int8", **SWEEP, task=("hellaswag", "acc_norm", 0.325, 0.075, 40),
                       batches=[batch(1, [8, 8.5, 9], 0.21), batch(4, [20, 21, 22], 0.17)]),
    }  # fmt: skip
    for k, r in recs.items():
        save(root, r, sweep="runs" if k in ("default", "hs50") else "smollm2-precisions")
    return recs


def _config_of(rep, recs):
    by_run = {r.run_id: r for r in recs.values()}
    return {c.label: by_run[c.run_id].config for c in rep.configs}


def test_reference_comes_from_the_same_workload_and_never_the_same_precision(tmp_path):
    recs = _user_folder(tmp_path / "results")
    rep = build_report(tmp_path / "results")
    cfg = _config_of(rep, recs)
    pairs = {(cfg[c.variant]["dtype"], cfg[c.reference]["dtype"]) for c in rep.comparisons}
    assert pairs == {("bf16", "fp32"), ("int8", "fp32")}  # the old report also had fp32 against fp32
    for c in rep.comparisons:
        for k in ("prompt_tokens", "max_new_tokens", "tasks", "limit"):
            assert cfg[c.variant][k] == cfg[c.reference][k], k  # the old reference was the run without tasks


def test_variant_figures_are_against_the_sweeps_fp32_at_every_batch(tmp_path):
    _user_folder(tmp_path / "results")
    rep = build_report(tmp_path / "results")
    (int8,) = [c for c in rep.comparisons if "int8" in c.variant]
    (t,) = int8.tasks
    assert (t.reference_value, t.variant_value) == (0.35, 0.325)  # not "no tasks"
    assert t.retained.estimate == pytest.approx(0.325 / 0.35)
    assert t.retained_verdict == "INCONCLUSIVE"  # 40 items, CI spans 99 %
    by_bs = {s.batch_size: s for s in int8.speed}
    assert by_bs[4].energy_ratio.estimate == pytest.approx(0.17 / 0.0373)  # × reference, not "−347 % saved"
    assert by_bs[1].speedup.estimate == pytest.approx(8.5 / 41)
    assert by_bs[1].speedup_verdict == "worse" and by_bs[4].energy_verdict is not None
    md = (rep.out_dir / "summary.md").read_text()
    assert "J per in+out token (× reference) [95% CI]" in md


def test_report_of_runs_folder_compares_nothing_with_itself(tmp_path):
    """`e3bench report results/runs`: the default run and the hellaswag run, both fp32."""
    _user_folder(tmp_path / "results")
    rep = build_report(tmp_path / "results" / "runs")
    assert rep.comparisons == []
    md = (rep.out_dir / "summary.md").read_text()
    assert "mixes 2 workloads (they differ in tasks)" in md  # the limit of a run without tasks asks nothing


def test_conclusions_name_the_best_at_every_batch_size(tmp_path):
    """At batch 4 bf16 uses 0.0142 J/token against fp32's 0.0373: the old summary named fp32
    "least energy" from batch 1 only."""
    root = tmp_path / "results"
    for k, r in _user_folder(root).items():
        pass
    rep = build_report(root / "smollm2-precisions")
    md = (rep.out_dir / "summary.md").read_text()
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- **Least energy per token")]
    b1, b4 = line.split("batch 4:")
    assert "fp32" in b1.split("batch 1:")[1] and "bf16" in b4 and "0.0142" in b4
    (fast,) = [ln for ln in md.splitlines() if ln.startswith("- **Fastest decode")]
    assert "batch 1: smollm2-135m pytorch fp32" in fast and "batch 4: smollm2-135m pytorch bf16" in fast


def test_pareto_front_compares_points_with_the_same_label():
    from e3bench.report.compare import pareto_front

    # the old front skipped every point with the same key, so a dominated point was "optimal"
    assert pareto_front([("a", 1.0, 0.5), ("a", 2.0, 0.4), ("b", 0.5, 0.3)]) == ["a", "b"]


def test_pareto_is_per_workload_and_batch(tmp_path):
    _user_folder(tmp_path / "results")
    md = (build_report(tmp_path / "results").out_dir / "summary.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("- **Pareto-optimal")]
    assert len(lines) == 2 and "batch 1" in lines[0] and "batch 4" in lines[1]  # sweep workload only
    assert "int8" not in "".join(lines)  # dominated at both batches
    assert "bf16" in lines[1]


def test_repeats_are_one_row_with_a_ci_across_runs(tmp_path):
    root = tmp_path / "r"
    for i, dec in enumerate(([50.0, 50.0], [54.0, 54.0], [52.0, 52.0])):
        save(root, record(batches=[batch(1, dec, 0.03 + 0.001 * i)], created=f"2026-11-30T10:0{i}:00Z"))
    rep = build_report(root)
    (c,) = rep.configs
    assert c.runs == 3
    b = c.batches[1]
    iv = b.ci("decode_tokens_per_s")
    assert iv.estimate == pytest.approx(52.0) and iv.n == 3
    k = math.exp(4.303 * 2 / 3**0.5 / 52)  # Student t on the log scale, df 2
    assert (iv.low, iv.high) == pytest.approx((52 / k, 52 * k), abs=1e-3)
    assert b.ci("ept_total_j_per_token").estimate == pytest.approx(0.031)
    (row,) = list(csv.DictReader(io.StringIO((rep.out_dir / "pivot.csv").read_text())))
    assert row["runs"] == "3" and float(row["decode_tokens_per_s_mean"]) == pytest.approx(52.0)
    assert row["ci_over"] == "3 runs"


def test_memory_is_the_measured_phase_peak_beside_the_weights(tmp_path):
    save(tmp_path, record(peak_rss=700 * 2**20, weights=270 * 2**20))
    md = (build_report(tmp_path).out_dir / "summary.md").read_text()
    head, _, body = md.partition("| peak RSS, measured phase (MiB) | weights (MiB) |")
    assert head and "| 700 | 270 |" in body
    save(tmp_path, record(peak_rss=900 * 2**20, rss_includes=None, seed=1))  # a record from before
    md = (build_report(tmp_path).out_dir / "summary.md").read_text()
    assert "| 900 (process lifetime, load included: older record) | 270 |" in md


def _samples(acc):
    return [{"doc_id": i, "acc_norm": float(a)} for i, a in enumerate(acc)]


def test_paired_comparison_with_samples(tmp_path):
    """--log-samples on both sides: McNemar over the same items and a paired bootstrap CI."""
    cfg = dict(SWEEP, log_samples=True)
    ref_items = [1] * 14 + [0] * 26
    var_items = [1] * 4 + [0] * 10 + [1] * 2 + [0] * 24  # 10 items lost, 2 gained: b=10, c=2
    save(tmp_path, record(**cfg, task=("hellaswag", "acc_norm", 14 / 40, 0.076, 40)), samples=_samples(ref_items))
    save(tmp_path, record(dtype="int8", **cfg, task=("hellaswag", "acc_norm", 6 / 40, 0.057, 40)),
         samples=_samples(var_items))  # fmt: skip
    rep = build_report(tmp_path)
    (cmp,) = rep.comparisons
    (t,) = cmp.tasks
    assert t.paired and t.n_items == 40
    assert t.discordant == (10, 2) and t.p_value == pytest.approx(0.0386, abs=1e-4)
    assert t.difference.estimate == pytest.approx(-8 / 40)
    assert t.difference.high < 0 and t.retained_verdict == "FAIL"
    assert "Agresti-Min" in t.difference.method
    md = (rep.out_dir / "summary.md").read_text()
    assert "McNemar p = 0.0386 (10 vs 2 discordant)" in md and "paired, 40 items" in md


def test_agreeing_on_every_item_of_a_small_set_is_not_a_pass(tmp_path):
    """bf16 and fp32 right on the same 5 of 20 items: the paired bootstrap CI of retained was
    [100 %, 100 %] and the report said PASS; 20 items cannot establish 99 %."""
    cfg = dict(SWEEP, log_samples=True)
    items = [1] * 5 + [0] * 15
    save(tmp_path, record(**cfg, task=("hellaswag", "acc_norm", 0.25, 0.1, 20)), samples=_samples(items))
    save(tmp_path, record(dtype="bf16", **cfg, task=("hellaswag", "acc_norm", 0.25, 0.1, 20)), samples=_samples(items))
    (t,) = build_report(tmp_path).comparisons[0].tasks
    assert t.paired and t.discordant == (0, 0) and t.p_value == 1.0
    assert t.retained.estimate == 1.0 and t.retained.low < 0.99 < t.retained.high
    assert t.retained_verdict == "INCONCLUSIVE"


def test_unpaired_comparison_says_so(tmp_path):
    save(tmp_path, record(**SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40)))
    save(tmp_path, record(dtype="bf16", **SWEEP, task=("hellaswag", "acc_norm", 0.35, 0.076, 40)))
    rep = build_report(tmp_path)
    (t,) = rep.comparisons[0].tasks
    assert not t.paired and t.retained_verdict == "INCONCLUSIVE"
    assert "unpaired (standard errors)" in (rep.out_dir / "summary.md").read_text()


def test_run_warnings_are_in_the_report(tmp_path):
    save(tmp_path, record(
        batches=[batch(1, [50.0, 51.0], 0.03, method="estimated", cut="--max-seconds 2 reached after 2 of 5 iterations")],
        warnings=("machine busy: other processes used 85% CPU before the run",),
        task=("hellaswag", "acc_norm", 0.4, 0.07, 50), tasks=("hellaswag",), limit=50, truncated=3))  # fmt: skip
    rep = build_report(tmp_path)
    md = (rep.out_dir / "summary.md").read_text()
    html = (rep.out_dir / "report.html").read_text()
    for text in ("machine busy", "energy estimated, not measured", "--max-seconds 2 reached",
                 "3 of 50 prompts truncated"):
        assert text in md and text in html, text


def test_tables_never_show_scientific_notation():
    from e3bench.report.tables import cell

    assert [cell(1170.4), cell(999.6), cell(0.0000123), cell(-0.00012), cell(0.0142)] == [
        "1170", "1000", "0.0000123", "-0.00012", "0.0142"]  # fmt: skip


def test_workload_labels_say_what_was_asked():
    from e3bench.report.workload import mixed_note, workload_of

    a = workload_of(dict(prompt_tokens=64, max_new_tokens=16, tasks=["hellaswag"], limit=40))
    b = workload_of(dict(prompt_tokens=128, max_new_tokens=32, tasks=[]))
    assert a.label == "prompt 64 tokens → 16 new tokens (synthetic prompts); tasks: hellaswag, limit 40"
    assert b.label.endswith("no quality tasks")
    assert mixed_note([a, a]) is None
    assert "(they differ in prompt_tokens, max_new_tokens, tasks)" in mixed_note([a, b])


def test_pareto_front_agrees_with_the_definition():
    """The O(n log n) front equals the brute-force definition on random small sets (ties,
    duplicates, same keys)."""
    import random

    from e3bench.report.compare import pareto_front

    def brute(points):
        return [k for i, (k, x, y) in enumerate(points)
                if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for j, (_, x2, y2) in enumerate(points) if j != i)]  # fmt: skip

    rng = random.Random(1)
    for _ in range(300):
        pts = [(rng.choice("abc"), float(rng.randint(0, 4)), float(rng.randint(0, 4))) for _ in range(rng.randint(0, 10))]
        assert pareto_front(pts) == brute(pts), pts


def test_long_tables_are_cut_in_the_page_not_in_the_csv(tmp_path):
    from e3bench.report import render

    for i in range(render.MAX_ROWS // 2 + 1):  # two batch sizes each: one row more than the cap
        save(tmp_path, record(seed=i, batches=[batch(1, [50.0, 51.0], 0.03), batch(4, [90.0, 91.0], 0.02)]))
    rep = build_report(tmp_path)
    md = (rep.out_dir / "summary.md").read_text()
    assert f"(first {render.MAX_ROWS} of {render.MAX_ROWS + 2} rows: all in the CSV files)" in md
    assert len((rep.out_dir / "pivot.csv").read_text().splitlines()) == 1 + render.MAX_ROWS + 2


def test_labels_never_collide(tmp_path):
    """Two model folders with one name (the label shows the name) and the same config in two
    workloads: every configuration still gets its own label."""
    save(tmp_path, record(model="/a/smollm2-135m"))
    save(tmp_path, record(model="/b/smollm2-135m"))
    save(tmp_path, record(prompt_tokens=64))
    rep = build_report(tmp_path)
    labels = [c.label for c in rep.configs]
    assert len(set(labels)) == 3, labels
    assert any("#" in x for x in labels) and any("[64→32 tokens, no tasks]" in x for x in labels)


def test_a_run_without_tasks_has_one_workload_whatever_its_limit(tmp_path):
    """``--limit`` (or few-shot, engine) without tasks asks nothing: the fp32 run without a limit
    and the int8 run with ``limit=30`` and no tasks are one workload, int8 is compared with fp32,
    and ``compare`` pairs them without --force (before: two sections with the same heading, no
    reference, and compare refused them as 'different workloads: limit (none) → 30')."""
    from e3bench.report import diff

    a = save(tmp_path, record(), sweep="s")
    b = save(tmp_path, record(dtype="int8", limit=30, engine="lm-eval", batches=[batch(1, [40, 41, 42], 0.05)]), sweep="s")
    rep = build_report(tmp_path)
    md = (rep.out_dir / "summary.md").read_text()
    assert "mixes" not in md and md.count("no quality tasks") == 3  # workload line + two section headings
    assert [(c.variant.split()[2], c.reference.split()[2]) for c in rep.comparisons] == [("int8", "fp32")]
    pairing = diff.pair(diff.resolve(str(a)), diff.resolve(str(b)))
    assert [p.warnings for p in pairing.pairs] == [[]]


def test_compare_and_report_judge_paired_items_alike(tmp_path):
    """One paired question, one answer: int8 loses 4 of fp32's 12 right answers out of 20 and
    gains none. McNemar's exact p is 0.125, and the report's Agresti-Min interval spans 0; compare
    had its own copy (a bootstrap, [-35 %, -5 %]) and read 'worse' beside 'p = 0.125'."""
    from e3bench.report import diff
    from e3bench.report.diff_rows import compare_pair
    from e3bench.results import store

    cfg = dict(SWEEP, log_samples=True)
    paths = []
    for dtype, items in (("fp32", [1] * 12 + [0] * 8), ("int8", [0] * 4 + [1] * 8 + [0] * 8)):
        rec = record(dtype=dtype, **cfg, task=("hellaswag", "acc_norm", sum(items) / 20, 0.11, 20))
        rec.effectiveness[0].samples_file = str(store.samples_path(tmp_path, "runs", rec.run_id, "hellaswag"))
        paths.append(save(tmp_path, rec, samples=_samples(items)))
    (t,) = build_report(tmp_path).comparisons[0].tasks
    (row,) = [r for r in compare_pair(diff.pair(*(diff.resolve(str(p)) for p in paths)).pairs[0]).rows
              if r.section == "effectiveness"]  # fmt: skip
    assert t.p_value == pytest.approx(0.125) and "p = 0.125" in row.how
    assert row.diff == t.difference and row.diff.low < 0 < row.diff.high
    assert row.verdict == "no significant difference"


def test_run_summary_names_the_metric_the_report_compares():
    """arc_easy reports acc then acc_norm: the run's three-E summary showed the first (acc 0.600)
    while the report and compare judge acc_norm (0.550); one choice now (headline_metric)."""
    from e3bench.report.compare import summarize_configs
    from e3bench.report.summary import three_es

    rec = record(tasks=("arc_easy",), limit=100, task=("arc_easy", "acc", 0.6, 0.049, 100))
    rec.effectiveness[0].metrics["acc_norm"], rec.effectiveness[0].stderr["acc_norm"] = 0.55, 0.05
    (summary,) = summarize_configs([rec])
    assert summary.task_scores["arc_easy"].metric == "acc_norm"
    effectiveness = dict(three_es(rec))["Effectiveness"]
    assert effectiveness.startswith("arc_easy acc_norm 0.550 ± 0.050"), effectiveness


def test_compare_says_when_neither_side_measured_a_figure(tmp_path):
    """Two runs with --meter none: the energy rows said 'measured on one side only'."""
    from e3bench.report import diff
    from e3bench.report.diff_rows import compare_pair

    paths = [save(tmp_path, record(dtype=d, batches=[batch(1, [50.0, 51.0, 52.0], None)])) for d in ("fp32", "int8")]
    rows = compare_pair(diff.pair(*(diff.resolve(str(p)) for p in paths)).pairs[0]).rows
    energy = [r for r in rows if r.section == "energy"]
    assert len(energy) == 2 and {r.how for r in energy} == {"measured on neither side"}


def test_workloads_name_file_tasks_by_label_or_file_not_by_their_spec():
    """A workload's text names a labelled task by its label and a file task by its file name (the
    architecture comparison's few-shot tasks printed their whole spec, temp path included)."""
    from e3bench.report.workload import task_names, workload_of

    specs = ["jsonl_mc:path=/tmp/x/out/items/copa-2shot.jsonl,label=copa_2shot,acc_norm=false",
             "jsonl_gen:path=C:\\data\\qa.jsonl", "mmlu:num_fewshot=1,subjects=anatomy", "hellaswag"]  # fmt: skip
    assert task_names(specs) == "copa_2shot, jsonl_gen[qa.jsonl], mmlu:num_fewshot=1,subjects=anatomy, hellaswag"
    w = workload_of({"prompt_tokens": 32, "max_new_tokens": 4, "tasks": specs[:1], "limit": None})
    assert w.label.endswith("; tasks: copa_2shot, all items") and "/tmp/x" not in w.short
