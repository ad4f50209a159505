"""Read-only commands: ``env``, ``models``, ``tasks``, ``plugins`` (what is installed and
registered) and ``ls`` / ``export`` (what is in a results directory)."""

from __future__ import annotations

from rich.markup import escape  # table cells and messages are text ("e3bench[onnx]"), not markup

from pathlib import Path
from typing import Optional

import typer

from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count


#: Options every table-printing command shares.
WIDE = typer.Option(False, "--wide", help="show every column, however wide the terminal")
FORMAT = typer.Option("table", "--format", help="table | json | csv | md (json/csv: values as stored)")


def env(wide: bool = WIDE, fmt: str = FORMAT) -> None:
    """Print the hardware/software fingerprint recorded in every result."""
    from e3bench.bench import envinfo
    from e3bench.report.textable import Col

    m = envinfo.collect()
    rows = []
    for k, v in m.model_dump().items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = "; ".join(str(x) for x in v) or "none"
        rows.append({"field": k, "value": v})
    cols = [Col("field", kind="id"), Col("value", kind="text")]
    _print(cols, rows, fmt=fmt, wide=wide, title="e3bench environment", show_header=fmt != "table")


def _print(cols, rows, **kw) -> None:
    """:func:`e3bench.report.textable.print_table` on the console; a bad ``--format`` is one line."""
    from e3bench.report.textable import print_table

    try:
        print_table(console(), cols, rows, **kw)
    except E3Error as exc:
        fail(exc)


def _registry_rows(kind: str) -> list[dict[str, str]]:
    """One registry as rows: name, installed (or the pip line), origin, description."""
    from e3bench.core import registry

    return [{"name": r["name"], "installed": r["installed"], "from": r["origin"],
             "description": r["description"] + (f" (also: {r['aliases']})" if r["aliases"] else "")}
            for r in registry.describe(registry.ALL[kind])]  # fmt: skip


def _registry_table(kind: str, title: str, first: str, *, fmt: str = "table", wide: bool = False) -> None:
    """Print one registry: name (headed ``first``), installed, origin, description."""
    from e3bench.report.textable import Col

    cols = [Col("name", first, kind="id"), Col("installed", kind="id"), Col("from", kind="text"),
            Col("description", kind="text")]  # fmt: skip
    _print(cols, _registry_rows(kind), fmt=fmt, wide=wide, title=title if fmt == "table" else None)


def models(wide: bool = WIDE, fmt: str = FORMAT) -> None:
    """List model aliases, whether each is available here, and the backends (plugins included)."""
    from e3bench.backends.models import ALIASES, bundled_path
    from e3bench.report.textable import Col

    rows = []
    for a in ALIASES.values():
        local = bundled_path(a)
        rows.append({"alias": a.name, "hub id": a.hub_id, "available here": f"yes: {local}" if local else "hub only",
                     "description": a.description})  # fmt: skip
    cols = [Col("alias", kind="id"), Col("hub id", kind="id"), Col("available here", kind="text"),
            Col("description", kind="text")]  # fmt: skip
    _print(cols, rows, fmt=fmt, wide=wide, title="model aliases" if fmt == "table" else None)
    if fmt == "table":
        _registry_table("backend", "backends", "backend", wide=wide)
        console().print("Any Hugging Face id (org/name), local model directory or .gguf file also works.")


def tasks(wide: bool = WIDE, fmt: str = FORMAT) -> None:
    """List the effectiveness tasks, built-in and plugins (use them with `e3bench run --tasks a,b`)."""
    _registry_table("task", "tasks", "task", fmt=fmt, wide=wide)
    if fmt == "table":
        console().print("Data: $E3BENCH_DATA_DIR first, then the Hugging Face hub. Options: name:key=value,...")


def plugins(wide: bool = WIDE, fmt: str = FORMAT) -> None:
    """List everything registered: backends, meters, tasks, executors, trackers (and their source)."""
    from e3bench.report.textable import Col
    from e3bench.core import registry

    if fmt != "table":  # data: one row per registered name, its registry in a "kind" column
        rows = [{"kind": kind, **r} for kind in registry.ALL for r in _registry_rows(kind)]
        cols = [Col("kind", kind="id"), Col("name", kind="id"), Col("installed", kind="id"),
                Col("from", kind="text"), Col("description", kind="text")]  # fmt: skip
        _print(cols, rows, fmt=fmt, wide=wide, title=None)
        return
    con = console()
    for kind, reg in registry.ALL.items():
        _registry_table(kind, f"{kind}s (entry-point group {reg.group})", kind, wide=wide)
        for note in reg.ignored:
            con.print(f"[yellow]ignored:[/yellow] {escape(note)}", highlight=False)


#: Which of ``ls``'s default columns stay longest when the terminal is narrow (first = kept
#: longest); the run id is never left out.
LS_PRIORITY = ("run_id", "model", "batch_size", "decode_tokens_per_s_mean", "ept_net_j_per_token_in_out",
               "dtype", "status", "backend", "ttft_ms_mean", "device")  # fmt: skip


