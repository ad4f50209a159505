"""What the report's figures show, independent of how they are drawn: :func:`specs` turns
configuration summaries into :class:`Figure` specs that :mod:`e3bench.report.plots` draws as
static PNG/PDF (matplotlib, for papers) and :mod:`e3bench.report.interactive` as Plotly figures
in the HTML page (hover, legend toggles). Both draw the same marks, so page and paper agree.

Only like is compared with like: a panel holds one comparison :class:`Group`, the configurations
of one workload (:mod:`e3bench.report.workload`) at one batch size (the one most of them
measured, the smallest on a tie); a folder of several workloads gets one panel per workload, the
:data:`MAX_GROUPS` largest (the note names what is left out).

Every value is a point estimate with its 95 % interval (:class:`~e3bench.report.stats.Interval`,
from :class:`~e3bench.report.compare.ConfigSummary`): across repeats when a configuration ran
more than once, else over its run's measured iterations (latency, decode speed), or ±1.96
standard errors over task items (accuracy); an unknown interval draws no error bar.

At scale nothing is drawn once per configuration: bar panels show the best :data:`TOP_N` by their
own metric (the note says "best 20 of 5,000"; every configuration is in ``pivot.csv``), line
panels the :data:`TOP_LINES` fastest, and above :data:`TOP_N` configurations an ``overview``
figure shows each metric's distribution per precision, backend or model (box plots). Pareto
scatters keep every configuration as a point (colour = the facet), with error bars and numbered
labels on the front only when there are more than :data:`LABELLED_POINTS`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from e3bench.core.fmt import count
from e3bench.report.compare import ConfigSummary, by_workload, pareto_front
from e3bench.report.stats import Interval, clipped
from e3bench.results.labels import model_display

#: Bars per bar panel (the best ones by the panel's metric).
TOP_N = 20
#: Lines per throughput-vs-batch panel (the configurations with the highest throughput).
TOP_LINES = 8
#: Pareto points that get error bars and numbers when there are more points than this.
LABELLED_POINTS = 15
#: Comparison groups (workloads) drawn, the largest first.
MAX_GROUPS = 3

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
    """One set of axes: ``kind`` bar (horizontal, one bar per mark, top to bottom), line (x =
    ``cat``, one line per series), scatter (x/y intervals, Pareto front) or box (one box per
    ``cat``)."""

    kind: Literal["bar", "line", "scatter", "box"]
    title: str
    x_label: str
    y_label: str
    marks: list[Mark]
    log_x: bool = False
    #: a line joins its points in the order of ``marks`` (load order: a latency–throughput curve,
    #: which may turn back when the achieved rate falls at a higher load), not sorted by x
    in_order: bool = False
    #: the y axis starts at 0 (a ratio quantity: joules, shares — a level twice another should
    #: look twice as high, not fill the panel from its own minimum)
    y_from_zero: bool = False


@dataclass
class Figure:
    """A report figure: ``name`` (file stem, HTML id), title, note (what is shown, how the error
    bars were obtained, what was left out) and its panels."""

    name: str
    title: str
    note: str
    panels: list[Panel] = field(default_factory=list)


@dataclass
class Group:
    """Configurations compared in one panel: one workload at one batch size."""

    title: str
    batch: int
    configs: list[ConfigSummary]
    workload: str = ""


def groups(configs: Sequence[ConfigSummary]) -> tuple[list[Group], str]:
    """The :data:`MAX_GROUPS` largest comparison groups and a note on what was left out (configs
    without the group's batch size, further workloads); "" when nothing was."""
    out, left = [], 0
    workloads = by_workload(configs)
    for w, members in workloads.items():
        counts = Counter(bs for c in members for bs in c.batches)
        if not counts:
            continue
        bs = min(counts, key=lambda b: (-counts[b], b))
        have = [c for c in members if bs in c.batches]
        left += len(members) - len(have)
        title = f"{w.short}, batch {bs}" if len(workloads) > 1 else f"batch {bs}"
        out.append(Group(title, bs, have, w.short if len(workloads) > 1 else ""))
    out.sort(key=lambda g: -len(g.configs))
    notes = [f"{count(left, 'configuration', sep=True)} did not measure their panel's batch size"] if left else []
    if len(out) > MAX_GROUPS:
        rest = out[MAX_GROUPS:]
        notes.append(f"{len(rest)} more workloads ({count(sum(len(g.configs) for g in rest), 'configuration', sep=True)}) "
                     "are in pivot.csv")  # fmt: skip
    return out[:MAX_GROUPS], ("; ".join(notes) + ". ") if notes else ""


def at(c: ConfigSummary, bs: int, metric: str) -> Interval | None:
    """``metric`` (a :class:`~e3bench.report.compare.BatchFigures` field) of ``c`` at batch
    ``bs`` with its interval; None when not measured."""
    b = c.batches.get(bs)
    iv = b.ci(metric) if b is not None else None
    return iv if iv is not None and math.isfinite(iv.estimate) else None


def accuracy(c: ConfigSummary) -> Interval | None:
    """Mean primary metric over the configuration's tasks with ±1.96 combined standard errors
    (``sqrt(sum se²) / k``) clipped to [0, 1] (one task: its own interval,
    :meth:`~e3bench.report.compare.TaskScore.ci`); None without tasks."""
    scores = list(c.task_scores.values())
    if len(scores) == 1:
        return scores[0].ci()
    if not scores:
        return None
    est = sum(s.value for s in scores) / len(scores)
    if any(s.stderr is None for s in scores):
        return Interval(est, _NAN, _NAN, len(scores), "mean over tasks; a task has no standard error")
    half = 1.96 * math.sqrt(sum(s.stderr**2 for s in scores)) / len(scores)  # type: ignore[operator]
    iv = Interval(est, est - half, est + half, len(scores), f"mean over {len(scores)} tasks, ±1.96 standard errors")
    return clipped(iv, 0.0, 1.0)  # a mean of scores in [0, 1]


def memory(c: ConfigSummary) -> Interval | None:
    """Peak RSS of the measured phase (MiB): the largest over the runs, so no interval."""
    if c.peak_rss_bytes is None:
        return None
    return Interval(c.peak_rss_bytes / 2**20, _NAN, _NAN, c.runs, f"largest of {count(c.runs, 'run')}, no interval")


def _fmt(iv: Interval, unit: str) -> str:
    ci = f" [{iv.low:.4g}, {iv.high:.4g}]" if iv.known else ""
    return f"{iv.estimate:.4g}{ci} {unit} ({iv.method})"


def facet(configs: Sequence[ConfigSummary]) -> tuple[str, Callable[[ConfigSummary], str]]:
    """The dimension that colours and groups marks: the first of precision, backend, model, device
    that varies (at most 12 levels), else one series named ``configurations``. Models are named
    as in labels (:func:`~e3bench.results.labels.model_display`: a folder's name, not its path)."""
    models = {c.model for c in configs}
    # models by their display name (the labels' rule), by the whole path where two names collide
    by_name = len({model_display(m) for m in models}) == len(models)
    for name, key in (("precision", lambda c: c.dtype), ("backend", lambda c: c.backend),
                      ("model", lambda c: model_display(c.model) if by_name else c.model),
                      ("device", lambda c: c.device)):  # fmt: skip
        if 1 < len({key(c) for c in configs}) <= 12:
            return name, key
    return "configuration", lambda c: "configurations"


def name_in(c: ConfigSummary, g: Group) -> str:
    """``c``'s label inside a panel of group ``g``: without the `` [workload]`` tag that tells
    configurations of several workloads apart, since the panel title names its workload (the
    hover keeps the whole label). Labels stay unique within one workload."""
    tag = f" [{c.workload.short}]"
    return c.label[: -len(tag)] if g.workload and c.label.endswith(tag) else c.label


def _hover(c: ConfigSummary, lines: Sequence[str]) -> str:
    head = f"{c.label}\n{c.model} · {c.backend} · {c.dtype} · {c.device} · {count(c.runs, 'run')}"
    return "\n".join([head, *lines])


Metric = Callable[[ConfigSummary, int], "Interval | None"]


def _bars(gs: list[Group], left: str, key, metric: Metric, unit: str, title: str, name: str, higher: bool,
          note: str = "", bars: str = " Error bars: 95 % CI.") -> Figure | None:  # fmt: skip
    """Horizontal bars of ``metric(c, batch)``, one panel per group: every configuration, or the
    best :data:`TOP_N`."""
    panels, cut = [], []
    for g in gs:
        vals = [(c, v) for c in g.configs if (v := metric(c, g.batch)) is not None]
        if len(vals) > TOP_N:
            cut.append(len(vals))
            vals = sorted(vals, key=lambda cv: cv[1].estimate, reverse=higher)[:TOP_N]
        marks = [Mark(name_in(c, g), key(c), v, cat=name_in(c, g), hover=_hover(c, [_fmt(v, unit)])) for c, v in vals]
        if marks:
            panels.append(Panel("bar", g.title, unit, "", marks))
    if not panels:
        return None
    if cut:
        note = (f"Best {TOP_N} of {', '.join(f'{n:,}' for n in cut)} configurations by this metric "
                f"({'highest' if higher else 'lowest'} first); all are in pivot.csv. " + note)  # fmt: skip
    return Figure(name, title, (left + note + bars).strip(), panels)


def throughput(gs: list[Group], left: str, key) -> Figure | None:
    """Output tokens/s against batch size (log2 axis), one line per configuration (the
    :data:`TOP_LINES` with the highest peak), one panel per workload."""
    panels, cut = [], []

    def peak(c: ConfigSummary) -> float:
        return max((iv.estimate for bs in c.batches if (iv := at(c, bs, "throughput_tokens_per_s"))), default=0.0)

    for g in gs:
        have = [c for c in g.configs if peak(c) > 0]
        if len(have) > TOP_LINES:
            cut.append(len(have))
            have = sorted(have, key=peak, reverse=True)[:TOP_LINES]
        marks = [Mark(name_in(c, g), name_in(c, g), iv, cat=float(bs), hover=_hover(c, [f"batch {bs}: {_fmt(iv, 'tokens/s')}"]))
                 for c in have for bs in sorted(c.batches) if (iv := at(c, bs, "throughput_tokens_per_s"))]  # fmt: skip
        if marks:
            panels.append(Panel("line", g.workload, "batch size", "output tokens/s", marks, log_x=True))
    if not panels:
        return None
    top = f"The {TOP_LINES} of {', '.join(f'{n:,}' for n in cut)} configurations with the highest throughput. " if cut else ""
    return Figure("throughput", "Throughput vs batch size", left + top + "Error bars: 95 % CI across runs.", panels)


def pareto(gs: list[Group], left: str, key, name: str, metric: str, x_label: str, title: str) -> Figure | None:
    """Quality (y: accuracy, else decode tokens/s) against a cost (x: ``metric`` at the group's
    batch, lower is better), every configuration a point coloured by :func:`facet`, the front
    marked and numbered (all points numbered when there are few), one panel per group."""
    use_acc = any(c.task_scores for g in gs for c in g.configs)
    panels, notes = [], []
    for g in gs:
        pts = []
        for c in g.configs:
            y = accuracy(c) if use_acc else at(c, g.batch, "decode_tokens_per_s")
            x = at(c, g.batch, metric)
            if x is not None and y is not None:
                pts.append((c, x, y))
        if not pts:
            continue
        front = set(pareto_front([(i, x.estimate, y.estimate) for i, (_, x, y) in enumerate(pts)]))
        few = len(pts) <= LABELLED_POINTS
        order = range(len(pts)) if few else sorted(front, key=lambda i: pts[i][1].estimate)[:LABELLED_POINTS]
        numbers = {i: n for n, i in enumerate(order, start=1)}
        y_label = "accuracy (mean primary metric)" if use_acc else f"decode tokens/s, batch {g.batch}"
        marks = []
        for i, (c, x, y) in enumerate(pts):
            hover = _hover(c, [f"{x_label}: {_fmt(x, '')}", f"{y_label}: {_fmt(y, '')}"]
                           + (["on the Pareto front"] if i in front else []))  # fmt: skip
            keep = few or i in front  # error bars of a cloud of thousands are noise: the front's only
            marks.append(Mark(name_in(c, g), key(c), y if keep else _bare(y), x if keep else _bare(x), hover=hover,
                              front=i in front, number=numbers.get(i)))  # fmt: skip
        xs = [x.estimate for _, x, _ in pts]
        log_x = min(xs) > 0 and max(xs) / min(xs) > 20  # a cost spanning decades: log axis
        panels.append(Panel("scatter", g.title, x_label + (" (log scale)" if log_x else ""), y_label, marks, log_x))
        if not few:
            notes.append(f"{len(pts):,} points, error bars and numbers on the front")
    if not panels:
        return None
    if not use_acc:
        title = title.replace("Accuracy", "Decode speed") + " (no task scores in these runs)"
    note = "Pareto front: no other configuration is both cheaper and better. Error bars: 95 % CI"
    return Figure(name, title, left + note + (f" ({'; '.join(notes)})." if notes else "."), panels)


def _bare(iv: Interval) -> Interval:
    return Interval(iv.estimate, _NAN, _NAN, iv.n, iv.method)


def overview(g: Group, dim: str, key) -> Figure | None:
    """Above :data:`TOP_N` configurations: decode speed, energy per token and accuracy per level
    of :func:`facet` (box plots over the configurations of the largest group)."""
    if len(g.configs) <= TOP_N or dim == "configuration":
        return None
    metrics = (("decode tokens/s", lambda c: at(c, g.batch, "decode_tokens_per_s")),
               ("J per in+out token", lambda c: at(c, g.batch, "ept_total_j_per_token")),
               ("accuracy", accuracy))  # fmt: skip
    panels = []
    for what, metric in metrics:
        marks = [Mark(c.label, key(c), v, cat=key(c)) for c in g.configs if (v := metric(c)) is not None]
        if marks:
            panels.append(Panel("box", f"{what} by {dim}", dim, what, marks))
    if not panels:
        return None
    return Figure("overview", f"{len(g.configs):,} configurations by {dim} ({g.title})",
                  "Boxes: median and quartiles over configurations; whiskers: 1.5 IQR.", panels)  # fmt: skip


def specs(configs: Sequence[ConfigSummary]) -> list[Figure]:
    """Every report figure there is data for, in page order (Pareto figures first)."""
    gs, left = groups(configs)
    if not gs:
        return []
    dim, key = facet(configs)
    methods = "; ".join(sorted({c.energy_method for c in configs if c.energy_method}))

    def metric(name: str) -> Metric:
        return lambda c, bs: at(c, bs, name)

    figs = [
        pareto(gs, left, key, "pareto_energy", "ept_total_j_per_token", "J per in+out token",
               "Accuracy vs energy per token"),
        pareto(gs, left, key, "pareto_latency", "tpot_ms", "TPOT (ms)", "Accuracy vs latency"),
        overview(gs[0], dim, key),
        _bars(gs, left, key, metric("ttft_ms"), "TTFT (ms)", "Time to first token (mean)", "ttft", False),
        _bars(gs, left, key, metric("tpot_ms"), "TPOT (ms)", "Time per output token (mean)", "tpot", False),
        throughput(gs, left, key),
        _bars(gs, left, key, metric("ept_total_j_per_token"), "J per in+out token", "Energy per token (in + out tokens, EPT_total)",
              "energy_per_token", False, note=f"Energy: {methods}." if methods else ""),
        _bars(gs, left, key, lambda c, bs: accuracy(c), "mean primary metric",
              "Accuracy (mean over tasks of acc_norm / acc / exact match)", "accuracy", True),
        _bars(gs, left, key, lambda c, bs: memory(c), "MiB", "Peak RSS (measured phase; largest over runs)",
              "memory", False, bars=" No error bars: the largest peak over the runs."),
    ]  # fmt: skip
    return [f for f in figs if f is not None]
