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
    assert "report.html (1 configuration, " in res.stdout  # was "(1 configurations, 23 files)"


def test_summary_lines_in_the_singular():
    from e3bench.report.summary import _items
    from e3bench.results.schema import TaskResult

    tr = TaskResult(task="t", engine="e3bench", metrics={"acc": 1.0}, stderr={}, n_items=1, duration_s=1.0, examples_per_s=1.0,
                    details={"limit": 1, "subset": "first-n"})  # fmt: skip
    assert _items(tr) == "the first 1 item"
