"""Tables that fit (``ls`` at 80 columns, --wide, --format), the task-metric and workload columns,
and per-token energy columns named by their energy (net/gross) and the tokens they count.

Uses the four real H100 records in docs/records (no model runs), with run ids of today's length.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from e3bench.core.fmt import num

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "records" / "h100-2026-11-22"


@pytest.fixture
def results(tmp_path) -> Path:
    """The docs' H100 records, with run ids as long as today's (stamp, config hash, random hex)."""
    out = tmp_path / "res" / "h100"
    out.mkdir(parents=True)
    for i, src in enumerate(sorted(RECORDS.glob("*.json"))):
        rec = json.loads(src.read_text())
        rec["run_id"] = f"{rec['run_id']}-{i:06x}"  # 33 characters: 20261122T112045-1dea0e97b2-000000
        (out / src.name).write_text(json.dumps(rec))
    return tmp_path / "res"


def _records(root: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in (json.loads(p.read_text()) for p in root.rglob("*.json"))}


def test_ls_at_80_columns_shows_whole_run_ids_and_numbers(results):
    res = run_cli("ls", str(results), env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in res.stdout
    recs = _records(results)
    for run_id, rec in recs.items():
        assert len(run_id) == 33
        rows = [line for line in lines if line.startswith(run_id + " ")]
        assert len(rows) == len(rec["efficiency"]["generation"])  # the whole id, copyable, on each row
        for g, row in zip(rec["efficiency"]["generation"], rows):
            assert num(g["decode_tokens_per_s"]["mean"]) in row.split()
    # what was left out is said, with how to see it
    assert "not shown at 80 columns:" in res.stderr and "--wide" in res.stderr
    dropped = res.stderr.split("not shown at 80 columns:")[1].split("(")[0]
    assert "device" in dropped and "run_id" not in dropped


def test_ls_wide_shows_every_default_column(results):
    from e3bench.results.index import DEFAULT_COLUMNS

    res = run_cli("ls", str(results), "--wide", env={"COLUMNS": "80"})
    assert res.returncode == 0 and res.stderr == ""
    header = res.stdout.splitlines()[0].split()
    assert header == list(DEFAULT_COLUMNS)


def test_layout_drops_columns_never_cuts_numbers():
    from e3bench.report.textable import Col, layout, table

    rows = [{"run_id": "20261130T142345-1dea0e97b2-abc123", "x": 178934.5, "label": "a long label " * 4,
             "y": 0.000123456}]  # fmt: skip
    cols = [Col("run_id"), Col("label"), Col("x"), Col("y")]
    lay = layout(cols, rows, 50, drop_order=("run_id", "x", "y", "label"))
    assert [c.key for c in lay.shown] == ["run_id", "x"] and lay.dropped == ("label", "y")
    assert lay.widths == (33, 6)  # "178934" whole
    from rich.console import Console

    con = Console(width=50, record=True)
    con.print(table(cols, rows, width=50, drop_order=("run_id", "x", "y", "label"))[0])
    text = con.export_text()
    assert "20261130T142345-1dea0e97b2-abc123  178934" in text
    # room for the label: it wraps (every character kept) rather than cutting a number
    lay = layout(cols, rows, 70)
    assert [c.key for c in lay.shown] == ["run_id", "label", "x", "y"] and lay.widths[2:] == (6, 8)


def test_task_metric_and_workload_columns(results):
    from e3bench.results.index import query

    recs = _records(results)
    rows = query(results, ["hellaswag_acc_norm>=0.465"],
                 ["run_id", "hellaswag_acc_norm", "hellaswag_acc_norm_stderr", "mmlu_acc", "tasks", "limit",
                  "num_fewshot", "prompt_source", "prompt_tokens_per_request", "new_tokens_per_request"])  # fmt: skip
    assert rows
    for r in rows:
        rec = recs[r["run_id"]]
        (hs,) = [t for t in rec["effectiveness"] if t["task"] == "hellaswag"]
        assert hs["metrics"]["acc_norm"] >= 0.465
        assert r["hellaswag_acc_norm"] == hs["metrics"]["acc_norm"]
        assert r["hellaswag_acc_norm_stderr"] == hs["stderr"]["acc_norm"]
        mmlu = [t for t in rec["effectiveness"] if t["task"] == "mmlu"]
        assert r["mmlu_acc"] == (mmlu[0]["metrics"]["acc"] if mmlu else None)
        assert r["tasks"] == ",".join(rec["config"]["tasks"]) and r["limit"] == rec["config"]["limit"]
        assert r["prompt_source"] == rec["efficiency"]["prompt_source"]
        g = rec["efficiency"]["generation"][0]
        assert r["prompt_tokens_per_request"] == g["input_tokens_per_request_mean"]
        assert r["new_tokens_per_request"] == g["output_tokens_per_request"]
    want = {rid for rid, rec in recs.items()
            if any(t["task"] == "hellaswag" and t["metrics"]["acc_norm"] >= 0.465 for t in rec["effectiveness"])}  # fmt: skip
    assert {r["run_id"] for r in rows} == want and len(want) < len(recs)


def test_per_token_energy_columns_say_net_or_gross_and_which_tokens(results):
    from e3bench.results.index import query

    cols = ["run_id", "batch_size", "energy_basis", "ept_net_j_per_token_in_out", "output_tokens_per_net_j",
            "ept_gross_j_per_output_token", "output_tokens_per_gross_j", "ept_net_j_per_input_token",
            "metered_input_tokens", "metered_output_tokens", "gross_co2e_g", "net_co2e_g"]  # fmt: skip
    rows = query(results, [], cols)
    recs = _records(results)
    for r in rows:
        (g,) = [g for g in recs[r["run_id"]]["efficiency"]["generation"] if g["batch_size"] == r["batch_size"]]
        e = g["energy"]
        assert r["energy_basis"] == e["basis"] == "net"
        assert r["ept_net_j_per_token_in_out"] == pytest.approx(e["net_energy_j"] / (e["input_tokens"] + e["output_tokens"]))
        assert r["output_tokens_per_net_j"] == pytest.approx(e["output_tokens"] / e["net_energy_j"])
        assert r["ept_gross_j_per_output_token"] == pytest.approx(e["gross_energy_j"] / e["output_tokens"])
        assert r["output_tokens_per_gross_j"] == pytest.approx(e["output_tokens"] / e["gross_energy_j"])
        assert r["ept_net_j_per_input_token"] == pytest.approx(e["net_energy_j"] / e["input_tokens"])
        assert (r["metered_input_tokens"], r["metered_output_tokens"]) == (e["input_tokens"], e["output_tokens"])
        assert (r["gross_co2e_g"], r["net_co2e_g"]) == (e["co2e_g"], e["co2e_net_g"])
        # the pair that looked like reciprocals is not
        assert r["ept_net_j_per_token_in_out"] * r["output_tokens_per_net_j"] != pytest.approx(1.0)


def test_renamed_column_names_its_replacement(results):
    res = run_cli("ls", str(results), "--filter", "ept_total_j_per_token<1")
    assert res.returncode == 2
    assert "'ept_total_j_per_token' was renamed to 'ept_net_j_per_token_in_out'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_ls_formats_parse_and_hold_the_values(results):
    cols = "run_id,batch_size,decode_tokens_per_s_mean,hellaswag_acc_norm,model"
    recs = _records(results)

    def want(run_id, bs):
        rec = recs[run_id]
        (g,) = [g for g in rec["efficiency"]["generation"] if g["batch_size"] == bs]
        (hs,) = [t for t in rec["effectiveness"] if t["task"] == "hellaswag"]
        return g["decode_tokens_per_s"]["mean"], hs["metrics"]["acc_norm"]

    got = json.loads(run_cli("ls", str(results), "--columns", cols, "--format", "json").stdout)
    assert len(got) == sum(len(r["efficiency"]["generation"]) for r in recs.values())
    for r in got:
        assert (r["decode_tokens_per_s_mean"], r["hellaswag_acc_norm"]) == want(r["run_id"], r["batch_size"])
    rows = list(csv.DictReader(io.StringIO(run_cli("ls", str(results), "--columns", cols, "--format", "csv").stdout)))
    assert len(rows) == len(got)
    for r in rows:
        assert (float(r["decode_tokens_per_s_mean"]), float(r["hellaswag_acc_norm"])) == want(r["run_id"], int(r["batch_size"]))
    md = run_cli("ls", str(results), "--columns", cols, "--format", "md", env={"COLUMNS": "40"}).stdout.splitlines()
    assert md[0] == "| " + " | ".join(cols.split(",")) + " |" and re.fullmatch(r"\|(-+:?\|)+", md[1])
    for line in md[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        dec, acc = want(cells[0], int(cells[1]))
        assert cells[2:4] == [num(dec), num(acc)] and cells[4] == "smollm2-135m"


def test_export_has_task_metric_columns_in_every_format(results, tmp_path):
    recs = _records(results)
    for ext in ("csv", "json", "md"):
        out = tmp_path / f"runs.{ext}"
        res = run_cli("export", str(results), "-o", str(out))
        assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    got = json.loads((tmp_path / "runs.json").read_text())
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in got]
    for r, j in zip(rows, got):
        effs = {t["task"]: t for t in recs[r["run_id"]]["effectiveness"]}
        for task, t in effs.items():
            for metric, value in t["metrics"].items():
                assert float(r[f"{task}_{metric}"]) == value == j[f"{task}_{metric}"]
                assert float(r[f"{task}_{metric}_stderr"]) == t["stderr"][metric]
        if "gsm8k" not in effs:
            assert r["gsm8k_exact_match_strict"] == "" and j["gsm8k_exact_match_strict"] is None
    md = (tmp_path / "runs.md").read_text().splitlines()
    assert "hellaswag_acc_norm_stderr" in md[0] and len(md) == 2 + len(rows)


def test_docs_quote_filters_with_comparisons():
    """An unquoted `--filter x>10` in a shell is a redirect to a file named 10."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = [f"{p.name}: {m.group(0)}" for p in texts
           for m in re.finditer(r"(--filter|-f) +[^'\"\s]*[<>]\S*", p.read_text())]  # fmt: skip
    assert bad == []


