"""``e3bench export``: the flat run table (one row per run × batch size) as one CSV or Parquet
file. Reads the records through the index (:mod:`e3bench.results.index`), so a read-only
results folder exports too."""

from __future__ import annotations

from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_write_bytes, write_errors
from e3bench.report.tables import to_csv, to_parquet_bytes
from e3bench.results.flatten import RUN_COLUMNS
from e3bench.results.index import load_rows

#: File name endings ``export`` writes.
FORMATS = (".csv", ".parquet")


def export_runs(results_dir: Path, out: Path) -> int:
    """Write every run row under ``results_dir`` (columns ``RUN_COLUMNS``) to ``out``, a ``.csv``
    (text cells made formula-safe, see :func:`e3bench.report.tables.csv_safe`) or ``.parquet``
    file, atomically, with the user's umask mode; returns the number of rows.

    Raises :class:`E3Error` (one line) for another ending, an ``out`` that is a directory, a
    place that cannot be written (read-only, under a file, ``/proc``), or a results folder
    without records.
    """
    out = Path(out)
    if out.is_dir():
        raise E3Error(f"cannot export to {out}: it is a directory", f"name a file, e.g. -o {out / 'runs.csv'}")
    if out.suffix not in FORMATS:
        raise E3Error(f"cannot export to '{out.suffix or out.name}'", "use a .csv or .parquet file name")
    runs, _, _ = load_rows(results_dir)
    data = to_csv(runs, RUN_COLUMNS).encode("utf-8") if out.suffix == ".csv" else to_parquet_bytes(runs, RUN_COLUMNS)
    with write_errors(out, "choose a writable -o path"):
        atomic_write_bytes(out, data)
    return len(runs)
