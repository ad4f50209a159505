"""Terminal summary of one result record (reads the record only; measures nothing).

One screen, in the console's width (80 columns included: a table that would not fit drops its
least important columns, never cuts a number): the model line, speed, energy and quality tables
(quality as lm-eval prints it: Task / n-shot / Metric / Value / ± / Stderr), warnings, and last
the three E's side by side, each with how it was obtained (:func:`three_es`).

Per-token energy is named by what it counts: ``J/out-tok`` is energy per *output* token,
``J/in+out-tok`` per input and output token together (the two are not reciprocals of anything
else shown). Text from the record (model names, paths, task names, errors, warnings) is printed
literally: rich would read ``[...]`` in it as markup (a model path holding ``[/]`` crashed the
summary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from e3bench.core.fmt import count, num, wrap
from e3bench.energy.accounting import EnergySummary
from e3bench.evals.defaults import QUALITY_SKIPPED
from e3bench.report.compare import headline_metric
from e3bench.report.tables import MISSING
from e3bench.results.schema import BatchResult, ResultRecord, TaskResult

#: width of the three E's labels ("Effectiveness" + 2)
_LABEL = 15


def _f(x: float | None, spec: str = ".1f") -> str:
    return num(x, spec, none=MISSING)


def _g(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, never in scientific notation (0.000123, 12345)."""
    if x is None:
        return MISSING
    if x == int(x) and abs(x) < 10**6:
        return str(int(x))
    if x == 0 or abs(x) >= 10 ** (digits - 1):
        return f"{x:.0f}"
    import math

    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _pm(stats) -> str:
    """``mean ± half-width`` of the 95 % CI, or ``mean [low, high]`` when the interval is
    visibly asymmetric (a positive quantity's CI is on the log scale: :func:`e3bench.core.timing.mean_ci95`,
    so ``±`` would hide that its low end sits closer to the mean); the mean alone without a CI."""
    if stats is None:
        return MISSING
    if stats.ci95_low is None or stats.ci95_high is None:
        return _g(stats.mean, 4)
    spec = ".0f" if abs(stats.mean) >= 1000 else ".1f"
    below, above = stats.mean - stats.ci95_low, stats.ci95_high - stats.mean
    if abs(above - below) > 0.1 * max(above, below):
        return f"{stats.mean:{spec}} [{stats.ci95_low:{spec}}, {stats.ci95_high:{spec}}]"
    return f"{stats.mean:{spec}} ± {(above + below) / 2:{spec}}"


@dataclass(frozen=True)
class Col:
    """One table column: header, how important it is (0 = always shown; higher ones are dropped
    first when the table would not fit), its cell for a row, and whether it is text."""

    header: str
    priority: int
    cell: Callable[[Any], str]
    text: bool = False


def print_fitted(console, title: str, cols: Sequence[Col], rows: Sequence[Any]) -> None:
    """Print ``title`` and a table of ``rows`` in the console's width, laid out by the one table
    fitter (:func:`e3bench.report.textable.table`): columns of the highest priority are left out
    first until it fits, and a line names them (all values are in the record); numbers are
    never wrapped or cut."""
    from e3bench.report import textable

    cells = [{c.header: c.cell(r) for c in cols} for r in rows]
    tcols = [textable.Col(c.header, kind="text" if c.text else "num") for c in cols]
    droppable = sorted((c for c in cols if c.priority > 0), key=lambda c: (c.priority, cols.index(c)))
    t, lay = textable.table(tcols, cells, width=console.width, drop_order=[c.header for c in droppable])
    _wrap(console, title)
    console.print(t)
    if lay.dropped:
        _wrap(console, f"  (not shown at {console.width} columns: {', '.join(lay.dropped)}; all in the record)", indent=3)


def _wrap(console, text: str, indent: int = 0) -> None:
    """Print ``text`` literally, wrapped to the console's width (continuation lines indented)."""
    for line in wrap(text, console.width, indent):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- tables
_SPEED = [
    Col("batch", 0, lambda g: str(g.batch_size)),
    Col("iters", 3, lambda g: str(g.iterations)),
    Col("TTFT ms", 1, lambda g: _pm(g.ttft_ms)),
    Col("TPOT ms", 0, lambda g: _pm(g.tpot_ms)),
    Col("ITL p99 ms", 4, lambda g: _f(g.itl_ms.p99 if g.itl_ms else None)),
    Col("prefill tok/s", 2, lambda g: _pm(g.prefill_tokens_per_s)),
    Col("decode tok/s", 0, lambda g: _pm(g.decode_tokens_per_s)),
    Col("out tok/s e2e", 3, lambda g: _f(g.throughput_tokens_per_s)),
    Col("roofline %", 2, lambda g: _f(g.roofline_fraction * 100 if g.roofline_fraction is not None else None)),
]