def test_styled_cells_keep_style_and_count_as_text():
    from rich.console import Console
    from rich.text import Text

    from e3bench.report.textable import Col, print_table, rows_as

    rows = [{"metric": "[bold]x[/bold]", "verdict": Text("better", style="green")}]
    con = Console(width=40, record=True, force_terminal=True)
    print_table(con, [Col("metric"), Col("verdict")], rows)
    out = con.export_text(styles=True)
    assert "[bold]x[/bold]" in out  # text, never markup
    assert "\x1b[32mbetter" in out  # the caller's style kept
    assert json.loads(rows_as("json", [Col("metric"), Col("verdict")], rows)) == [{"metric": "[bold]x[/bold]", "verdict": "better"}]


def test_hostile_task_names_are_columns_not_sql(results):
    """A task recorded as ``x" FROM runs; DROP TABLE runs; --`` is the column
    ``x_FROM_runs_DROP_TABLE_runs_acc``: letters, digits and ``_``; the task goes to SQL as a parameter."""
    from e3bench.results.index import query

    rec_path = next(results.rglob("*112215*.json"))
    rec = json.loads(rec_path.read_text())
    rec["effectiveness"][0]["task"] = 'x" FROM runs; DROP TABLE runs; --'
    rec_path.write_text(json.dumps(rec))
    col = "x_FROM_runs_DROP_TABLE_runs_acc"
    rows = query(results, [f"{col}>0"], ["run_id", col, col + "_stderr"])
    assert {r["run_id"] for r in rows} == {rec["run_id"]}
    assert rows[0][col] == rec["effectiveness"][0]["metrics"]["acc"]
    assert rows[0][col + "_stderr"] == rec["effectiveness"][0]["stderr"]["acc"]
    assert len(query(results, [], ["run_id"])) == 8  # the runs table is still there


