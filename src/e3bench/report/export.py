"""``e3bench export``: the flat run table (one row per run × batch size, with one column per task
metric and its standard error) as one CSV, Parquet, JSON or Markdown file; and the JSON and
Markdown forms of any rows (``ls --format json|md`` prints them). Reads the records through the
index (:mod:`e3bench.results.index`), so a read-only results folder exports too."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_write_bytes, write_errors
from e3bench.report.tables import md_cell, to_csv, to_parquet_bytes
from e3bench.results.flatten import with_metrics
from e3bench.results.index import load_rows

#: File name endings ``export`` writes.
FORMATS = (".csv", ".parquet", ".json", ".md")


def to_json(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A JSON list of objects with the keys ``columns``, values as stored (None as null)."""
    return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=1, default=str) + "\n"


def _numeric(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    vals = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A Markdown (GitHub) table: header ``headers`` (default ``columns``), cells formatted by
    :func:`e3bench.report.tables.md_cell` (3 significant digits, ``-`` for missing, ``|``
    escaped), number columns right-aligned."""
    out = ["| " + " | ".join(md_cell(h) for h in (headers or columns)) + " |",
           "|" + "|".join("---:" if _numeric(rows, c) else "---" for c in columns) + "|"]  # fmt: skip
    out += ["| " + " | ".join(md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def export_runs(results_dir: Path, out: Path) -> int:
    """Write every run row under ``results_dir`` to ``out`` — columns ``RUN_COLUMNS`` then one per
    task metric and its ``_stderr`` (:func:`e3bench.results.flatten.with_metrics`) — as
    ``.csv`` (text cells made formula-safe, see :func:`e3bench.report.tables.csv_safe`),
    ``.parquet``, ``.json`` (a list of objects) or ``.md`` (a Markdown table of formatted
    cells), atomically, with the user's umask mode; returns the number of rows.

    Raises :class:`E3Error` (one line) for another ending, an ``out`` that is a directory, a
    place that cannot be written (read-only, under a file, ``/proc``), or a results folder
    without records.
    """
    out = Path(out)
    if out.is_dir():
        raise E3Error(f"cannot export to {out}: it is a directory", f"name a file, e.g. -o {out / 'runs.csv'}")
    if out.suffix not in FORMATS:
        raise E3Error(f"cannot export to '{out.suffix or out.name}'", "use a .csv, .parquet, .json or .md file name")
    runs, tasks, _ = load_rows(results_dir)
    columns, rows = with_metrics(runs, tasks)
    if out.suffix == ".parquet":
        data = to_parquet_bytes(rows, columns)
    else:
        write = {".csv": to_csv, ".json": to_json, ".md": to_markdown}[out.suffix]
        data = write(rows, columns).encode("utf-8")
    with write_errors(out, "choose a writable -o path"):
        atomic_write_bytes(out, data)
    return len(rows)


def export_emissions(results_dir: Path, out: Path) -> int:
    """Write CodeCarbon's ``emissions.csv`` of every run under ``results_dir`` to ``out`` (a
    ``.csv``): one row per metered window, CodeCarbon's columns then e3bench's
    (:mod:`e3bench.results.emissions_csv`), text cells formula-safe, atomically; returns the
    number of rows. Raises :class:`E3Error` (one line) for another ending, a directory, an
    unwritable place, or a results folder without records."""
    from e3bench.results import emissions_csv, store

    out = Path(out)
    if out.is_dir():
        raise E3Error(f"cannot export to {out}: it is a directory", f"name a file, e.g. -o {out / 'emissions.csv'}")
    if out.suffix != ".csv":
        raise E3Error(f"--format emissions writes CodeCarbon's CSV, not '{out.suffix or out.name}'",
                      "name a .csv file, e.g. -o emissions.csv")  # fmt: skip
    root = store.check_root(results_dir)
    scanned = store.scan(root)
    if not scanned.records:
        raise store.no_results_error(root, scanned.problems)
    rows = emissions_csv.rows(scanned.records)
    with write_errors(out, "choose a writable -o path"):
        atomic_write_bytes(out, to_csv(rows, emissions_csv.COLUMNS).encode("utf-8"))
    return len(rows)
