"""Static report figures for papers: each :class:`~e3bench.report.figures.Figure` drawn with
matplotlib (Agg) and written as ``<name>.png`` and ``<name>.pdf`` (vector), atomically with the
user's umask mode.

Labels are plain text: configuration names come from model names and paths, which may hold
``$``, ``_`` or ``\\``; math-text parsing and TeX are off while a figure is drawn (a model named
``$\\x{$`` used to crash the report), and a legend entry starting with ``_`` (which matplotlib
would hide) is kept. Bars are horizontal, so configuration labels sit one per row and never
overlap; Pareto points carry numbers placed where they overlap no other number or point, and a
numbered legend beside the axes names each one.

:func:`drawing` draws a report's figures in worker processes (forked, up to one per usable core)
while the caller writes its tables, when the figures are large enough for it to pay
(:data:`PARALLEL_MARKS`): at 10,000 records the figures were most of the report's time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from e3bench.core.errors import require
from e3bench.core.fsutil import atomic_write_bytes
from e3bench.report.figures import COLOURS, FRONT, Figure, Mark, Panel

#: Resolution of the PNGs; figures are laid out at it too, so the text measured for the layout is
#: measured once (matplotlib caches text extents per resolution) and the PNG reuses it.
DPI = 110
#: matplotlib settings for every report figure: text is never parsed as math or TeX.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _plt():
    mpl = require("matplotlib", "report", "Report plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_text(fn):
    """Run a plotting function with :data:`PLAIN_TEXT` (only for its duration)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        plt = _plt()
        with plt.rc_context(PLAIN_TEXT):
            return fn(*args, **kwargs)

    return wrapper


def _text(s: str) -> str:
    """``s`` as a legend entry matplotlib shows (it hides labels that start with ``_``)."""
    return "\u200b" + s if s.startswith("_") else s


def _colours(marks: Sequence[Mark]) -> dict[str, str]:
    series = list(dict.fromkeys(m.series for m in marks))
    return {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(series)}


def _err(ivs) -> list[list[float]]:
    """matplotlib's asymmetric error bars; NaN (none drawn) where the interval is unknown."""
    return [[iv.estimate - iv.low if iv.known else math.nan for iv in ivs],
            [iv.high - iv.estimate if iv.known else math.nan for iv in ivs]]  # fmt: skip


def _bar(ax, p: Panel, colours, legend: bool = True) -> None:
    ys = range(len(p.marks))
    ax.barh(ys, [m.y.estimate for m in p.marks], xerr=_err([m.y for m in p.marks]), color=[colours[m.series] for m in p.marks],
            error_kw={"ecolor": "#333", "capsize": 3, "lw": 1})  # fmt: skip
    ax.set_yticks(list(ys), [str(m.cat) for m in p.marks], fontsize=8)
    if all(m.y.estimate >= 0 for m in p.marks):
        ax.set_xlim(left=0)  # a CI reaching below zero (2 runs: t = 12.7) runs to the axis
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    if len(colours) > 1 and legend:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=_text(s)) for s, c in colours.items()], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1), borderaxespad=0)  # fmt: skip


