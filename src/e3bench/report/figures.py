"""What the report's figures show, independent of how they are drawn: :func:`specs` turns
configuration summaries into :class:`Figure` specs that :mod:`e3bench.report.plots` draws as
static PNG/PDF (matplotlib, for papers) and :mod:`e3bench.report.interactive` as Plotly figures
in the HTML page (hover, legend toggles). Both draw the same marks, so the page and the paper
never disagree.

Every value is a point estimate with its 95 % interval (:class:`~e3bench.report.stats.Interval`):
across repeats of a configuration when it was run more than once (Student t), else over the
measured iterations of its one run (latency, decode speed), or ±1.96 standard errors over task
items (accuracy); an unknown interval draws no error bar and the hover says why.

At scale nothing is drawn once per configuration: bar figures show the best :data:`TOP_N`
configurations by their own metric (the note says "best 20 of 5,000"; every configuration is in
``pivot.csv``), line figures the :data:`TOP_LINES` fastest, and above :data:`TOP_N`
configurations an ``overview`` figure shows each metric's distribution per precision, backend or
model (box plots). Pareto scatters keep every configuration as a point (colour = the facet),
with error bars and numbered labels on the Pareto front only when there are many.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from e3bench.report.compare import ConfigSummary, batch_label, pareto_front
from e3bench.report.stats import Interval

#: Bars per bar figure (the best ones by the figure's metric).
TOP_N = 20
#: Lines in the throughput-vs-batch figure (the fastest configurations).
TOP_LINES = 8
#: Points in a Pareto figure that get error bars and numbered labels when there are more than this.
LABELLED_POINTS = 15

#: Series colours (colour-blind safe, Okabe-Ito; then repeated) and the Pareto front's, for
#: both renderings.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
FRONT = "#C0392B"

_NAN = float("nan")


@dataclass(frozen=True)
class Mark:
    """One drawn value: ``y`` (and for scatters ``x``) with 95 % intervals; ``cat`` is the
    category (bar label, box group) or the x value of a line; ``hover`` plain-text lines."""

    label: str
    series: str
    y: Interval
    x: Interval | None = None
    cat: str | float | None = None
    hover: str = ""
    front: bool = False
    number: int | None = None


@dataclass
class Panel:
    """One set of axes: ``kind`` bar (horizontal, one bar per mark), line (x = ``cat``, one line
    per series), scatter (x/y intervals, Pareto front) or box (one box per ``cat``)."""

    kind: Literal["bar", "line", "scatter", "box"]
    title: str
    x_label: str
    y_label: str
    marks: list[Mark]
    log_x: bool = False


@dataclass
class Figure:
    """A report figure: ``name`` (file stem, HTML id), title, note (what is shown, how the
    error bars were obtained) and its panels."""

    name: str
    title: str
    note: str
    panels: list[Panel] = field(default_factory=list)


def interval(c: Any, attr: str) -> Interval | None:
    """``c.<attr>`` as an interval: the attribute itself when it is one, else ``c.<attr>_ci``
    when that is one, else a bare float with an unknown interval; None when missing."""
    v = getattr(c, attr, None)
    if isinstance(v, Interval):
        return v if math.isfinite(v.estimate) else None
    ci = getattr(c, f"{attr}_ci", None)
    if isinstance(ci, Interval) and math.isfinite(ci.estimate):
        return ci
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return Interval(float(v), _NAN, _NAN, 1, "one value, no interval")


def accuracy(c: ConfigSummary) -> Interval | None:
    """Mean primary metric over the configuration's tasks with ±1.96 combined standard errors
    (``sqrt(sum se²) / k``; unknown when a task has none), unless the summary has an interval."""
    given = getattr(c, "accuracy_ci", None)
    if isinstance(given, Interval):
        return given
    scores = list(c.task_scores.values())
    if not scores:
        return None
    est = sum(v for _, v, _ in scores) / len(scores)
    ses = [se for _, _, se in scores]
    if any(se is None for se in ses):
        return Interval(est, _NAN, _NAN, 1, "mean over tasks; a task has no standard error")
    half = 1.96 * math.sqrt(sum(se * se for se in ses)) / len(ses)  # type: ignore[operator]
    return Interval(est, est - half, est + half, len(ses), "±1.96 standard errors over task items")


def _fmt(iv: Interval, unit: str) -> str:
    ci = f" [{iv.low:.4g}, {iv.high:.4g}]" if iv.known else ""
    return f"{iv.estimate:.4g}{ci} {unit} ({iv.method})"


def facet(configs: Sequence[ConfigSummary]) -> tuple[str, Callable[[ConfigSummary], str]]:
    """The dimension that colours and groups marks: the first of precision, backend, model, device
    that varies (at most 12 levels), else one series named ``configurations``."""
    for name, key in (("precision", lambda c: c.dtype), ("backend", lambda c: c.backend),
                      ("model", lambda c: c.model), ("device", lambda c: c.device)):  # fmt: skip
        if 1 < len({key(c) for c in configs}) <= 12:
            return name, key
    return "configuration", lambda c: "configurations"


def _label(c: ConfigSummary, mixed: bool) -> str:
    return f"{c.label} (bs{c.min_batch_size})" if mixed else c.label


def _hover(c: ConfigSummary, lines: Sequence[str]) -> str:
    head = f"{c.label}\n{c.model} · {c.backend} · {c.dtype} · {c.device} · batch {c.min_batch_size}"
    return "\n".join([head, *lines])


def _bars(configs, metric, unit, title, higher_better: bool, *, note="", name="") -> Figure | None:
    """Horizontal bars of ``metric(c) -> Interval``: every configuration, or the best :data:`TOP_N`."""
    _, key = facet(configs)
    mixed = len({c.min_batch_size for c in configs}) > 1
    vals = [(c, metric(c)) for c in configs]
    vals = [(c, v) for c, v in vals if v is not None]
    if not vals:
        return None
    shown = vals
    if len(vals) > TOP_N:
        shown = sorted(vals, key=lambda cv: cv[1].estimate, reverse=higher_better)[:TOP_N]
        note = (f"best {TOP_N} of {len(vals):,} configurations by this metric "
                f"({'highest' if higher_better else 'lowest'} first); all are in pivot.csv. " + note)  # fmt: skip
    marks = [Mark(_label(c, mixed), key(c), v, cat=_label(c, mixed), hover=_hover(c, [_fmt(v, unit)]))
             for c, v in shown]  # fmt: skip
    panel = Panel("bar", title, unit, "", marks)
    return Figure(name, title, (note + " Error bars: 95 % CI.").strip(), [panel])


def latency(configs: Sequence[ConfigSummary]) -> Figure | None:
    """TTFT and TPOT (ms, at each configuration's smallest batch) side by side; the same
    configurations in both panels (the best :data:`TOP_N` by TPOT at scale)."""
    rows = [(c, interval(c, "ttft_ms_at_min_batch"), interval(c, "tpot_ms_at_min_batch")) for c in configs]
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    if not rows:
        return None
    note = ""
    if len(rows) > TOP_N:
        rows = sorted(rows, key=lambda r: r[2].estimate if r[2] else math.inf)[:TOP_N]
        note = f"best {TOP_N} of {len(configs):,} configurations by TPOT (lowest first); all are in pivot.csv. "
    _, key = facet(configs)
    mixed = len({c.min_batch_size for c in configs}) > 1
    bl = batch_label(configs)
    panels = []
    for i, (what, unit) in enumerate((("TTFT", "ms"), ("TPOT", "ms")), start=1):
        marks = [Mark(_label(r[0], mixed), key(r[0]), r[i], cat=_label(r[0], mixed),
                      hover=_hover(r[0], [f"{what}: {_fmt(r[i], unit)}"]))
                 for r in rows if r[i] is not None]  # fmt: skip
        panels.append(Panel("bar", f"{what} ({unit}, mean)", f"{what} ({unit})", "", marks))
    return Figure("latency", f"Latency, {bl}", note + "Error bars: 95 % CI of the mean.", panels)


def throughput_vs_batch(configs: Sequence[ConfigSummary]) -> Figure | None:
    """Output tokens/s against batch size (log2 axis), one line per configuration (the
    :data:`TOP_LINES` with the highest peak at scale)."""
    have = [c for c in configs if c.throughput_by_batch]
    if not have:
        return None
    note = ""
    if len(have) > TOP_LINES:
        have = sorted(have, key=lambda c: max(_estimate(v) for v in c.throughput_by_batch.values()), reverse=True)
        note = f"the {TOP_LINES} of {len(have):,} configurations with the highest throughput; all are in runs.csv. "
        have = have[:TOP_LINES]
    marks = []
    for c in have:
        for bs in sorted(c.throughput_by_batch):
            v = c.throughput_by_batch[bs]
            iv = v if isinstance(v, Interval) else Interval(float(v), _NAN, _NAN, 1, "one run, no interval")
            marks.append(Mark(c.label, c.label, iv, cat=float(bs), hover=_hover(c, [f"batch {bs}: {_fmt(iv, 'tokens/s')}"])))
    panel = Panel("line", "Throughput vs batch size", "batch size", "output tokens/s", marks, log_x=True)
    return Figure("throughput", "Throughput vs batch size", note + "Error bars: 95 % CI across repeats.", [panel])


def _estimate(v: Any) -> float:
    return v.estimate if isinstance(v, Interval) else float(v)


def pareto(configs: Sequence[ConfigSummary], name: str, x_attr: str, x_label: str, title: str) -> Figure | None:
    """Quality (y, accuracy; decode tokens/s without task scores) against a cost (x,
    ``x_attr``, lower is better), every configuration a point coloured by :func:`facet`, the
    front marked and numbered (all points numbered when there are few)."""
    use_acc = any(c.task_scores for c in configs)
    _, key = facet(configs)
    mixed = len({c.min_batch_size for c in configs}) > 1
    pts = []
    for c in configs:
        y = accuracy(c) if use_acc else interval(c, "decode_tokens_per_s_at_min_batch")
        x = interval(c, x_attr)
        if x is not None and y is not None:
            pts.append((c, x, y))
    if not pts:
        return None
    if x_attr.endswith("_at_min_batch"):
        x_label = f"{x_label}, {batch_label(configs)}"
    y_label = "accuracy (mean primary metric)" if use_acc else f"decode tokens/s, {batch_label(configs)}"
    if not use_acc:
        title = title.replace("Accuracy", "Decode speed") + " (no task scores in these runs)"
    front = set(pareto_front([(i, x.estimate, y.estimate) for i, (_, x, y) in enumerate(pts)]))
    few = len(pts) <= LABELLED_POINTS
    order = sorted(front, key=lambda i: pts[i][1].estimate)[:LABELLED_POINTS]
    numbers = {i: n for n, i in enumerate(range(len(pts)) if few else order, start=1)}
    marks = []
    for i, (c, x, y) in enumerate(pts):
        hover = _hover(c, [f"x: {_fmt(x, x_label)}", f"y: {_fmt(y, y_label)}"] + (["on the Pareto front"] if i in front else []))
        keep = few or i in front  # error bars of a cloud of thousands are noise: front only then
        marks.append(Mark(_label(c, mixed), key(c), y if keep else _bare(y), x if keep else _bare(x), hover=hover,
                          front=i in front, number=numbers.get(i)))  # fmt: skip
    note = ("Pareto front: no other configuration is both cheaper and better. Error bars: 95 % CI"
            + ("" if few else f" (front only; {len(pts):,} points; numbers: the {len(order)} cheapest front points)"))
    xs = [x.estimate for _, x, _ in pts]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 20  # a cost spanning decades: log axis
    return Figure(name, title, note + ".", [Panel("scatter", title, x_label + (" (log scale)" if log_x else ""),
                                                  y_label, marks, log_x=log_x)])


def _bare(iv: Interval) -> Interval:
    return Interval(iv.estimate, _NAN, _NAN, iv.n, iv.method)


def overview(configs: Sequence[ConfigSummary]) -> Figure | None:
    """Above :data:`TOP_N` configurations: decode speed, energy per token and accuracy per level
    of :func:`facet` (box plots over configurations)."""
    if len(configs) <= TOP_N:
        return None
    dim, key = facet(configs)
    if dim == "configuration":
        return None
    metrics = (("decode tokens/s", lambda c: interval(c, "decode_tokens_per_s_at_min_batch")),
               ("energy per token (J)", lambda c: interval(c, "ept_total_j_per_token_at_min_batch")),
               ("accuracy", accuracy))  # fmt: skip
    panels = []
    for what, metric in metrics:
        marks = [Mark(c.label, key(c), v, cat=key(c)) for c in configs if (v := metric(c)) is not None]
        if marks:
            panels.append(Panel("box", f"{what} by {dim}", dim, what, marks))
    if not panels:
        return None
    return Figure("overview", f"All {len(configs):,} configurations by {dim}",
                  f"Boxes: median and quartiles over configurations ({batch_label(configs)}); whiskers 1.5 IQR.", panels)  # fmt: skip


def specs(configs: Sequence[ConfigSummary]) -> list[Figure]:
    """Every report figure there is data for, in page order (Pareto figures first)."""
    bl = batch_label(configs)
    methods = "; ".join(sorted({c.energy_method for c in configs if c.energy_method}))
    figs = [
        pareto(configs, "pareto_energy", "ept_total_j_per_token_at_min_batch", "energy per token (J)",
               "Accuracy vs energy per token"),
        pareto(configs, "pareto_latency", "tpot_ms_at_min_batch", "TPOT (ms)", "Accuracy vs latency"),
        overview(configs),
        latency(configs),
        throughput_vs_batch(configs),
        _bars(configs, lambda c: interval(c, "ept_total_j_per_token_at_min_batch"), "J/token",
              f"Energy per token (EPT_total, {bl})", False, note=methods, name="energy_per_token"),
        _bars(configs, accuracy, "mean primary metric", "Accuracy (mean over tasks of acc_norm / acc / exact match)",
              True, name="accuracy"),
        _bars(configs, lambda c: interval(c, "peak_rss_mib"), "MiB", "Peak RSS (measured phase)", False, name="memory"),
    ]  # fmt: skip
    return [f for f in figs if f is not None]