#: Rows ``ls`` prints as a table unless ``--limit`` or ``--all`` says otherwise (the newest).
LS_LIMIT = 50


def ls_(
    results_dir: Path = typer.Argument(Path("results"), help="results directory"),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="'column=value' (also != > < >= <=; quote it: > is a shell redirect)"),
    columns: Optional[str] = typer.Option(
        None, "--columns", help="comma list of columns: run columns (listed in docs/sweeps.md) or task metrics "
        "such as hellaswag_acc_norm, hellaswag_acc_norm_stderr"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n",
                                        help=f"show the newest N rows (table default: {LS_LIMIT}; json/csv/md: all)"),
    all_: bool = typer.Option(False, "--all", help="show every row (a table of thousands of rows takes a while)"),
    serve: bool = typer.Option(False, "--serve", help="list the e3bench serve sessions (one row per load level) instead of runs"),
    wide: bool = WIDE,
    fmt: str = FORMAT,
) -> None:
    """List runs (one row per run × batch size), filtered through the SQLite index.

    A table shows the newest 50 rows (--limit N, --all: more; a line on stderr says how many were left out); --format json|csv|md prints every row as data. Run ids and numbers are shown whole; when the terminal is too narrow, the least important columns are left out (named on stderr): --wide shows them all."""
    try:
        from e3bench.report.textable import check_format
        from e3bench.results.index import DEFAULT_COLUMNS, listing

        check_format(fmt)
        if serve:
            _ls_serve(results_dir, fmt, wide)
            return
        if limit is not None and limit < 1:
            raise E3Error(f"--limit {limit} shows no rows", "pass --limit 1 or more, or --all for every row")
        asked = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        newest = None if all_ else limit if limit is not None else LS_LIMIT if fmt == "table" else None
        try:
            found = listing(results_dir, filter_, asked, newest=newest)
        except E3Error:
            if filter_ or asked or not _ls_serve(results_dir, fmt, wide, quiet_empty=True):
                raise
            return  # a folder of serve sessions only: listed as with --serve
        for line in found.skipped:
            typer.echo(f"note: {line}", err=True)
        rows = found.rows
        con = console()
        if not rows and fmt == "table":
            con.print("no matching runs")
            return
        cols = list(rows[0]) if rows else list(asked or DEFAULT_COLUMNS)
        order = () if asked else LS_PRIORITY
        _print(cols, rows, fmt=fmt, wide=wide, drop_order=order,
               hint="see all with --wide, pick with --columns, or --format csv|json|md")  # fmt: skip
        if found.total > len(rows):
            typer.echo(f"showing the newest {len(rows):,} of {found.total:,} rows ({found.total - len(rows):,} older "
                       "not shown): --limit N shows N, --all every row, --format csv|json all as data", err=True)  # fmt: skip
    except E3Error as exc:
        fail(exc)


def _ls_serve(results_dir: Path, fmt: str, wide: bool, *, quiet_empty: bool = False) -> bool:
    """``ls --serve``: one row per serve session × load level (report/serving.py); False when
    there is none (said on stdout unless ``quiet_empty``)."""
    from e3bench.report.serving import LS_COLUMNS, LS_ORDER, serve_rows

    rows, problems = serve_rows(results_dir)
    for line in problems:
        typer.echo(f"note: skipped {line}", err=True)
    if not rows:
        if not quiet_empty and fmt == "table":
            console().print("no e3bench serve sessions")
        return False
    _print(list(LS_COLUMNS), rows, fmt=fmt, wide=wide, drop_order=LS_ORDER)
    return True


def _note_skipped(results_dir: Path) -> None:
    """One ``note: skipped <file>: <why>`` line on stderr per unreadable record file (it is not
    in the rows; stdout stays data)."""
    from e3bench.results.index import skipped

    for line in skipped(results_dir):
        typer.echo(f"note: {line}", err=True)


def export(
    results_dir: Path = typer.Argument(..., help="results directory"),
    out: Path = typer.Option(..., "--out", "-o", help="file ending in .csv, .parquet, .json or .md"),
    format_: str = typer.Option("runs", "--format", "-f", help="runs: the flat run table; emissions: CodeCarbon's "
                                "emissions.csv (one row per metered window, CodeCarbon's column names and units); "
                                "serve: the e3bench serve levels (one row per session × load level)"),
) -> None:
    """Export the flat run table to CSV, Parquet, JSON or Markdown, or the runs' emissions as CodeCarbon's emissions.csv (--format emissions).

    One row per run × batch size: workload, speed, energy and one column per task metric with its standard error."""
    try:
        from e3bench.report.export import export_emissions, export_runs

        from e3bench.report.serving import export_serving

        if format_ not in ("runs", "emissions", "serve"):
            raise E3Error(f"unknown export format '{format_}'", "use --format runs (default), emissions or serve")
        n = {"emissions": export_emissions, "serve": export_serving}.get(format_, export_runs)(results_dir, out)
        if format_ != "serve":
            _note_skipped(results_dir)
        typer.echo(f"wrote {count(n, 'row')} to {out}")
    except E3Error as exc:
        fail(exc)