def _energy_row(e: EnergySummary | None, col: str) -> str:
    if e is None or e.method == "missing":
        return "missing" if col == "gross J" else MISSING
    return {
        "gross J": _g(e.gross_energy_j),
        "net J": _g(e.net_energy_j),
        "basis": e.basis.split(" ")[0],
        "J/out-tok": _g(e.ept_out_j_per_token),
        "J/in+out-tok": _g(e.ept_total_j_per_token),
        "CO2e g": _g(e.co2e_g),
    }[col]


_ENERGY = [Col("window", 0, lambda r: r[0], text=True)] + [
    Col(h, p, lambda r, h=h: _energy_row(r[1], h))
    for h, p in (("gross J", 1), ("net J", 0), ("basis", 0), ("J/out-tok", 0), ("J/in+out-tok", 2), ("CO2e g", 3))
]


def _task_rows(tasks: Sequence[TaskResult]) -> list[tuple[str, str, str, float, float | None, str, str]]:
    rows = []
    for tr in tasks:
        shots = tr.details.get("num_fewshot")
        for i, (metric, value) in enumerate(tr.metrics.items()):
            first = i == 0
            rows.append((tr.task if first else "", str(shots) if first and shots is not None else "", metric,
                         value, tr.stderr.get(metric), str(tr.n_items) if first else "",
                         _g(tr.examples_per_s) if first else ""))  # fmt: skip
    return rows


_TASKS = [
    Col("Task", 0, lambda r: r[0], text=True),
    Col("n-shot", 2, lambda r: r[1]),
    Col("Metric", 0, lambda r: r[2], text=True),
    Col("Value", 0, lambda r: f"{r[3]:.4f}"),
    Col("±", 0, lambda r: "±" if r[4] is not None else ""),
    Col("Stderr", 0, lambda r: f"{r[4]:.4f}" if r[4] is not None else MISSING),
    Col("items", 1, lambda r: r[5]),
    Col("items/s", 3, lambda r: r[6]),
]


def print_summary(rec: ResultRecord, console) -> None:
    """Print ``rec`` to a rich ``console``: model line, speed, energy and quality tables,
    warnings, then the three E's (a failed run: one line with its error)."""
    m = rec.model
    eff = rec.efficiency
    if m is None or eff is None:
        _wrap(console, f"run {rec.run_id}: {rec.status} {rec.error or ''}")
        return
    gpu = f" · peak GPU {eff.peak_device_memory_bytes / 2**20:.0f} MiB" if eff.peak_device_memory_bytes else ""
    _wrap(console, f"{m.name} · {m.architecture} · {m.parameters / 1e6:.1f}M params · {rec.config.get('backend')} "
                   f"{m.dtype} on {m.device} · load {eff.load_time_s:.1f} s · peak RSS "
                   f"{eff.peak_rss_bytes / 2**20:.0f} MiB{gpu}", indent=2)  # fmt: skip
    _wrap(console, f"prompts: {eff.prompt_source}", indent=2)
    if eff.generation:
        print_fitted(console, "speed (mean ± 95% CI; p50/p99 in the record)", _SPEED, eff.generation)
    once = one_off_line(rec)
    if once:
        _wrap(console, once, indent=2)
    for f in eff.forward:
        _wrap(console, f"forward batch {f.batch_size}: {_pm(f.latency_ms)} ms, {f.tokens_per_s:.0f} input tok/s "
                       f"({f.iterations} iters)")  # fmt: skip
    if eff.roofline:
        r = eff.roofline
        _wrap(console, f"roofline: bandwidth {r.bandwidth_bytes_per_s / 1e9:.1f} GB/s "
                       f"({r.bandwidth_method.split(':')[0]}; how: in the record); "
                       f"weights {r.weights_bytes / 2**20:.0f} MiB per decode step", indent=2)  # fmt: skip
    _print_energy(rec, console)
    if rec.effectiveness:
        print_fitted(console, "quality (Stderr = standard error of the mean over items)", _TASKS,
                     _task_rows(rec.effectiveness))
    for w in rec.warnings:
        _wrap(console, f"warning: {w}", indent=2)
    console.rule("the three E's", style="dim")
    for label, text in three_es(rec):
        _wrap(console, f"{label:<{_LABEL}}{text}", indent=_LABEL)


