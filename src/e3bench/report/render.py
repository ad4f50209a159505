"""`e3bench report`: from a results directory to CSV, LaTeX, PNG plots, a Markdown summary and
one self-contained HTML page. Reads stored records only (a read-only results folder works with
``-o`` elsewhere); can be rebuilt at any time.

What is compared with what: :mod:`e3bench.report.sections` (per workload, per batch size, every
figure with its 95 % CI); variants against their reference: :mod:`e3bench.report.variants`.
Files are written atomically with the user's umask mode; a place that cannot be written is one
:class:`E3Error` line.

At scale (``benchmarks/report_scale.py``: 10,000 records) every file stays readable and says what
it leaves out: the CSV files hold every row, while ``summary.md``, ``table.tex`` and the page show
the first :data:`MAX_ROWS` rows of a table (its heading says how many there are); the executive
summary shows :data:`MAX_ALIKE` lines of one kind and cuts lines longer than :data:`MAX_LINE`,
with every line whole in :data:`ALL_LINES`; figures show the best configurations
(:mod:`e3bench.report.figures`) and are drawn in worker processes while the tables are written
(:func:`e3bench.report.plots.drawing`).
"""

from __future__ import annotations

import datetime as dt
import gc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.fmt import count
from e3bench.core.fsutil import atomic_write_text, write_errors
from e3bench.report import architecture, figures, html, interactive, plots, sections
from e3bench.report.compare import ConfigSummary, summarize_configs
from e3bench.report.tables import latex_table, md_cell, to_csv
from e3bench.report.serving import COLUMNS as SERVING_COLUMNS
from e3bench.report.serving import Serving, load_serving, section_md, serving_figures, serving_tables
from e3bench.report.training import FINETUNE_COLUMNS, SUITE_COLUMNS, Training, load_training
from e3bench.report.variants import MLPERF_QUALITY_TARGET, VariantComparison, compare_to_reference
from e3bench.results import store
from e3bench.results.flatten import RUN_COLUMNS, TASK_COLUMNS, rows_of


@dataclass
class Report:
    """What :func:`build_report` wrote (``files``: name relative to ``out_dir`` → path) and read."""

    out_dir: Path
    files: dict[str, Path]
    configs: list[ConfigSummary]
    comparisons: list[VariantComparison]
    warnings: list[str]
    #: training documents read: ``e3bench train`` suites and ``e3bench finetune`` runs
    training_suites: int = 0
    finetune_runs: int = 0


def _md_table(rows: list[dict], columns) -> str:
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


#: Most rows a table of the Markdown summary or the HTML page shows; the CSV files hold them all.
MAX_ROWS = 100


def _capped(tables: list[sections.Table]) -> list[sections.Table]:
    """Each table cut to :data:`MAX_ROWS` rows, its heading saying so and where the rest is."""
    return [(sections.capped_heading(h, MAX_ROWS, len(rows)), rows[:MAX_ROWS], cols) for h, rows, cols in tables]


#: Most executive-summary lines of one kind (same bold lead, e.g. ``Quality INCONCLUSIVE``) that
#: ``summary.md`` and the page show; all of them go to :data:`ALL_LINES`.
MAX_ALIKE = 10
#: The file holding every executive-summary line when some were folded away.
ALL_LINES = "executive_summary.md"


#: Longest executive-summary line shown (a list of every configuration "not significantly
#: different" from the best ran to 50,000 characters at 10,000 records); cut at a comma.
MAX_LINE = 1500


def _shorten(line: str) -> str:
    """``line`` cut after the last ``", "`` within :data:`MAX_LINE` characters, saying so."""
    if len(line) <= MAX_LINE:
        return line
    cut = line.rfind(", ", 0, MAX_LINE)
    return line[: cut if cut > 0 else MAX_LINE] + f", … (line cut; whole in {ALL_LINES})"


def _lead(line: str) -> str:
    """The bold lead of an executive line (``- **Quality INCONCLUSIVE:** ...`` → its lead)."""
    return line.split(":**", 1)[0] if line.startswith("- **") else line


def _fold_alike(lines: list[str]) -> tuple[list[str], int]:
    """``lines`` with at most :data:`MAX_ALIKE` of each lead (a folder of thousands of variants
    has thousands of verdict lines), each cut kind ending with a line saying how many more there
    are and where (:data:`ALL_LINES`), long lines shortened (:func:`_shorten`); and how many lines
    were left out or shortened."""
    kinds = Counter(map(_lead, lines))
    out, seen, short = [], dict.fromkeys(kinds, 0), 0
    for line in lines:
        lead = _lead(line)
        seen[lead] += 1
        if seen[lead] <= MAX_ALIKE:
            out.append(_shorten(line))
            short += len(line) > MAX_LINE
        if seen[lead] == MAX_ALIKE and kinds[lead] > MAX_ALIKE:
            out.append(f"{lead}:** and {kinds[lead] - MAX_ALIKE:,} more lines like these (all in {ALL_LINES})")
    return out, sum(n - MAX_ALIKE for n in kinds.values() if n > MAX_ALIKE) + short


