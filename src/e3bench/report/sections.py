"""The report's content as tables and sentences, shared by the Markdown summary, the HTML page,
the CSV files and LaTeX: one place decides what is compared with what and how it is worded.

Per workload (:mod:`e3bench.report.workload`): speed and energy of every configuration at every
batch size it measured, its memory and quality, and conclusions (fastest, least energy per
token, Pareto front) at each batch size. Every figure carries its 95 % CI and says what the CI
is over (runs or iterations); headers name units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from e3bench.core.fmt import count, num
from e3bench.core.timing import Stats
from e3bench.report.compare import BatchFigures, ConfigSummary, by_workload, pareto_front
from e3bench.report.stats import BETTER, INCONCLUSIVE, NO_DIFFERENCE, diff_ci, verdict
from e3bench.report.tables import MISSING, ci_cell, md_cell
from e3bench.report import llshift
from e3bench.report.variants import MLPERF_QUALITY_TARGET, VariantComparison, compare_tasks
from e3bench.report.workload import mixed_note

#: A table: (heading, rows, columns); rows map column → value (already text, or a number).
Table = tuple[str, list[dict], tuple[str, ...]]

SPEED_COLUMNS = ("configuration", "batch", "runs", "decode (tokens/s) [95% CI]", "TTFT (ms) [95% CI]",
                 "TPOT (ms) [95% CI]", "throughput (tokens/s)", "J per in+out token [95% CI]", "energy method",
                 "CI over")  # fmt: skip
CONFIG_COLUMNS = ("configuration", "runs", "accuracy [95% CI]", "tasks (metric, items)",
                  "peak RSS, measured phase (MiB)", "weights (MiB)", "peak device memory (MiB)")  # fmt: skip
QUALITY_COLUMNS = ("variant", "reference", "task (metric)", "reference score", "variant score",
                   "difference [95% CI]", "retained (%) [95% CI]", f"retained ≥ {100 * MLPERF_QUALITY_TARGET:.0f} %",
                   "test", llshift.COLUMN)  # fmt: skip
VS_SPEED_COLUMNS = ("variant", "reference", "batch", "decode speed-up (×) [95% CI]", "speed",
                    "J per in+out token (× reference) [95% CI]", "energy")  # fmt: skip
WARNING_COLUMNS = ("configuration", "run warning")


def _mib(b: int | None) -> float | None:
    return None if b is None else b / 2**20


def _rss(c: ConfigSummary) -> float | str | None:
    if c.peak_rss_lifetime and c.peak_rss_bytes is not None:
        return f"{num(_mib(c.peak_rss_bytes))} (process lifetime, load included: older record)"
    return _mib(c.peak_rss_bytes)


def speed_rows(configs: Sequence[ConfigSummary]) -> list[dict]:
    """One row per (configuration, batch size measured)."""
    rows = []
    for c in configs:
        for bs, b in c.batches.items():
            rows.append({
                "configuration": c.label, "batch": bs, "runs": b.runs,
                "decode (tokens/s) [95% CI]": ci_cell(b.ci("decode_tokens_per_s")),
                "TTFT (ms) [95% CI]": ci_cell(b.ci("ttft_ms")), "TPOT (ms) [95% CI]": ci_cell(b.ci("tpot_ms")),
                "throughput (tokens/s)": ci_cell(b.ci("throughput_tokens_per_s")),
                "J per in+out token [95% CI]": ci_cell(b.ci("ept_total_j_per_token")),
                "energy method": b.energy_method, "CI over": b.basis,
            })  # fmt: skip
    return rows


def config_rows(configs: Sequence[ConfigSummary]) -> list[dict]:
    """One row per configuration: runs, accuracy, tasks, memory."""
    rows = []
    for c in configs:
        acc = None
        if len(c.task_scores) == 1:
            acc = ci_cell(next(iter(c.task_scores.values())).ci())
        elif c.task_scores:
            acc = f"{num(c.accuracy)} (mean of {len(c.task_scores)} tasks)"
        tasks = "; ".join(f"{t.task} ({t.metric}, {t.n_items})" for t in c.task_scores.values()) or MISSING
        rows.append({
            "configuration": c.label, "runs": c.runs, "accuracy [95% CI]": acc, "tasks (metric, items)": tasks,
            "peak RSS, measured phase (MiB)": _rss(c), "weights (MiB)": _mib(c.weights_bytes),
            "peak device memory (MiB)": _mib(c.peak_device_memory_bytes),
        })  # fmt: skip
    return rows


def quality_rows(comps: Sequence[VariantComparison]) -> list[dict]:
    """One row per (variant, common task)."""
    rows = []
    for v in comps:
        for t in v.tasks:
            if t.paired:
                test = f"paired, {t.n_items} items"
                if t.p_value is not None:
                    test += f", McNemar p = {num(t.p_value)} ({t.discordant[0]} vs {t.discordant[1]} discordant)"
            else:
                test = f"unpaired (standard errors), {t.n_items} items; --log-samples for a paired test"
            rows.append({
                "variant": v.variant, "reference": v.reference, "task (metric)": f"{t.task} ({t.metric})",
                "reference score": t.reference_value, "variant score": t.variant_value,
                "difference [95% CI]": ci_cell(t.difference), "retained (%) [95% CI]": ci_cell(t.retained, 100),
                f"retained ≥ {100 * MLPERF_QUALITY_TARGET:.0f} %": t.retained_verdict, "test": test,
                llshift.COLUMN: llshift.shift_cell(t.ll_shift),
            })  # fmt: skip
    return rows


def vs_speed_rows(comps: Sequence[VariantComparison]) -> list[dict]:
    """One row per (variant, batch size both measured)."""
    return [
        {"variant": v.variant, "reference": v.reference, "batch": s.batch_size,
         "decode speed-up (×) [95% CI]": ci_cell(s.speedup), "speed": _word(s.speedup_verdict, "faster", "slower", s.speedup),
         "J per in+out token (× reference) [95% CI]": ci_cell(s.energy_ratio),
         "energy": _word(s.energy_verdict, "less", "more", s.energy_ratio)}  # fmt: skip
        for v in comps for s in v.speed
    ]


def _word(v: str | None, better: str, worse: str, iv=None) -> str | None:
    if iv is not None and not iv.known:
        return "no CI from 1 run each: repeat the runs for one"
    return {"better": better, "worse": worse}.get(v or "", v)


def warning_rows(configs: Sequence[ConfigSummary]) -> list[dict]:
    """One row per (configuration, warning its runs reported)."""
    return [{"configuration": c.label, "run warning": w} for c in configs for w in c.warnings]


def tables(configs: Sequence[ConfigSummary], comps: Sequence[VariantComparison], limit: int | None = None) -> list[Table]:
    """Every table of the report, per workload (headings name it when there are several); with
    ``limit``, each table's first ``limit`` rows only, its heading saying how many there are
    (:func:`capped_heading`): rows past it are never built (at 10,000 records, building the
    12,000 rows of one table cost more than showing its first hundred)."""
    groups = by_workload(configs)
    out: list[Table] = []

    def table(heading: str, build, items: Sequence, rows_of_item, columns: tuple[str, ...]) -> Table:
        if limit is None:
            return heading, build(items), columns
        total, cut = 0, len(items)
        for i, item in enumerate(items):
            total += rows_of_item(item)
            if total >= limit and cut == len(items):
                cut = i + 1
        return capped_heading(heading, limit, total), build(items[:cut])[:limit], columns

    for i, (w, members) in enumerate(groups.items(), 1):
        tag = f" — workload {i}: {w.label}" if len(groups) > 1 else f" — {w.label}"
        labels = {c.label for c in members}
        mine = [v for v in comps if v.variant in labels]
        out += [table(f"Speed and energy by batch size{tag}", speed_rows, members, lambda c: len(c.batches), SPEED_COLUMNS),
                table(f"Configurations: quality and memory{tag}", config_rows, members, lambda c: 1, CONFIG_COLUMNS),
                table(f"Quality vs full-precision reference{tag}", quality_rows, mine, lambda v: len(v.tasks), QUALITY_COLUMNS),
                table(f"Speed and energy vs full-precision reference{tag}", vs_speed_rows, mine, lambda v: len(v.speed),
                      VS_SPEED_COLUMNS)]  # fmt: skip
    out.append(table("Run warnings", warning_rows, list(configs), lambda c: len(c.warnings), WARNING_COLUMNS))
    return out


def capped_heading(heading: str, shown: int, total: int) -> str:
    """``heading`` of a table showing its first ``shown`` of ``total`` rows (unchanged when it
    shows them all)."""
    return f"{heading} (first {shown} of {total} rows: all in the CSV files)" if total > shown else heading


def _leader(members: Sequence[ConfigSummary], bs: int, metric: str, higher: bool) -> str | None:
    """The best at batch ``bs`` with its interval, ``"label — 52.1 [50.3, 53.9] tokens/s"``
    (None: nobody measured it). When others are not significantly different from it (Welch CI
    of the difference spans 0, or the same mean), no winner is picked: ``"no significant
    difference among A (52.1 [..]), B (51.8 [..]) tokens/s"``. When the difference from the
    runner-up has no CI (one reading each), the line says it was not tested."""
    have = [(c, c.batches[bs]) for c in members if bs in c.batches and getattr(c.batches[bs], metric) is not None]
    if not have:
        return None
    have.sort(key=lambda cb: getattr(cb[1], metric).mean, reverse=higher)
    (best, bb), rest = have[0], have[1:]
    unit = {"decode_tokens_per_s": "tokens/s", "ept_total_j_per_token": "J per in+out token"}[metric]
    words = [(c, b, _versus(getattr(bb, metric), getattr(b, metric), higher)) for c, b in rest]
    tied = [(c, b) for c, b, w in words if w == NO_DIFFERENCE]
    if tied:
        names = ", ".join(f"{md_cell(c.label)} ({ci_cell(b.ci(metric))})" for c, b in [(best, bb), *tied])
        return f"no significant difference among {names} {unit}"
    text = f"{md_cell(best.label)} — {ci_cell(bb.ci(metric))} {unit}"
    if words and words[0][2] == INCONCLUSIVE:
        text += f" (not tested against {md_cell(words[0][0].label)}: one reading each, no CI)"
    return text


def _versus(best: Stats, other: Stats, higher: bool) -> str:
    """:data:`NO_DIFFERENCE` when ``other`` is not significantly behind ``best`` (equal means,
    or the Welch CI of the difference spans 0), :data:`INCONCLUSIVE` when that cannot be tested,
    else ``"worse"``."""
    if other.mean == best.mean:
        return NO_DIFFERENCE
    word = verdict(diff_ci(best, other), higher_is_better=higher)
    return word if word in (NO_DIFFERENCE, INCONCLUSIVE) else "worse"


def _accuracy_tied(best: ConfigSummary, other: ConfigSummary) -> bool:
    """Whether ``other``'s accuracy is not significantly below ``best``'s: the same value, or
    the CI of the difference spans 0 — one task each: the task comparison of the variants
    (paired over the items when both logged samples, :func:`compare_tasks`); several: the mean
    over tasks with combined standard errors (no standard error: not established, so tied)."""
    if other.accuracy == best.accuracy:
        return True
    common = sorted(set(best.task_scores) & set(other.task_scores))
    if len(best.task_scores) == len(other.task_scores) == len(common) == 1:
        a, b = other.task_scores[common[0]], best.task_scores[common[0]]
        return a.metric == b.metric and verdict(compare_tasks(a, b).difference, higher_is_better=True) != BETTER
    if any(s.stderr is None for c in (best, other) for s in c.task_scores.values()):
        return True
    var = sum(sum(s.stderr**2 for s in c.task_scores.values()) / len(c.task_scores) ** 2  # type: ignore[operator]
              for c in (best, other))  # fmt: skip
    return best.accuracy - other.accuracy <= 1.96 * math.sqrt(var)  # type: ignore[operator]


def _accuracy(c: ConfigSummary) -> str:
    one = next(iter(c.task_scores.values())) if len(c.task_scores) == 1 else None
    return ci_cell(one.ci()) + f" {one.metric} on {one.task}" if one else f"{num(c.accuracy)} mean primary metric"


def executive_lines(configs: Sequence[ConfigSummary], comps: Sequence[VariantComparison]) -> list[str]:
    """The summary's ``- **...**`` lines: per workload and batch size, fastest decode, least
    energy per token and the Pareto front; most accurate; each variant's quality verdict;
    run warnings and mixed workloads."""
    groups = by_workload(configs)
    out = []
    note = mixed_note(list(c.workload for c in configs))
    if note:
        out.append(f"- **Note:** {note}")
    for i, (w, members) in enumerate(groups.items(), 1):
        tag = f" (workload {i})" if len(groups) > 1 else ""
        if len(groups) > 1:
            out.append(f"- **Workload {i}:** {md_cell(w.label)}")
        fixtures = [c for c in members if c.fixture]
        if fixtures and len(fixtures) < len(members):  # random weights are not ranked beside real models
            members = [c for c in members if not c.fixture]
            out.append(f"- **Not ranked{tag}:** {', '.join(md_cell(c.label) for c in fixtures)} — random-weights "
                       "fixtures: their speed is a toy size's and their accuracy chance")  # fmt: skip
        sizes = sorted({bs for c in members for bs in c.batches})
        for metric, title, higher in (("decode_tokens_per_s", "Fastest decode", True),
                                      ("ept_total_j_per_token", "Least energy per token", False)):  # fmt: skip
            parts = [f"batch {bs}: {x}" for bs in sizes if (x := _leader(members, bs, metric, higher))]
            if parts:
                out.append(f"- **{title}{tag}:** " + "; ".join(parts))
        scored = [c for c in members if c.accuracy is not None]
        if scored:
            best = max(scored, key=lambda c: c.accuracy)
            tied = [c for c in scored if c is not best and _accuracy_tied(best, c)]
            if tied:
                names = ", ".join(f"{md_cell(c.label)} ({_accuracy(c)})" for c in [best, *tied])
                out.append(f"- **Most accurate{tag}:** no significant difference among {names}")
            else:
                out.append(f"- **Most accurate{tag}:** {md_cell(best.label)} — {_accuracy(best)}")
            for bs in sizes:
                pts = [(c.label, c.batches[bs].ept_total_j_per_token.mean, c.accuracy) for c in scored
                       if bs in c.batches and c.batches[bs].ept_total_j_per_token is not None]  # fmt: skip
                if len(pts) > 1:
                    front = ", ".join(md_cell(x) for x in pareto_front(pts))
                    out.append(f"- **Pareto-optimal{tag} (accuracy vs J per in+out token, batch {bs}):** {front}")
    for v in comps:
        for t in v.tasks:
            how = f"paired over {t.n_items} items" if t.paired else "unpaired, from standard errors"
            out.append(f"- **Quality {t.retained_verdict}:** {md_cell(v.variant)} keeps {ci_cell(t.retained, 100)} % "
                       f"of {md_cell(v.reference)}'s {t.metric} on {t.task} ({how}; "
                       f"≥ {100 * MLPERF_QUALITY_TARGET:.0f} % needed)")  # fmt: skip
    warned = [c for c in configs if c.warnings]
    if warned:
        out.append(f"- **Run warnings:** {count(len(warned), 'configuration')} — see the Run warnings table")
    return out


def csv_rows(configs: Sequence[ConfigSummary]) -> list[dict]:
    """``pivot.csv``: one row per (configuration, batch), numbers unformatted, CI ends apart."""
    rows = []
    for c in configs:
        for bs, b in c.batches.items():
            row = {"configuration": c.label, "workload": c.workload.label, "config_hash": c.config_hash,
                   "batch_size": bs, "runs": b.runs, "ci_over": b.basis, "energy_method": b.energy_method,
                   "accuracy": c.accuracy, "peak_rss_measured_phase_mib": _mib(c.peak_rss_bytes),
                   "weights_mib": _mib(c.weights_bytes)}  # fmt: skip
            for m in ("decode_tokens_per_s", "ttft_ms", "tpot_ms", "throughput_tokens_per_s", "ept_total_j_per_token"):
                row.update(_ci_fields(_CSV_NAME.get(m, m), b, m))
            rows.append(row)
    return rows


def _ci_fields(name: str, b: BatchFigures, metric: str) -> dict:
    iv = b.ci(metric)
    if iv is None:
        return {f"{name}_mean": None, f"{name}_ci95_low": None, f"{name}_ci95_high": None}
    return {f"{name}_mean": iv.estimate, f"{name}_ci95_low": iv.low if iv.known else None,
            f"{name}_ci95_high": iv.high if iv.known else None}  # fmt: skip


#: ``pivot.csv`` names a figure by what it counts where the record's field name does not say:
#: J per token of input and output together (not the reciprocal of output tokens per J).
_CSV_NAME = {"ept_total_j_per_token": "ept_j_per_token_in_out"}
#: Columns of ``pivot.csv``.
CSV_COLUMNS = ("configuration", "workload", "config_hash", "batch_size", "runs", "ci_over",
               *(f"{m}_{s}" for m in ("decode_tokens_per_s", "ttft_ms", "tpot_ms", "throughput_tokens_per_s",
                                      "ept_j_per_token_in_out") for s in ("mean", "ci95_low", "ci95_high")),
               "energy_method", "accuracy", "peak_rss_measured_phase_mib", "weights_mib")  # fmt: skip

#: Columns of ``quantization.csv``: one row per (variant, task, measure) and (variant, batch, measure).
CMP_CSV_COLUMNS = ("variant", "reference", "task", "metric", "batch_size", "measure", "estimate", "ci95_low",
                   "ci95_high", "verdict", "paired", "n", "p_value", "method")  # fmt: skip


def cmp_csv_rows(comps: Sequence[VariantComparison]) -> list[dict]:
    """``quantization.csv`` rows: difference and retained per task, speed-up and energy ratio per
    batch, each with its interval, verdict and how it was computed."""
    rows = []

    def add(v, iv, measure, word, **extra):
        if iv is not None:
            rows.append({"variant": v.variant, "reference": v.reference, "measure": measure, "estimate": iv.estimate,
                         "ci95_low": iv.low if iv.known else None, "ci95_high": iv.high if iv.known else None,
                         "verdict": word, "n": iv.n, "method": iv.method, **extra})  # fmt: skip

    for v in comps:
        for t in v.tasks:
            kw = {"task": t.task, "metric": t.metric, "paired": t.paired, "p_value": t.p_value}
            add(v, t.difference, "difference", None, **kw)
            add(v, t.retained, "retained_fraction", t.retained_verdict, **kw)
            if t.ll_shift is not None:
                for measure, value in (("abs_loglik_shift_median_nats", t.ll_shift.median_nats),
                                       ("abs_loglik_shift_p90_nats", t.ll_shift.p90_nats)):  # fmt: skip
                    rows.append({"variant": v.variant, "reference": v.reference, "measure": measure, "estimate": value,
                                 "n": t.ll_shift.n_items, "method": t.ll_shift.method, **kw})  # fmt: skip
        for sp in v.speed:
            add(v, sp.speedup, "decode_speedup_x", sp.speedup_verdict, batch_size=sp.batch_size)
            add(v, sp.energy_ratio, "energy_per_token_ratio_x", sp.energy_verdict, batch_size=sp.batch_size)
    return rows
