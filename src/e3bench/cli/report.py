"""``e3bench report``: tables, plots and one HTML page from a results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from e3bench.cli.common import console, fail
from e3bench.core.errors import E3Error
from e3bench.core.fmt import count


def report(
    results_dir: Path = typer.Argument(..., help="results directory (or one sweep inside it)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="default: <results_dir>/report"),
) -> None:
    """Tables (CSV, LaTeX), plots, Pareto fronts, a Markdown summary and one HTML page."""
    try:
        from rich.markup import escape

        from e3bench.cli.progress import reporter
        from e3bench.report.render import build_report

        # reading every record, drawing the plots and the HTML page can take tens of seconds
        with reporter().stage(f"building the report from {results_dir} (tables, plots, HTML)"):
            rep = build_report(results_dir, out)
        con = console()
        for w in rep.warnings:
            # file names are text, not markup; a long path stays on one line (soft_wrap)
            con.print(f"[yellow]note:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
        read = [count(len(rep.configs), "inference configuration")]
        read += [count(n, what) for n, what in ((rep.training_suites, "training suite"),
                                                (rep.finetune_runs, "fine-tuning run")) if n]  # fmt: skip
        con.print(f"report: {escape(str(rep.out_dir / 'report.html'))} ({', '.join(read)}, "
                  f"{count(len(rep.files), 'file')})", highlight=False, soft_wrap=True)  # fmt: skip
    except E3Error as exc:
        fail(exc)