def _training_tables(training: Training | None) -> list[sections.Table]:
    if not training:
        return []
    return training.tables()


def _summary_md(configs, comps, failed, warnings, figures, training: Training | None = None,
                lines: list[str] | None = None, tables: list[sections.Table] | None = None) -> str:  # fmt: skip
    runs = sum(c.runs for c in configs)
    what = f"{count(len(configs), 'configuration')} ({count(runs, 'run')})"
    if training:
        what += (f", {count(len(training.finetune_rows), 'fine-tuning run')}, "
                 f"{count(len({r['suite'] for r in training.suite_rows}), 'training suite')}")  # fmt: skip
    out = [f"# e3bench report\n\n_generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {what}_\n"]
    lines = _fold_alike(sections.executive_lines(configs, comps) if lines is None else lines)[0]
    if lines:
        out += ["## Executive summary\n", *lines, ""]
        out.append("Figures are means with their 95 % confidence interval in brackets: across runs when a "
                   "configuration was run several times, else across the measured iterations of its one run "
                   "(throughput and energy per token are one figure per run: no interval from one run). "
                   "Configurations are compared only within one workload and at the same batch size. "
                   f"A variant keeps quality when the whole CI of its retained score is ≥ {100 * MLPERF_QUALITY_TARGET:.0f} %; "
                   "INCONCLUSIVE when the CI spans it.\n")  # fmt: skip
    tables = sections.tables(configs, comps, MAX_ROWS) if tables is None else tables
    for heading, rows, columns in _capped(tables + _training_tables(training)):
        if rows:
            out += [f"\n## {md_cell(heading)}\n", _md_table(rows, columns)]
    if failed:
        out.append("\n## Failed runs\n")
        out += [f"- {r['run_id']} ({md_cell(r['model'])} {r['backend']} {r['dtype']}): {md_cell(r['error'])}"
                for r in failed]  # fmt: skip
    if figures:
        out.append("\n## Figures\n")
        out += [f"![{name}](plots/{p.name})" for name, p in figures.items()]
    if warnings:
        out.append("\n## Notes\n")
        out += [f"- {md_cell(w)}" for w in warnings]
    out.append("\nEnergy figures are labelled with how they were obtained (measured: sensor; estimated: model). "
               "Net energy subtracts the idle baseline measured before each run.")  # fmt: skip
    return "\n".join(out) + "\n"


def _html(summary_md: str, configs, comps, failed, specs: list[figures.Figure], training: Training | None = None,
          tables: list[sections.Table] | None = None) -> str:  # fmt: skip
    tables = sections.tables(configs, comps, MAX_ROWS) if tables is None else tables
    return html.page(summary_md, _capped(tables + _training_tables(training)), specs, failed)


def build_report(results_dir: Path, out_dir: Path | None = None) -> Report:
    """Read every record under ``results_dir`` once and write the report into ``out_dir``
    (default ``<results_dir>/report``): CSV tables, ``table.tex``, PNG plots, ``summary.md`` and a
    self-contained ``report.html``.

    Raises :class:`E3Error` (one line) when ``results_dir`` is missing or a file; when it holds
    neither a successful run nor training results (naming the record files it skipped and why);
    when ``out_dir`` is a file or cannot be written (read-only, under a file, ``/proc``).
    """
    results_dir = store.check_root(results_dir)
    with plots.painters(len(store.json_keys(results_dir))) as pool:  # forked before the records are read
        return _read_and_build(results_dir, out_dir, pool)


def _read_and_build(results_dir: Path, out_dir: Path | None, pool) -> Report:
    """:func:`build_report` in the figures' worker ``pool`` (or None)."""
    # The records stay until the report is written: out of the cycle collector's sight meanwhile
    # (each collection would walk their millions of objects again: 7 s of 30 at 10,000 records),
    # frozen before the collector is back on (else its first full pass walks them all once more).
    with store.gc_paused():
        found = store.scan(results_dir)  # one read of the JSON files: run and training records
        gc.freeze()
    try:
        return _build(results_dir, found, out_dir, pool)
    finally:
        gc.unfreeze()