def _line(ax, p: Panel, colours) -> None:
    for s, c in colours.items():
        ms = [m for m in p.marks if m.series == s]
        ms = ms if p.in_order else sorted(ms, key=lambda m: m.cat)
        ax.errorbar([m.cat for m in ms], [m.y.estimate for m in ms], yerr=_err([m.y for m in ms]), marker="o",
                    color=c, capsize=3, label=_text(s))  # fmt: skip
        if p.in_order:  # each point names its level (load order is not x order)
            for m in ms:
                ax.annotate(_text(str(m.label)), (m.cat, m.y.estimate), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=c)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def _log_x(ax, p: Panel) -> None:
    """A log x axis with plain-number tick labels (matplotlib's default labels are math text,
    which :data:`PLAIN_TEXT` shows raw); a line panel's ticks are its batch sizes."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log", base=2 if p.kind == "line" else 10)
    if p.kind == "line":
        ax.xaxis.set_major_locator(FixedLocator(sorted({float(m.cat) for m in p.marks})))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _box(ax, p: Panel, colours) -> None:
    cats = list(dict.fromkeys(m.cat for m in p.marks))
    data = [[m.y.estimate for m in p.marks if m.cat == cat] for cat in cats]
    b = ax.boxplot(data, patch_artist=True, showfliers=False)
    for patch, cat in zip(b["boxes"], cats, strict=True):
        patch.set_facecolor(colours.get(cat, COLOURS[0]))
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(cats) + 1), [str(c) for c in cats], rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _scatter(ax, p: Panel, colours) -> None:
    many = len(p.marks) > 200
    for s, c in colours.items():
        ms = [m for m in p.marks if m.series == s]
        ax.scatter([m.x.estimate for m in ms], [m.y.estimate for m in ms], s=6 if many else 30, color=c,
                   alpha=0.5 if many else 0.9, label=_text(s), zorder=2, linewidths=0)  # fmt: skip
        bars = [m for m in ms if m.x.known or m.y.known]
        if bars:
            ax.errorbar([m.x.estimate for m in bars], [m.y.estimate for m in bars], xerr=_err([m.x for m in bars]),
                        yerr=_err([m.y for m in bars]), fmt="none", ecolor=c, alpha=0.7, lw=1, capsize=2, zorder=2)  # fmt: skip
    front = sorted((m for m in p.marks if m.front), key=lambda m: m.x.estimate)
    ax.scatter([m.x.estimate for m in front], [m.y.estimate for m in front], s=70, facecolors="none",
               edgecolors=FRONT, linewidths=1.5, zorder=3)  # fmt: skip
    ax.plot([m.x.estimate for m in front], [m.y.estimate for m in front], color=FRONT, lw=1.2, ls="--",
            label="Pareto front", zorder=1)  # fmt: skip
    ax.grid(alpha=0.3)


#: Offsets (points) tried in turn for a number beside its point, each at growing distance.
_OFFSETS = ((5, 4), (5, -11), (-12, 4), (-12, -11), (8, -3), (-15, -3), (-3, 8), (-3, -15))


def place_numbers(fig, ax, marks: Sequence[Mark]) -> list:
    """Write each numbered mark's number beside its point, inside the axes, where its box
    overlaps no other number and no point (up to 5 rings of :data:`_OFFSETS`; a leader line
    from ring 2; no room: the number stays in the legend only); returns the text artists. Call
    after the layout is final.

    Each number is measured once; its box at every candidate offset is that box moved (no
    artist is drawn to try a place), and the points it might cover are tested all at once: on
    a scatter of thousands of points this took seconds per figure."""
    import numpy as np
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    pts = np.asarray(ax.transData.transform([(m.x.estimate, m.y.estimate) for m in marks])).reshape(-1, 2)
    box = ax.get_window_extent(renderer)
    px = fig.dpi / 72  # pixels per point: offsets are in points
    style = {"fontsize": 8, "fontweight": "bold", "zorder": 4}
    taken: list = []
    out = []
    for m in marks:
        if m.number is None:
            continue
        xy = (m.x.estimate, m.y.estimate)
        probe = ax.annotate(str(m.number), xy, xytext=(0, 0), textcoords="offset points", **style)
        b0 = probe.get_window_extent(renderer)
        probe.remove()
        place = None
        for ring in range(1, 6):
            for dx, dy in _OFFSETS:
                ox, oy = dx * ring * px, dy * ring * px
                bb = Bbox.from_extents(b0.x0 + ox, b0.y0 + oy, b0.x1 + ox, b0.y1 + oy).expanded(1.1, 1.1)
                near = bb.padded(3)  # a marker's radius
                hits_point = bool(np.any((pts[:, 0] >= near.x0) & (pts[:, 0] <= near.x1)
                                         & (pts[:, 1] >= near.y0) & (pts[:, 1] <= near.y1)))  # fmt: skip
                inside = box.contains(bb.x0, bb.y0) and box.contains(bb.x1, bb.y1)
                if inside and not hits_point and not any(bb.overlaps(o) for o in taken):
                    place = (dx * ring, dy * ring, ring)
                    taken.append(bb)
                    break
            if place is not None:
                break
        if place is None:
            continue
        out.append(ax.annotate(str(m.number), xy, xytext=place[:2], textcoords="offset points",
                               color=FRONT if m.front else "#333", **style,
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#777"} if place[2] > 1 else None))  # fmt: skip
    return out


def _number_legend(ax, marks: Sequence[Mark], handles_first: bool) -> None:
    from matplotlib.lines import Line2D

    numbered = sorted((m for m in marks if m.number is not None), key=lambda m: m.number)
    handles, labels = ax.get_legend_handles_labels()
    extra = [Line2D([], [], ls="none") for _ in numbered]
    leg = ax.legend(handles + extra, labels + [f"{m.number}  {m.label}" for m in numbered], fontsize=7,
                    loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, handlelength=1 if handles_first else 0)  # fmt: skip
    leg.set_in_layout(True)


@_plain_text
def draw(spec: Figure):
    """The matplotlib figure of ``spec`` (not yet saved; numbers placed)."""
    plt = _plt()
    n = len(spec.panels)
    kind = spec.panels[0].kind
    # bar panels one above the other, each with its own labels; so are several Pareto scatters,
    # each with its numbered legend beside it (side by side, the legends left no room for the points)
    stacked = kind == "bar" or (kind == "scatter" and n > 1)
    heights = [0.7 + 0.24 * len(p.marks) for p in spec.panels] if kind == "bar" else [3.6] * (n if stacked else 1)
    labels = max((len(str(m.cat)) for p in spec.panels for m in p.marks), default=0) if kind == "bar" else 0
    legend = max((len(m.label) + 4 for p in spec.panels for m in p.marks if m.number), default=0)
    per = {"scatter": 5.5, "line": 7.0, "box": 4.3, "bar": 5.5}[kind]
    width = min(18.0, 1.0 + 0.062 * labels + 0.055 * legend + per * (1 if stacked else n))
    note = _wrap(spec.note, int(width * 15)) if spec.note else ""
    foot = 0.2 + 0.14 * len(note.splitlines()) if note else 0.0
    height = sum(heights) + 0.6 + foot
    shape = (n, 1) if stacked else (1, n)
    fig, axes = plt.subplots(*shape, figsize=(width, height), squeeze=False, dpi=DPI,
                             gridspec_kw={"height_ratios": heights} if stacked else None)  # fmt: skip
    axes = list(axes[:, 0] if stacked else axes[0])
    for i, (ax, p) in enumerate(zip(axes, spec.panels, strict=True)):
        colours = _colours(p.marks)
        if p.kind == "bar":
            _bar(ax, p, colours, legend=i == 0)
        else:
            {"line": _line, "box": _box, "scatter": _scatter}[p.kind](ax, p, colours)
        if p.log_x:
            _log_x(ax, p)
        if p.y_from_zero:
            ax.set_ylim(bottom=0)
        title = p.title if n > 1 else ", ".join(t for t in (spec.title, p.title) if t)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(p.x_label)
        ax.set_ylabel(p.y_label)
        if p.kind == "scatter":
            _number_legend(ax, p.marks, True)
    if note:
        fig.text(0.01, 0.05 / height, note, fontsize=7, color="#555", va="bottom")
    if n > 1:
        fig.suptitle(spec.title, fontsize=11)
    top = 1 - 0.35 / height if n > 1 else 1  # room for the figure's title above the panels' own
    fig.tight_layout(rect=(0, foot / height, 1, top))
    # tight_layout leaves a placeholder layout engine, and with any engine set every savefig
    # draws the whole figure once more before drawing it for the file (a third of its time)
    fig.set_layout_engine(None)
    for ax, p in zip(axes, spec.panels, strict=True):
        if p.kind == "scatter":
            place_numbers(fig, ax, p.marks)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def save(spec: Figure, out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>.png`` (:data:`DPI`) and ``.pdf``; returns the PNG's path."""
    plt = _plt()
    fig = draw(spec)
    try:
        with plt.rc_context(PLAIN_TEXT):
            for ext in ("png", "pdf"):
                buf = io.BytesIO()
                fig.savefig(buf, format=ext, dpi=DPI)  # the layout is final: no "tight" re-draw
                atomic_write_bytes(out_dir / f"{spec.name}.{ext}", buf.getvalue())
    finally:
        plt.close(fig)
    return out_dir / f"{spec.name}.png"



