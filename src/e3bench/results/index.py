"""An embedded SQLite index over a results directory, rebuilt from the JSON records (which stay
the source of truth): fast filtering for `e3bench ls` and the report, no server."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from e3bench.results import store
from e3bench.core.errors import E3Error
from e3bench.results.schema import ResultRecord
from e3bench.report.tables import RUN_COLUMNS, TASK_COLUMNS, run_rows, task_rows

INDEX_NAME = ".e3bench-index.sqlite"


def load_rows(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(run rows, task rows, warnings) for every record under ``root``."""
    runs, tasks, warnings, _ = load(root)
    return runs, tasks, warnings


def load(
    root: Path, other_kinds: list[tuple[Path, dict]] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], list[ResultRecord]]:
    """Scan ``root`` once: (run rows, task rows, warnings, the records themselves); training
    records found on the way go to ``other_kinds`` (see :func:`store.scan`), even when this
    raises for want of run records."""
    if not root.exists():
        raise E3Error(f"results directory {root} does not exist", "pass the --output-dir of your runs")
    runs: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    found, problems = store.scan(root, other_kinds)
    warnings = [f"skipped {p}" for p in problems]
    for path, rec in found:
        runs.extend(run_rows(rec, path.parent.name))
        tasks.extend(task_rows(rec))
    if not runs:
        raise E3Error(f"no e3bench results under {root}", "run `e3bench run -o DIR` or `e3bench sweep` first")
    return runs, tasks, warnings, [rec for _, rec in found]


def build(root: Path) -> Path:
    """(Re)build the index file inside ``root`` from the JSON records."""
    runs, tasks, _ = load_rows(root)
    path = root / INDEX_NAME
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    with con:
        con.execute(f"CREATE TABLE runs ({', '.join(RUN_COLUMNS)})")
        con.execute(f"CREATE TABLE tasks ({', '.join(TASK_COLUMNS)})")
        con.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                        [tuple(r.get(c) for c in RUN_COLUMNS) for r in runs])  # fmt: skip
        con.executemany(f"INSERT INTO tasks VALUES ({', '.join('?' * len(TASK_COLUMNS))})",
                        [tuple(r.get(c) for c in TASK_COLUMNS) for r in tasks])  # fmt: skip
    con.close()
    tmp.replace(path)
    return path


def _parse_filter(f: str) -> tuple[str, str, str]:
    for op in (">=", "<=", "!=", "=", ">", "<"):
        if op in f:
            k, v = f.split(op, 1)
            return k.strip(), op, v.strip()
    raise E3Error(f"filter '{f}' has no operator", "write column=value (or !=, >, <, >=, <=)")


def query(root: Path, filters: list[str], columns: list[str] | None = None) -> list[dict[str, Any]]:
    path = build(root)
    cols = columns or ["run_id", "model", "backend", "dtype", "device", "batch_size", "status",
                       "decode_tokens_per_s_mean", "ttft_ms_mean", "ept_total_j_per_token"]  # fmt: skip
    for c in cols:
        if c not in RUN_COLUMNS:
            raise _unknown_column(c)
    where, params = [], []
    for f in filters:
        k, op, v = _parse_filter(f)
        if k not in RUN_COLUMNS:
            raise _unknown_column(k)
        where.append(f"{k} {'=' if op == '=' else op} ?")
        params.append(_num(v))
    sql = f"SELECT {', '.join(cols)} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql + " ORDER BY created_utc, batch_size", params)]
    finally:
        con.close()


def _num(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def _unknown_column(name: str) -> E3Error:
    import difflib

    near = difflib.get_close_matches(name, RUN_COLUMNS, n=1)
    return E3Error(
        f"unknown column '{name}'",
        (f"did you mean '{near[0]}'? " if near else "") + f"columns: {', '.join(RUN_COLUMNS)}",
    )
