"""`e3bench report`: from a results directory to CSV, LaTeX, PNG plots, a Markdown summary and
one self-contained HTML page. Reads stored records only (a read-only results folder works with
``-o`` elsewhere); can be rebuilt at any time.

Speed and energy figures of a configuration come from the smallest batch size it measured; every
column, title and sentence says which (``min_batch_size``, ``*_at_min_batch``, "batch 4"), never
"batch 1" unless batch 1 was measured. Files are written atomically with the user's umask mode;
a place that cannot be written is one :class:`E3Error` line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.errors import E3Error
from e3bench.core.fsutil import atomic_write_text, write_errors
from e3bench.report import figures, html, interactive, plots
from e3bench.report.compare import (
    MLPERF_QUALITY_TARGET,
    ConfigSummary,
    VariantComparison,
    batch_label,
    compare_to_reference,
    pareto_front,
    summarize_configs,
)
from e3bench.report.tables import latex_table, md_cell, to_csv
from e3bench.report.training import FINETUNE_COLUMNS, SUITE_COLUMNS, Training, load_training
from e3bench.results import store
from e3bench.results.flatten import RUN_COLUMNS, TASK_COLUMNS, rows_of

#: Columns of ``pivot.csv`` and the configuration tables: ``*_at_min_batch`` figures are at the
#: configuration's smallest measured batch, ``min_batch_size``.
PIVOT_COLUMNS = ("configuration", "min_batch_size", "decode_tokens_per_s_at_min_batch", "ttft_ms_at_min_batch",
                 "tpot_ms_at_min_batch", "peak_rss_mib", "ept_total_j_per_token_at_min_batch", "accuracy",
                 "energy_method")  # fmt: skip


@dataclass
class Report:
    """What :func:`build_report` wrote (``files``: name relative to ``out_dir`` → path) and read."""

    out_dir: Path
    files: dict[str, Path]
    configs: list[ConfigSummary]
    comparisons: list[VariantComparison]
    warnings: list[str]


def _pivot_rows(configs: list[ConfigSummary]) -> list[dict]:
    return [
        {"configuration": c.label, **{k: getattr(c, k) for k in PIVOT_COLUMNS[1:]}}
        for c in configs
    ]


def _md_table(rows: list[dict], columns) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


#: Columns of ``quantization.csv`` and the comparison tables.
CMP_COLUMNS = ("variant", "reference", "quality_retained_pct", "batch_size", "speedup_x", "energy_saved_pct",
               "mlperf_99pct")  # fmt: skip


def _cmp_rows(comps: list[VariantComparison]) -> list[dict]:
    return [
        {"variant": c.variant, "reference": c.reference, "quality_retained_pct": c.quality_retained_pct,
         "batch_size": c.batch_size, "speedup_x": c.speedup, "energy_saved_pct": c.energy_saved_pct,
         "mlperf_99pct": {True: "PASS", False: "FAIL", None: "no tasks"}[c.quality_ok]}  # fmt: skip
        for c in comps
    ]


def _summary_md(configs, comps, failed, warnings, figures, training: Training | None = None) -> str:
    what = f"{len(configs)} configuration(s)"
    if training:
        what += (f", {len(training.finetune_rows)} fine-tuning run(s), "
                 f"{len({r['suite'] for r in training.suite_rows})} training suite(s)")  # fmt: skip
    out = [f"# e3bench report\n\n_generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from {what}_\n"]
    if configs:
        fastest = max((c for c in configs if c.decode_tokens_per_s_at_min_batch),
                      key=lambda c: c.decode_tokens_per_s_at_min_batch, default=None)  # fmt: skip
        frugal = min((c for c in configs if c.ept_total_j_per_token_at_min_batch),
                     key=lambda c: c.ept_total_j_per_token_at_min_batch, default=None)  # fmt: skip
        best = max((c for c in configs if c.accuracy is not None), key=lambda c: c.accuracy, default=None)
        out.append("## Executive summary\n")
        bl = batch_label(configs)
        mixed = len({c.min_batch_size for c in configs}) > 1  # then each figure names its batch

        def at(c: ConfigSummary) -> str:
            return f" at batch {c.min_batch_size}" if mixed else ""

        if fastest:
            out.append(f"- **Fastest decode ({bl}):** {md_cell(fastest.label)} — "
                       f"{fastest.decode_tokens_per_s_at_min_batch:.1f} tokens/s{at(fastest)}")  # fmt: skip
        if frugal:
            out.append(f"- **Least energy per token ({bl}):** {md_cell(frugal.label)} — "
                       f"{frugal.ept_total_j_per_token_at_min_batch:.4g} J/token{at(frugal)} "
                       f"({frugal.energy_method})")  # fmt: skip
        if best:
            out.append(f"- **Most accurate:** {md_cell(best.label)} — mean primary metric {best.accuracy:.3f}")
        pts = [(c.label, c.ept_total_j_per_token_at_min_batch, c.accuracy) for c in configs
               if c.ept_total_j_per_token_at_min_batch is not None and c.accuracy is not None]  # fmt: skip
        if pts:
            out.append(f"- **Pareto-optimal (accuracy vs J/token, {bl}):** "
                       f"{', '.join(md_cell(x) for x in pareto_front(pts))}")  # fmt: skip
        for c in comps:
            if c.quality_ok is False:
                out.append(f"- **Quality warning:** {md_cell(c.variant)} keeps {c.quality_retained_pct:.1f}% of "
                           f"{md_cell(c.reference)}'s score (< {100 * MLPERF_QUALITY_TARGET:.0f}%)")  # fmt: skip
        out.append("")
        out.append("## Configurations\n")
        out.append(_md_table(_pivot_rows(configs), PIVOT_COLUMNS))
    if comps:
        out.append("\n## Quantized / reduced precision vs full-precision reference\n")
        out.append(f"MLPerf rule of thumb: a variant should keep ≥ {100 * MLPERF_QUALITY_TARGET:.0f}% of the "
                   "reference score on every task.\n")  # fmt: skip
        out.append("Speed-up and energy saved compare the two at `batch_size`, the smallest batch both measured.\n")
        out.append(_md_table(_cmp_rows(comps), CMP_COLUMNS))
    if training and training.finetune_rows:
        out.append("\n## Fine-tuning (e3bench finetune)\n")
        out.append(_md_table(training.finetune_rows, FINETUNE_COLUMNS))
    if training and training.suite_rows:
        out.append("\n## Training-efficiency suites (e3bench train)\n")
        out.append(_md_table(training.suite_rows, SUITE_COLUMNS))
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


def _html(summary_md: str, configs, comps, failed, specs: list[figures.Figure], training: Training | None = None) -> str:
    tables = [("Configurations", _pivot_rows(configs), PIVOT_COLUMNS),
              ("Reduced precision vs reference", _cmp_rows(comps), CMP_COLUMNS)]
    if training:
        tables += [("Fine-tuning (e3bench finetune)", training.finetune_rows, FINETUNE_COLUMNS),
                   ("Training-efficiency suites (e3bench train)", training.suite_rows, SUITE_COLUMNS)]
    return html.page(summary_md, tables, specs, failed)  # fmt: skip


def build_report(results_dir: Path, out_dir: Path | None = None) -> Report:
    """Read every record under ``results_dir`` once and write the report into ``out_dir``
    (default ``<results_dir>/report``): CSV tables, ``table.tex``, PNG plots, ``summary.md`` and a
    self-contained ``report.html``.

    Raises :class:`E3Error` (one line) when ``results_dir`` is missing or a file; when it holds
    neither a successful run nor training results (naming the record files it skipped and why);
    when ``out_dir`` is a file or cannot be written (read-only, under a file, ``/proc``).
    """
    results_dir = store.check_root(results_dir)
    found = store.scan(results_dir)  # one read of the JSON files: run records and training records
    runs, tasks = rows_of(found.records)
    records = [rec for _, rec in found.records]
    warnings = [f"skipped {p}" for p in found.problems]
    training = load_training(found.others)
    if not runs and not training:
        raise store.no_results_error(results_dir, found.problems + training.problems)
    configs = summarize_configs(records)
    if not configs and not training:
        raise E3Error(f"no successful runs under {results_dir} to report on",
                      "see the failed records (e3bench ls DIR --filter status=failed)")  # fmt: skip
    warnings = warnings + training.problems
    comps = compare_to_reference(configs)
    failed = [r for r in runs if r["status"] == "failed"]
    out = Path(out_dir) if out_dir else results_dir / "report"
    if out.exists() and not out.is_dir():
        raise E3Error(f"cannot write the report to {out}: it is a file", "pass -o a folder (new or existing)")
    fix = "pass -o a writable folder" if out_dir else "pass -o a writable folder (the results folder is not writable)"
    with write_errors(out, fix, what="write the report to"):
        return _write_report(out, runs, tasks, configs, comps, failed, warnings, training)


def _write_report(out: Path, runs, tasks, configs, comps, failed, warnings, training: Training) -> Report:
    """Write every report file into ``out`` (``OSError`` when it cannot)."""
    files: dict[str, Path] = {}

    def write(name: str, text: str) -> None:
        p = out / name
        atomic_write_text(p, text)
        files[name] = p

    if training.finetune_rows:
        write("finetune.csv", to_csv(training.finetune_rows, FINETUNE_COLUMNS))
    if training.suite_rows:
        write("train_suite.csv", to_csv(training.suite_rows, SUITE_COLUMNS))
    if configs:
        write("runs.csv", to_csv(runs, RUN_COLUMNS))
        write("tasks.csv", to_csv(tasks, TASK_COLUMNS))
        write("pivot.csv", to_csv(_pivot_rows(configs), PIVOT_COLUMNS))
        write("table.tex", latex_table(_pivot_rows(configs), PIVOT_COLUMNS, "e3bench: speed, energy and accuracy"))
    if comps:
        write("quantization.csv", to_csv(_cmp_rows(comps), CMP_COLUMNS))
    specs = figures.specs(configs) if configs else []
    pngs = {f.name: plots.save(f, out / "plots") for f in specs}
    for f in specs:
        files[f"plots/{f.name}.png"] = pngs[f.name]
        files[f"plots/{f.name}.pdf"] = pngs[f.name].with_suffix(".pdf")
    if specs:
        files[interactive.PLOTLY_JS] = interactive.write_plotlyjs(out)
    md = _summary_md(configs, comps, failed, warnings, pngs, training)
    write("summary.md", md)
    write("report.html", _html(md, configs, comps, failed, specs, training))
    return Report(out, files, configs, comps, warnings)
