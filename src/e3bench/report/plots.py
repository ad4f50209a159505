"""Report figures (matplotlib, Agg backend, PNG). Each function takes config summaries and a
path, and returns the path or None when there is nothing to plot.

Labels are plain text: configuration names come from model names and paths, which may hold
``$``, ``_`` or ``\\``; math-text parsing and TeX are off while a figure is drawn (a model named
``$\\x{$`` used to crash the report). Figures that show ``*_at_min_batch`` figures say the batch
size in their titles (:func:`e3bench.report.compare.batch_label`), and name each point's batch
when configurations were measured at different smallest batches. Files are written atomically
with the user's umask mode.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

from e3bench.core.errors import require
from e3bench.core.fsutil import atomic_write_bytes
from e3bench.report.compare import ConfigSummary, batch_label, pareto_front

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


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _labels(configs: Sequence[ConfigSummary]) -> list[str]:
    """Configuration labels, each with its batch size when the smallest batches differ."""
    mixed = len({c.min_batch_size for c in configs}) > 1
    return [f"{c.label} (bs{c.min_batch_size})" if mixed else c.label for c in configs]


def _bar(configs, values, ylabel, title, path: Path, note: str = "") -> Path | None:
    pairs = [(label, v) for label, v in zip(_labels(configs), values, strict=True) if v is not None]
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(pairs) + 2), 3.6))
    labels, vals = zip(*pairs, strict=True)
    ax.bar(range(len(vals)), vals, color="#4c72b0")
    ax.set_xticks(range(len(vals)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


@_plain_text
def latency(configs: Sequence[ConfigSummary], path: Path) -> Path | None:
    """TTFT and TPOT bars (ms, mean, at each configuration's smallest batch, named in the title)
    as a PNG at ``path``; None without TTFT data."""
    if not any(c.ttft_ms_at_min_batch for c in configs):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.4 * len(configs) + 3), 3.6))
    for ax, attr, name in ((axes[0], "ttft_ms_at_min_batch", "TTFT (ms)"),
                           (axes[1], "tpot_ms_at_min_batch", "TPOT (ms)")):  # fmt: skip
        vals = [getattr(c, attr) or 0 for c in configs]
        ax.bar(range(len(vals)), vals, color="#dd8452")
        ax.set_xticks(range(len(vals)), _labels(configs), rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{name}, {batch_label(configs)} (mean)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


@_plain_text
def throughput_vs_batch(configs: Sequence[ConfigSummary], path: Path) -> Path | None:
    """Output tokens/s against batch size (log2 axis), one line per configuration; None without data."""
    if not any(c.throughput_by_batch for c in configs):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for c in configs:
        if c.throughput_by_batch:
            bs = sorted(c.throughput_by_batch)
            ax.plot(bs, [c.throughput_by_batch[b] for b in bs], marker="o", label=c.label)
    ax.set_xlabel("batch size")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput vs batch size", fontsize=10)
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


@_plain_text
def memory(configs: Sequence[ConfigSummary], path: Path) -> Path | None:
    """Peak RSS bars (MiB); None when no configuration has it."""
    return _bar(configs, [c.peak_rss_mib for c in configs], "MiB", "Peak RSS (measured phase)", path)


@_plain_text
def energy_per_token(configs: Sequence[ConfigSummary], path: Path) -> Path | None:
    """EPT_total bars (J/token, at each configuration's smallest batch, named in the title), the
    energy methods below the title; None without energy."""
    methods = sorted({c.energy_method for c in configs if c.energy_method})
    return _bar(configs, [c.ept_total_j_per_token_at_min_batch for c in configs], "J / token",
                f"Energy per token (EPT_total, {batch_label(configs)})", path, note="; ".join(methods))  # fmt: skip


@_plain_text
def accuracy(configs: Sequence[ConfigSummary], path: Path) -> Path | None:
    """Mean primary metric bars; None without task scores."""
    return _bar(configs, [c.accuracy for c in configs], "mean primary metric",
                "Accuracy (mean over tasks of acc_norm / acc / exact match)", path)  # fmt: skip


@_plain_text
def pareto(configs: Sequence[ConfigSummary], path: Path, x_attr: str, x_label: str, title: str) -> Path | None:
    """Quality (y, higher is better) against a cost (x, lower is better, attribute ``x_attr``);
    the front is drawn. ``x_label`` gets the batch size of ``*_at_min_batch`` attributes
    appended.

    Without task scores, quality falls back to decode tokens/s (at the smallest batch) so the
    plot still ranks speed against energy; the title says so.
    """
    use_acc = any(c.accuracy is not None for c in configs)
    pts = []
    for c, label in zip(configs, _labels(configs), strict=True):
        y = c.accuracy if use_acc else c.decode_tokens_per_s_at_min_batch
        x = getattr(c, x_attr)
        if x is not None and y is not None:
            pts.append((label, x, y))
    if not pts:
        return None
    if x_attr.endswith("_at_min_batch"):
        x_label = f"{x_label}, {batch_label(configs)}"
    front = set(pareto_front(pts))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, x, y in pts:
        on = label in front
        ax.scatter([x], [y], s=60 if on else 30, color="#c44e52" if on else "#8c8c8c", zorder=3)
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    fr = sorted((x, y) for label, x, y in pts if label in front)
    ax.plot([p[0] for p in fr], [p[1] for p in fr], color="#c44e52", lw=1.2, ls="--", label="Pareto front")
    ax.set_xlabel(x_label)
    ax.set_ylabel("accuracy (mean primary metric)" if use_acc
                  else f"decode tokens/s, {batch_label(configs)} (no task scores)")  # fmt: skip
    if not use_acc:
        title = title.replace("Accuracy", "Decode speed") + " (no task scores in these runs)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