def one_off_line(rec: ResultRecord) -> str | None:
    """The untimed first-use work (the priming request, each batch size's warm-up) when it took
    longer than twice the timed iterations it preceded: a compiling backend's compilation, which
    TTFT/TPOT leave out. None when it was not longer (nothing one-off worth showing)."""
    eff = rec.efficiency
    if eff is None:
        return None
    warm_iters = max(1, int(rec.config.get("warmup_iters") or 1))
    parts, slow = [], False
    first_e2e_s = eff.generation[0].e2e_ms.mean / 1e3 if eff.generation else None
    if eff.priming_s is not None and first_e2e_s:
        parts.append(f"priming request {eff.priming_s:.1f} s")
        slow = eff.priming_s > 2 * first_e2e_s
    for r in eff.generation:
        if r.warmup_s is not None:
            parts.append(f"warm-up bs{r.batch_size} {r.warmup_s:.1f} s")
            slow = slow or r.warmup_s / warm_iters > 2 * r.e2e_ms.mean / 1e3
    if not slow:
        return None
    return (f"one-off work, untimed (outside TTFT/TPOT/E2E and every energy window): {', '.join(parts)} "
            "(compilation, if the backend compiles; priming_s / warmup_s in the record)")  # fmt: skip


def _print_energy(rec: ResultRecord, console) -> None:
    eff = rec.efficiency
    assert eff is not None
    rows: list[tuple[str, EnergySummary | None]] = []
    for g in eff.generation:
        rows.append((f"gen bs{g.batch_size}", g.energy))
        if g.energy_cross_check:
            rows.append(("  cross-check", g.energy_cross_check))
    rows += [(f"fwd bs{f.batch_size}", f.energy) for f in eff.forward]
    rows += [(f"task {t.task}", t.energy) for t in rec.effectiveness if t.energy is not None]
    if not any(e for _, e in rows):
        return
    print_fitted(console, "energy (net = idle-subtracted; J/out-tok = per output token, J/in+out-tok = per "
                 "prompt and output token; on the basis shown)", _ENERGY, rows)
    for name, e in rows:
        if e is not None and e.method == "missing":
            _wrap(console, f"{name.strip()}: energy missing: {e.error or 'no meter'}", indent=2)
    methods = {(e.method, e.sensor) for _, e in rows if e is not None and e.method != "missing"}
    if methods:
        _wrap(console, "method: " + "; ".join(f"{m} ({s})" for m, s in sorted(methods)), indent=2)
    pues = {e.pue for _, e in rows if e is not None and e.pue not in (None, 1.0)}
    if pues:
        _wrap(console, f"CO2e g: of facility energy = measured IT energy × PUE {', '.join(map(str, sorted(pues)))} "
                       "(--pue; the J columns are IT energy)", indent=2)  # fmt: skip
    if rec.energy:
        reason = rec.energy.meter_choice_reason
        short = reason.split(" [", 1)[0] + (" (the other meters: in the record)" if " [" in reason else "")
        _wrap(console, f"meter: {short}", indent=2)


# ----------------------------------------------------------------------------- the three E's
def three_es(rec: ResultRecord) -> list[tuple[str, str]]:
    """``[("Effectiveness", ...), ("Efficiency", ...), ("Energy", ...)]``: each E's figures
    from ``rec`` and how they were obtained, one entry each (plain text)."""
    return [("Effectiveness", _effectiveness(rec)), ("Efficiency", _efficiency(rec)), ("Energy", _energy(rec))]


def _effectiveness(rec: ResultRecord) -> str:
    if not rec.effectiveness:
        skipped = next((w for w in rec.warnings if w.startswith(QUALITY_SKIPPED)), None)
        if skipped:
            return "not measured: the default task could not run here (warning above)"
        return "not measured: no task in this run (add --tasks, e.g. --tasks arc_easy --limit 100)"
    parts = []
    for tr in rec.effectiveness:
        if not tr.metrics:
            parts.append(f"{tr.task}: no metric")
            continue
        metric = headline_metric(tr.metrics)
        value, se = tr.metrics[metric], tr.stderr.get(metric)
        items = _items(tr)
        how = _scoring(tr)
        parts.append(f"{tr.task} {metric} {value:.3f}" + (f" ± {se:.3f} (stderr)" if se is not None else "")
                     + f" on {items}" + (f"; {how}" if how else ""))  # fmt: skip
    return "; ".join(parts)


def _items(tr: TaskResult) -> str:
    d = tr.details
    if d.get("limit") is not None and d.get("subset") == "first-n":
        return f"the first {count(tr.n_items, 'item')}"
    if d.get("limit") is not None:
        return f"{count(tr.n_items, 'sampled item')} (seed {d.get('seed')})"
    return f"{count(tr.n_items, 'item')} (all)"


