"""Counts in the CLI's words agree with the number: "1 configuration", "2 configurations"."""

from __future__ import annotations

from conftest import run_cli
from fakes_report import record, save

from e3bench.core.fmt import count


def test_count_is_singular_for_one():
    assert count(1, "configuration") == "1 configuration"
    assert count(0, "configuration") == "0 configurations"
    assert count(2, "entry") == "2 entries" and count(2, "day") == "2 days"
    assert count(1234, "row", sep=True) == "1,234 rows"
    assert count(3, "child", "children") == "3 children"


def test_report_and_export_of_one_run_say_it_in_the_singular(tmp_path):
    save(tmp_path / "res", record())  # one configuration, one batch size: one row
    res = run_cli("export", str(tmp_path / "res"), "-o", str(tmp_path / "runs.csv"))
    assert res.returncode == 0, res.stderr
    assert f"wrote 1 row to {tmp_path / 'runs.csv'}" in res.stdout  # was "wrote 1 rows"
    res = run_cli("report", str(tmp_path / "res"), env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "report.html (1 inference configuration, " in res.stdout  # was "(1 configurations, 23 files)"


def test_summary_lines_in_the_singular():
    from e3bench.report.summary import _items
    from e3bench.results.schema import TaskResult

    tr = TaskResult(task="t", engine="e3bench", metrics={"acc": 1.0}, stderr={}, n_items=1, duration_s=1.0, examples_per_s=1.0,
                    details={"limit": 1, "subset": "first-n"})  # fmt: skip
    assert _items(tr) == "the first 1 item"


def test_config_errors_count_the_other_problems_in_the_singular():
    import pytest

    from e3bench.config.run import build_config
    from e3bench.core.errors import E3Error

    with pytest.raises(E3Error) as one:
        build_config(overrides=dict(model="x", min_iters=0, max_new_tokens=0))
    assert "(and 1 more problem)" in one.value.one_line()  # was "(and 1 more problem(s))"
    with pytest.raises(E3Error) as two:
        build_config(overrides=dict(model="x", min_iters=0, max_new_tokens=0, warmup_iters=-1))
    assert "(and 2 more problems)" in two.value.one_line()