#: Marks over all figures from which :func:`drawing` uses worker processes (below, starting
#: them costs more than it saves).
PARALLEL_MARKS = 1000
#: Record files from which :func:`painters` forks its workers before the records are read.
PARALLEL_RECORDS = 500


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workers(specs: Sequence[Figure]) -> int:
    """Worker processes for ``specs``: one per usable core, at most one per figure; 1 (draw here)
    for small figures or where processes cannot be forked (forking shares the loaded records)."""
    if sum(len(p.marks) for f in specs for p in f.panels) < PARALLEL_MARKS:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(_cores(), len(specs)))


def _ready() -> None:
    """A worker's first task: import matplotlib (Agg), so figures start drawing at once."""
    _plt()


@contextlib.contextmanager
def painters(record_files: int) -> Iterator[Any]:
    """Worker processes for :func:`drawing`, forked NOW (yields the pool, or None when
    ``record_files`` is below :data:`PARALLEL_RECORDS`, fork is unavailable, one core is usable or
    matplotlib is not installed). Enter it before reading thousands of records: forked while this
    process is small, the workers share no record pages (a worker forked later copied the pages it
    touched: 0.7 million page faults and 3.6 s of system time at 10,000 records), and each imports
    matplotlib while this process reads the records."""
    import importlib.util

    cores = _cores()
    if (record_files < PARALLEL_RECORDS or cores < 2 or "fork" not in multiprocessing.get_all_start_methods()
            or importlib.util.find_spec("matplotlib") is None):  # fmt: skip
        yield None
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
        for _ in range(cores):  # a pool forks its workers as tasks arrive: one each, now
            pool.submit(_ready)
        yield pool


