"""Behaviour at scale (issue 14): ``ls`` lists the newest rows of a large folder and says how many
it left out; the report caps its long tables and summary lines, saying where the rest is; the
index is read once per ``ls``. Timings are a benchmark (``benchmarks/report_scale.py``), not
tested here: these tests check what a user sees.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import run_cli
from fakes_report import batch, record, save


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """60 runs (one configuration each: seed = i), each at batch 1 and 4:
    120 ``ls`` rows, created a minute apart (run ``i`` at minute ``i``)."""
    root = tmp_path_factory.mktemp("many") / "results"
    for i in range(60):
        rec = record(dtype=("fp32", "bf16", "int8")[i % 3], seed=i, created=f"2026-11-30T{10 + i // 60:02d}:{i % 60:02d}:00Z",
                     batches=[batch(1, [50.0 + i, 51.0 + i], 0.03), batch(4, [150.0 + i, 151.0 + i], 0.01)])  # fmt: skip
        rec.run_id = f"run{i:03d}"
        save(root, rec)
    return root


def _ids(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if line.startswith("run") and not line.startswith("run_id")]


def test_ls_table_shows_the_newest_50_rows_and_says_how_to_see_the_rest(many):
    res = run_cli("ls", str(many), env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    ids = _ids(res.stdout)
    # the newest 50 of 120 rows (runs 35..59 at batch 1 and 4), oldest first as before
    assert ids == [f"run{i:03d}" for i in range(35, 60) for _ in (1, 4)]
    assert ("showing the newest 50 of 120 rows (70 older not shown): --limit N shows N, --all every row, "
            "--format csv|json all as data") in res.stderr  # fmt: skip


def test_ls_limit_all_and_data_formats(many):
    res = run_cli("ls", str(many), "--limit", "3", "--filter", "batch_size=4", env={"COLUMNS": "200"})
    assert _ids(res.stdout) == ["run057", "run058", "run059"]
    assert "showing the newest 3 of 60 rows (57 older not shown)" in res.stderr
    res = run_cli("ls", str(many), "--all", env={"COLUMNS": "200"})
    assert len(_ids(res.stdout)) == 120 and "showing" not in res.stderr
    # data formats are every row unless --limit is given
    res = run_cli("ls", str(many), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 120 and rows[0]["run_id"] == "run000" and res.stderr == ""
    res = run_cli("ls", str(many), "--format", "json", "--limit", "2")
    assert [(r["run_id"], r["batch_size"]) for r in json.loads(res.stdout)] == [("run059", 1), ("run059", 4)]
    res = run_cli("ls", str(many), "--limit", "0")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: --limit 0 shows no rows — fix: pass --limit 1 or more, or --all for every row"]


def test_ls_few_rows_print_no_limit_line(many, tmp_path):
    root = tmp_path / "few"
    save(root, record(seed=1))
    res = run_cli("ls", str(root))
    assert res.returncode == 0 and len(_ids(res.stdout)) == 1 and res.stderr == ""


def test_listing_counts_and_skipped_come_from_one_look_at_the_index(many, tmp_path, monkeypatch):
    from e3bench.results import index, store

    root = tmp_path / "r"
    for i in range(3):
        save(root, record(seed=i))
    (root / "runs" / "broken.json").write_text('{"schema_version": 1, "run_id": "x"')
    walks = []
    real = store.json_keys
    monkeypatch.setattr(store, "json_keys", lambda r: walks.append(r) or real(r))
    got = index.listing(root, [], ["run_id"], newest=2)
    assert len(got.rows) == 2 and got.total == 3 and len(walks) == 1
    assert len(got.skipped) == 1 and got.skipped[0].startswith(f"skipped {root / 'runs' / 'broken.json'}: ")


def test_json_keys_match_the_rglob_listing(tmp_path):
    """The scandir walk finds what ``sorted(rglob('*.json'))`` did, minus hidden files and
    anything in a samples folder, in the same order."""
    from e3bench.results.store import json_files, json_keys

    for rel in ("b/2.json", "b/10.json", "a-x/1.json", "a/z/1.json", "a/1.json", "a/.hidden.json", "a/samples/s.json",
                "samples/deep/x.json", "a/notes.txt", "a b/ü.json"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    want = [p for p in sorted(tmp_path.rglob("*.json"))
            if not p.name.startswith(".") and "samples" not in p.relative_to(tmp_path).parts[:-1]]  # fmt: skip
    assert list(json_files(tmp_path)) == want
    assert [k for k, _ in json_keys(tmp_path)] == [p.relative_to(tmp_path).as_posix() for p in want]


def test_summary_of_a_few_values_is_numpys_bit_for_bit():
    """Below 8 values ``summarize`` skips numpy (a 10,000-record report calls it 58,000 times
    on 2 or 3 values): every field equals what numpy computes, NaN and None dropped."""
    import math
    import random

    import numpy as np

    from e3bench.core.timing import mean_ci95, summarize

    rng = random.Random(3)
    for _ in range(3000):
        vals = [rng.choice([rng.uniform(-1, 1) * 10 ** rng.randint(-3, 6), rng.gauss(100, 5), 1.0, 3.3])
                for _ in range(rng.randint(1, 7))] + rng.choice([[], [None], [math.nan]])  # fmt: skip
        arr = np.asarray([v for v in vals if v is not None and not math.isnan(v)])
        n = arr.size
        std = float(arr.std(ddof=1)) if n > 1 else 0.0
        ci = mean_ci95(float(arr.mean()), std, n, positive=bool(arr.min() > 0)) or (None, None)
        want = (n, float(arr.mean()), std, float(arr.min()), *(float(x) for x in np.percentile(arr, [50, 90, 99])),
                float(arr.max()), *ci)  # fmt: skip
        s = summarize(vals)
        assert (s.n, s.mean, s.std, s.min, s.p50, s.p90, s.p99, s.max, s.ci95_low, s.ci95_high) == want, vals


def test_alike_summary_lines_fold_and_every_line_is_kept_beside(tmp_path, monkeypatch):
    """Thousands of variant verdicts made a 1.3 MB executive summary: at most MAX_ALIKE lines of
    one kind are shown (page and summary.md), then one line saying how many more and where;
    executive_summary.md holds them all."""
    from e3bench.report import render
    from e3bench.report.render import build_report

    lines = ["- **Workload 1:** w", *[f"- **Quality INCONCLUSIVE:** v{i}" for i in range(13)], "- **Run warnings:** x"]
    shown, cut = render._fold_alike(lines)
    assert cut == 13 - render.MAX_ALIKE == 3
    assert shown == [*lines[: 1 + render.MAX_ALIKE],
                     "- **Quality INCONCLUSIVE:** and 3 more lines like these (all in executive_summary.md)", lines[-1]]  # fmt: skip
    assert render._fold_alike(lines[:5]) == (lines[:5], 0)

    monkeypatch.setattr(render, "MAX_ALIKE", 1)
    save(tmp_path, record(dtype="fp32", task=("hellaswag", "acc_norm", 0.40, 0.02, 100)))
    for dtype in ("int8", "int4", "bf16"):
        save(tmp_path, record(dtype=dtype, task=("hellaswag", "acc_norm", 0.395, 0.02, 100)))
    rep = build_report(tmp_path)
    every = (rep.out_dir / "executive_summary.md").read_text()
    verdicts = [x for x in every.splitlines() if x.startswith("- **Quality INCONCLUSIVE:**")]
    assert len(verdicts) == 3
    md = (rep.out_dir / "summary.md").read_text()
    assert verdicts[0] in md and verdicts[1] not in md and verdicts[2] not in md
    assert "- **Quality INCONCLUSIVE:** and 2 more lines like these (all in executive_summary.md)" in md
    page = (rep.out_dir / "report.html").read_text()
    assert "and 2 more lines like these (all in executive_summary.md)" in page


def test_latex_tables_are_cut_like_the_page(tmp_path):
    """table.tex was every row of every table (7.5 MB at 10,000 records): it shows the first
    MAX_ROWS rows of a table with the caption saying how many and where the rest is."""
    from e3bench.report import render
    from e3bench.report.render import build_report

    for i in range(render.MAX_ROWS // 2 + 1):  # two batch sizes each: one row more than the cap
        save(tmp_path, record(seed=i, batches=[batch(1, [50.0, 51.0], 0.03), batch(4, [90.0, 91.0], 0.02)]))
    tex = (build_report(tmp_path).out_dir / "table.tex").read_text()
    speed = tex.split(r"\begin{table}")[1]
    assert speed.count(r" \\") == 1 + render.MAX_ROWS  # header + rows
    assert f"(first {render.MAX_ROWS} of {render.MAX_ROWS + 2} rows: all in the CSV files)" in speed


def test_tables_are_cut_where_they_are_built_with_the_rows_a_full_build_shows_first():
    """``sections.tables(..., limit)`` builds only the rows a capped table shows (at 10,000 records
    the full tables cost more than the page showed of them): the same first rows and headings as
    building every row and cutting afterwards."""
    from e3bench.report import sections
    from e3bench.report.compare import summarize_configs
    from e3bench.report.variants import compare_to_reference

    recs = [record(dtype=d, seed=i, batches=[batch(1, [50.0 + i, 51.0], 0.03), batch(4, [90.0, 91.0 + i], 0.02)],
                   task=("hellaswag", "acc_norm", 0.4 - 0.001 * i, 0.02, 100))
            for i in range(7) for d in ("fp32", "int8")]  # fmt: skip
    configs = summarize_configs(recs)
    comps = compare_to_reference(configs)
    full = sections.tables(configs, comps)
    cut = sections.tables(configs, comps, limit=5)
    assert [len(rows) for _, rows, _ in full][:4] == [28, 14, 7, 14]
    assert [len(rows) for _, rows, _ in cut][:4] == [5, 5, 5, 5]
    for (h, rows, cols), (hc, rows_c, cols_c) in zip(full, cut, strict=True):
        assert rows_c == rows[:5] and cols_c == cols
        assert hc == (f"{h} (first 5 of {len(rows)} rows: all in the CSV files)" if len(rows) > 5 else h)


def test_panel_labels_drop_the_workload_the_panel_title_names(tmp_path):
    """With several workloads a label carries its workload (``[64→32 tokens, no tasks]``); in a
    panel of one workload the bar and legend labels leave it out (the title says it), the
    hover keeps the whole label."""
    from e3bench.report import figures
    from e3bench.report.render import build_report

    for p in (64, 128):
        for dtype in ("fp32", "int8"):
            for seed in (1, 2):
                save(tmp_path, record(dtype=dtype, prompt_tokens=p, seed=seed))
    rep = build_report(tmp_path)
    tagged = [c.label for c in rep.configs if c.label.endswith("]")]
    assert tagged, [c.label for c in rep.configs]
    spec = {f.name: f for f in figures.specs(rep.configs)}["ttft"]
    assert len(spec.panels) == 2
    for p in spec.panels:
        assert all("[" not in str(m.cat) and "[" not in m.label for m in p.marks), [m.cat for m in p.marks]
        assert all(m.hover.split("\n")[0].endswith("]") for m in p.marks)


def test_a_number_crowded_by_points_gets_a_leader_line():
    """Ring 1 around the point is full of other points: the number goes further out with a
    leader line (the old search measured the leader line's box, which always covers the point
    itself, so every ring past the first was refused and the number left out)."""
    import matplotlib.pyplot as plt

    from e3bench.report import plots
    from e3bench.report.figures import Figure, Mark, Panel
    from e3bench.report.stats import Interval

    def iv(v):
        return Interval(v, v, v, 1, "")

    marks = [Mark("front", "a", iv(5.0), iv(5.0), front=True, number=1)]
    marks += [Mark("c", "b", iv(5 + 0.04 * j), iv(5 + 0.04 * i)) for i in range(-8, 9) for j in range(-8, 9) if i or j]
    marks += [Mark("corner", "b", iv(0.0), iv(0.0)), Mark("corner", "b", iv(10.0), iv(10.0))]
    fig = plots.draw(Figure("p", "t", "", [Panel("scatter", "t", "x", "y", marks)]))
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        (num,) = [t for t in ax.texts if t.get_text() == "1"]
        assert num.arrow_patch is not None
        box = plt.Text.get_window_extent(num, renderer)
        pts = ax.transData.transform([(m.x.estimate, m.y.estimate) for m in marks])
        assert not any(box.contains(x, y) for x, y in pts)
    finally:
        plt.close(fig)


def test_a_very_long_summary_line_is_cut_at_a_comma_and_kept_whole_beside():
    from e3bench.report import render

    long = "- **Least energy per token (workload 1):** batch 1: no significant difference among " + ", ".join(
        f"configuration {i} (0.01 [0.005, 0.02])" for i in range(200))
    (shown,), cut = render._fold_alike([long])
    assert cut == 1 and len(shown) < render.MAX_LINE + 60
    assert shown.endswith("(0.01 [0.005, 0.02]), … (line cut; whole in executive_summary.md)")
    assert long.startswith(shown.split(", … (line cut")[0])


def test_figures_drawn_in_worker_processes_are_the_ones_drawn_here(tmp_path, monkeypatch):
    """Large reports draw their figures in forked workers while the tables are written: the
    same files (PNG bytes identical) as drawing them in the report's own process."""
    import os

    from e3bench.report import figures, plots
    from e3bench.report.render import build_report

    for i, dtype in enumerate(("fp32", "bf16", "int8", "int4")):
        save(tmp_path / "res", record(dtype=dtype, seed=i, task=("hellaswag", "acc_norm", 0.4 - 0.01 * i, 0.02, 100)))
    here = build_report(tmp_path / "res", tmp_path / "here")
    specs = figures.specs(here.configs)
    assert plots._workers(specs) == 1  # a small report: drawn in its own process
    monkeypatch.setattr(plots, "PARALLEL_MARKS", 0)
    if (os.cpu_count() or 1) > 1:
        assert plots._workers(specs) > 1
    there = build_report(tmp_path / "res", tmp_path / "there")
    pngs = sorted(p.relative_to(here.out_dir) for p in here.files.values() if p.suffix == ".png")
    assert len(pngs) == len(specs) > 3
    assert pngs == sorted(p.relative_to(there.out_dir) for p in there.files.values() if p.suffix == ".png")
    # a folder of many records: the workers are forked before the records are read, and the
    # figures are sent to them (pickled) instead of being inherited
    monkeypatch.setattr(plots, "PARALLEL_MARKS", 10**9)
    monkeypatch.setattr(plots, "PARALLEL_RECORDS", 1)
    sent = []
    real = plots._submitted
    monkeypatch.setattr(plots, "_submitted", lambda pool, specs, out: sent.append(pool) or real(pool, specs, out))
    early = build_report(tmp_path / "res", tmp_path / "early")
    if (os.cpu_count() or 1) > 1:
        assert len(sent) == 1 and sent[0] is not None
    for rel in pngs:
        assert (here.out_dir / rel).read_bytes() == (there.out_dir / rel).read_bytes(), rel
        assert (here.out_dir / rel).read_bytes() == (early.out_dir / rel).read_bytes(), rel
        assert (there.out_dir / rel).with_suffix(".pdf").stat().st_size > 1000