def _scoring(tr: TaskResult) -> str:
    how = {"loglikelihood": "log-likelihood of each choice", "generate": "greedy generation"}
    d = tr.details
    parts = [f"{d['num_fewshot']}-shot" if d.get("num_fewshot") is not None else "",
             how.get(str(d.get("scoring")), str(d.get("scoring") or "")),
             f"by {tr.engine}" if tr.engine != "e3bench" else "",
             f"data {tr.data_source}" if tr.data_source else ""]  # fmt: skip
    return ", ".join(p for p in parts if p)


def _efficiency(rec: ResultRecord) -> str:
    eff = rec.efficiency
    if eff is None or not (eff.generation or eff.forward):
        return "not measured"
    if not eff.generation:
        return "; ".join(f"batch {f.batch_size}: {_g(f.latency_ms.mean)} ms per forward pass" for f in eff.forward)
    per = "; ".join(f"batch {g.batch_size}: TPOT {_g(g.tpot_ms.mean if g.tpot_ms else None)} ms, decode "
                    f"{_g(g.decode_tokens_per_s.mean if g.decode_tokens_per_s else None)} tok/s" for g in _batches(eff.generation))  # fmt: skip
    g0 = eff.generation[0]
    return (f"{per} (mean over ≥ {min(g.iterations for g in eff.generation)} timed iterations, "
            f"{_g(g0.output_tokens_per_request)} new tokens per request, {_g(g0.input_tokens_per_request_mean)} prompt tokens)")  # fmt: skip


def _batches(gens: Sequence[BatchResult]) -> list[BatchResult]:
    """At most three batch sizes for the one-line view: the first, the fastest decode, the last."""
    if len(gens) <= 3:
        return list(gens)
    fastest = max(gens, key=lambda g: g.decode_tokens_per_s.mean if g.decode_tokens_per_s else 0.0)
    return sorted({id(g): g for g in (gens[0], fastest, gens[-1])}.values(), key=lambda g: g.batch_size)


def _energy(rec: ResultRecord) -> str:
    eff = rec.efficiency
    gens = [g for g in _batches(eff.generation)] if eff else []
    measured = [(g, g.energy) for g in gens if g.energy is not None and g.energy.method != "missing"]
    if not measured:
        reasons = {g.energy.error for g in gens if g.energy is not None and g.energy.error}
        return "not measured" + (f": {'; '.join(sorted(reasons))}" if reasons else " (no meter)")
    per = "; ".join(f"batch {g.batch_size}: {_g(e.ept_out_j_per_token)} J {e.basis.split(' ')[0]} per output token"
                    for g, e in measured)  # fmt: skip
    e = measured[0][1]
    how = f"{e.method} by {e.sensor}"
    if e.basis.startswith("net"):
        how += f"; idle {_g(e.idle_power_w)} W subtracted" + (f" (metered: {e.idle_state})" if e.idle_state else "")
    else:
        how += f"; {e.basis}"
    return f"{per} ({how}; whole window over output tokens)"


# ----------------------------------------------------------------------------- several runs
def _first_batch(rec: ResultRecord) -> BatchResult | None:
    return rec.efficiency.generation[0] if rec.efficiency and rec.efficiency.generation else None


def _quality_cell(rec: ResultRecord) -> str:
    if not rec.effectiveness or not rec.effectiveness[0].metrics:
        return MISSING
    tr = rec.effectiveness[0]
    metric = headline_metric(tr.metrics)
    value, se = tr.metrics[metric], tr.stderr.get(metric)
    return f"{metric} {value:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def print_runs(records: Sequence[ResultRecord], console, *, varied: Sequence[str] = ()) -> None:
    """One row per run of one command (comma lists, ``--repeats``): what differs (``varied``
    config fields, the run id), and the three E's at the first batch size of each run."""
    cols = [Col("#", 0, lambda r: str(r[0])), Col("run_id", 3, lambda r: r[1].run_id, text=True)]
    cols += [Col(k.replace("_", " "), 0, lambda r, k=k: str(r[1].config.get(k))) for k in varied]
    cols += [
        Col("batch", 1, lambda r: str(b.batch_size) if (b := _first_batch(r[1])) else MISSING),
        Col("TPOT ms", 1, lambda r: _pm(b.tpot_ms) if (b := _first_batch(r[1])) else MISSING),
        Col("decode tok/s", 0, lambda r: _pm(b.decode_tokens_per_s) if (b := _first_batch(r[1])) else MISSING),
        Col("J/out-tok", 0, lambda r: _g(b.energy.ept_out_j_per_token) if (b := _first_batch(r[1])) and b.energy
            else MISSING),  # fmt: skip
        Col("quality ± stderr", 0, lambda r: _quality_cell(r[1])),
    ]
    print_fitted(console, f"{count(len(records), 'run')} (speed and energy at each run's first batch size; each run's "
                          "record is named above)", cols, list(enumerate(records, 1)))  # fmt: skip