@contextlib.contextmanager
def drawing(specs: Sequence[Figure], out_dir: Path, pool: Any = None) -> Iterator[Callable[[], dict[str, Path]]]:
    """Start saving every figure of ``specs`` (:func:`save`) and yield a function that waits for
    them and returns ``{name: png path}``: in ``pool``'s workers (:func:`painters`) when given, or
    in worker processes forked now when the figures are large (:func:`_workers`), the caller's own
    work overlapping them; else on the call.
    :class:`~e3bench.core.errors.MissingExtra` (no matplotlib) is raised before anything starts."""
    if pool is not None and specs:
        with _submitted(pool, specs, out_dir) as wait:
            yield wait
        return
    workers = _workers(specs)
    if specs:
        _plt()  # import (or refuse) here once, before any fork
    if workers <= 1:
        yield lambda: {f.name: save(f, out_dir) for f in specs}
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as new, \
            _submitted(new, specs, out_dir) as wait:  # fmt: skip
        yield wait


@contextlib.contextmanager
def _submitted(pool: Any, specs: Sequence[Figure], out_dir: Path) -> Iterator[Callable[[], dict[str, Path]]]:
    """Every figure of ``specs`` submitted to ``pool``, the biggest first (so the last figure to
    start is a short one); yields the function that waits for them. Figures not started are
    cancelled when the caller fails."""
    order = sorted(specs, key=lambda f: -sum(len(p.marks) for p in f.panels))
    futures = {f.name: pool.submit(save, f, out_dir) for f in order}
    try:
        yield lambda: {f.name: futures[f.name].result() for f in specs}
    except BaseException:
        for fut in futures.values():
            fut.cancel()
        raise