def _build(results_dir: Path, found: store.Scan, out_dir: Path | None, pool=None) -> Report:
    """:func:`build_report` once the records are read."""
    runs, tasks = rows_of(found.records)
    warnings = [f"skipped {p}" for p in found.problems]
    training = load_training(found.others)
    serving = load_serving(found.others)  # e3bench serve sessions (report/serving.py)
    if not runs and not training and not serving:
        raise store.no_results_error(results_dir, found.problems + training.problems + serving.problems)
    configs = summarize_configs(found.records)
    if not configs and not training and not serving:
        raise E3Error(f"no successful runs under {results_dir} to report on",
                      "see the failed records (e3bench ls DIR --filter status=failed)")  # fmt: skip
    arch = architecture.load(found.records, found.others)  # empty unless the folder holds a comparison
    architecture.mark_fixtures(arch, configs, training.finetune_rows)  # "(fixture)" in every section
    warnings = warnings + training.problems + serving.problems + arch.notes
    comps = compare_to_reference(configs)
    failed = [r for r in runs if r["status"] == "failed"]
    out = Path(out_dir) if out_dir else results_dir / "report"
    if out.exists() and not out.is_dir():
        raise E3Error(f"cannot write the report to {out}: it is a file", "pass -o a folder (new or existing)")
    fix = "pass -o a writable folder" if out_dir else "pass -o a writable folder (the results folder is not writable)"
    with write_errors(out, fix, what="write the report to"):
        return _write_report(out, runs, tasks, configs, comps, failed, warnings, training, serving, pool, arch)


def _write_report(out: Path, runs, tasks, configs, comps, failed, warnings, training: Training,
                  serving: Serving | None = None, pool=None, arch: architecture.Section | None = None) -> Report:  # fmt: skip
    """Write every report file into ``out`` (``OSError`` when it cannot)."""
    files: dict[str, Path] = {}

    def write(name: str, text: str) -> None:
        p = out / name
        atomic_write_text(p, text)
        files[name] = p

    arch = arch or architecture.Section()
    specs = arch.figures + (figures.specs(configs) if configs else []) + serving_figures(serving)
    with plots.drawing(specs, out / "plots", pool) as drawn:  # large figures are drawn meanwhile
        tables = arch.tables() + sections.tables(configs, comps, MAX_ROWS)  # once: summary.md, table.tex and the page
        if arch:
            write("architectures.csv", to_csv([r.cells() for r in arch.rows], architecture.COLUMNS))
        _write_tables(write, runs, tasks, configs, comps, training, tables)
        if specs:
            files[interactive.PLOTLY_JS] = interactive.write_plotlyjs(out)
        lines = arch.lines() + sections.executive_lines(configs, comps)
        if _fold_alike(lines)[1]:
            write(ALL_LINES, "# e3bench report: every executive-summary line\n\n" + "\n".join(lines) + "\n")
        pngs = drawn()
    for f in specs:
        files[f"plots/{f.name}.png"] = pngs[f.name]
        files[f"plots/{f.name}.pdf"] = pngs[f.name].with_suffix(".pdf")
    md = _summary_md(configs, comps, failed, warnings, pngs, training, lines, tables) + section_md(serving)
    write("summary.md", md)
    write("report.html", _html(md, configs, comps, failed, specs, training, tables + serving_tables(serving)))
    if serving:
        write("serving.csv", to_csv(serving.rows, SERVING_COLUMNS))
    return Report(out, files, configs, comps, warnings, training_suites=len({r["suite"] for r in training.suite_rows}),
                  finetune_runs=len(training.finetune_rows))  # fmt: skip


def _write_tables(write, runs, tasks, configs, comps, training: Training, tables: list[sections.Table]) -> None:
    """The CSV files and ``table.tex`` (``write(name, text)``)."""
    if training.finetune_rows:
        write("finetune.csv", to_csv(training.finetune_rows, FINETUNE_COLUMNS))
    if training.suite_rows:
        write("train_suite.csv", to_csv(training.suite_rows, SUITE_COLUMNS))
    if configs:
        write("runs.csv", to_csv(runs, RUN_COLUMNS))
        write("tasks.csv", to_csv(tasks, TASK_COLUMNS))
        write("pivot.csv", to_csv(sections.csv_rows(configs), sections.CSV_COLUMNS))
        write("table.tex", "".join(latex_table(rows, cols, heading) for heading, rows, cols in _capped(tables) if rows))
    if comps:
        write("quantization.csv", to_csv(sections.cmp_csv_rows(comps), sections.CMP_CSV_COLUMNS))