def test_plugins_takes_format_like_the_other_listings():
    """`plugins` was the one listing without --format (exit 2): every registry as rows of data."""
    from e3bench.core import registry

    res = run_cli("plugins", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {(r["kind"], r["name"]) for r in rows} >= {("meter", "estimate"), ("backend", "pytorch")}
    assert len(rows) == sum(len(registry.describe(reg)) for reg in registry.ALL.values())
    csv_rows = list(csv.DictReader(io.StringIO(run_cli("plugins", "--format", "csv").stdout)))
    assert [(r["kind"], r["name"]) for r in csv_rows] == [(r["kind"], r["name"]) for r in rows]


def test_ls_and_export_name_the_record_files_they_skip(results, tmp_path):
    """A corrupt record was left out of ls/export without a word (report said 'skipped')."""
    bad = results / "h100" / "broken.json"
    bad.write_text("{broken")
    res = run_cli("ls", str(results), "--format", "json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) > 0  # stdout is still only the data
    assert f"note: skipped {bad}" in res.stderr
    res = run_cli("export", str(results), "-o", str(tmp_path / "runs.csv"))
    assert res.returncode == 0 and f"note: skipped {bad}" in res.stderr, res.stderr


def test_command_summaries_in_help_are_one_paragraph_line():
    """`e3bench --help` printed each docstring's first paragraph with its source line breaks
    ("... J/token at each" / "batch size both measured" at 80 columns): each summary is one line."""
    import inspect

    from e3bench.cli.app import app

    broken = {c.name or c.callback.__name__: (inspect.getdoc(c.callback) or "").split("\n\n")[0]
              for c in app.registered_commands}  # fmt: skip
    assert {k: v for k, v in broken.items() if "\n" in v or not v} == {}
