"""Read-only commands: ``env``, ``models``, ``tasks``, ``plugins`` (what is installed and
registered) and ``ls`` / ``export`` (what is in a results directory)."""

from __future__ import annotations

from rich.markup import escape  # table cells and messages are text ("e3bench[onnx]"), not markup

from pathlib import Path
from typing import Optional

import typer

from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error


def env() -> None:
    """Print the hardware/software fingerprint recorded in every result."""
    from rich.table import Table

    from e3bench.bench import envinfo

    m = envinfo.collect()
    t = Table(title="e3bench environment", show_header=False)
    for k, v in m.model_dump().items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = "; ".join(str(x) for x in v) or "none"
        t.add_row(k, escape(str(v)))
    console().print(t)


def _registry_table(kind: str, title: str, first: str):
    """A table of one registry: name, installed (or the pip line), origin, description."""
    from rich.table import Table

    from e3bench.core import registry

    t = Table(title=title)
    for col in (first, "installed", "from", "description"):
        t.add_column(col)
    for row in registry.describe(registry.ALL[kind]):
        desc = row["description"] + (f" (also: {row['aliases']})" if row["aliases"] else "")
        t.add_row(*(escape(c) for c in (row["name"], row["installed"], row["origin"], desc)))
    return t


def models() -> None:
    """List model aliases, whether each is available here, and the backends (plugins included)."""
    from rich.table import Table

    from e3bench.backends.models import ALIASES, bundled_gguf_path

    con = console()
    t = Table(title="model aliases")
    for col in ("alias", "hub id", "available here", "description"):
        t.add_column(col)
    for a in ALIASES.values():
        local = bundled_gguf_path(a)
        t.add_row(*(escape(c) for c in (a.name, a.hub_id, f"yes: {local}" if local else "hub only", a.description)))
    con.print(t)
    con.print(_registry_table("backend", "backends", "backend"))
    con.print("Any Hugging Face id (org/name), local model directory or .gguf file also works.")


def tasks() -> None:
    """List the effectiveness tasks, built-in and plugins (use them with `e3bench run --tasks a,b`)."""
    con = console()
    con.print(_registry_table("task", "tasks", "task"))
    con.print("Data: $E3BENCH_DATA_DIR first, then the Hugging Face hub. Options: name:key=value,...")


def plugins() -> None:
    """List everything registered: backends, meters, tasks, executors, trackers (and their source)."""
    from e3bench.core import registry

    con = console()
    for kind, reg in registry.ALL.items():
        con.print(_registry_table(kind, f"{kind}s (entry-point group {reg.group})", kind))
        for note in reg.ignored:
            con.print(f"[yellow]ignored:[/yellow] {escape(note)}", highlight=False)


def ls_(
    results_dir: Path = typer.Argument(Path("results"), help="results directory"),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="column=value (also != > < >= <=)"),
    columns: Optional[str] = typer.Option(None, "--columns", help="comma list of columns"),
) -> None:
    """List runs (one row per run × batch size), filtered through the SQLite index."""
    try:
        from rich.markup import escape
        from rich.table import Table

        from e3bench.report.tables import cell
        from e3bench.results.index import query

        rows = query(results_dir, filter_, columns.split(",") if columns else None)
        con = console()
        if not rows:
            con.print("no matching runs")
            return
        t = Table()
        for c in rows[0]:
            t.add_column(c)
        for r in rows:
            t.add_row(*(escape(cell(v)) for v in r.values()))  # names are text, not rich markup
        con.print(t)
    except E3Error as exc:
        fail(exc)


def export(
    results_dir: Path = typer.Argument(..., help="results directory"),
    out: Path = typer.Option(..., "--out", "-o", help="file ending in .csv or .parquet"),
) -> None:
    """Export the flat run table (one row per run × batch size) to CSV or Parquet."""
    try:
        from e3bench.report.export import export_runs

        n = export_runs(results_dir, out)
        typer.echo(f"wrote {n} rows to {out}")
    except E3Error as exc:
        fail(exc)
