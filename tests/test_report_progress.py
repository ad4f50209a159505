"""`e3bench report` says what it is doing while it builds (it was silent for 17 s on a busy CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import run_cli

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "records" / "h100-2026-11-22"


def test_report_shows_a_progress_stage_on_stderr(tmp_path):
    res_dir = tmp_path / "res"
    shutil.copytree(RECORDS, res_dir / "h100")
    res = run_cli("report", str(res_dir), env={"E3BENCH_PROGRESS_EVERY_S": "0"})
    assert res.returncode == 0, res.stderr
    err = res.stderr.splitlines()
    assert any(line.startswith(f"· building the report from {res_dir}") for line in err), res.stderr
    assert "report:" in res.stdout and "building the report" not in res.stdout  # progress only on stderr
